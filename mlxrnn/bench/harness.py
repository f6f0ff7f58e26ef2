"""Speed, measured side by side: the library half of ``mlxrnn bench`` and ``benchmarks/``.

Three kinds of work on a language-model-shaped network (embedding → recurrent stack → linear →
softmax cross-entropy), each timed per implementation, cell and size:

* ``train``: one training step: forward, backpropagation through time, clipping by global
  norm 1.0, Adam (lr 1e-3). Tokens/s = batch × steps / seconds per step.
* ``forward``: the logits of one batch, no gradients. Same token count.
* ``sample``: batch 1, one token at a time, each drawn from softmax(logits) and fed back with
  the carried state. Tokens/s = tokens drawn / seconds.

Implementations: ``numpy`` and ``mlx`` are mlxrnn's own backends (MLX with the hand-written
BPTT); ``numpy`` runs the point-wise kernels ``auto`` picks (numba's when the ``fast`` extra is
installed), ``numpy-nojit`` forces the plain NumPy ones (what an install without numba runs);
``mlx-autodiff`` takes MLX training gradients from ``mx.value_and_grad`` of the forward
instead, and the ``-compiled`` variants wrap the gradient computation in ``mx.compile``. Peers,
used only when installed: ``torch`` (``torch.nn.LSTM/GRU/RNN``, ``clip_grad_norm_``,
``torch.optim.Adam``, default thread count) and ``mlx.nn`` (``mlx.nn.LSTM/GRU/RNN`` with
``nn.value_and_grad``; ``mlx.nn-compiled`` with ``mx.compile``). GRUs use the ``reset_after``
form, which is what PyTorch and ``mlx.nn`` compute, so every implementation does the same work.

Method: each (implementation, cell, size) runs in a fresh Python process, so thread pools,
allocators and imports do not leak between measurements and the process's peak resident set
size (``ru_maxrss``) can be read. That peak includes the framework's own import (a fact of
using it) — ``setup_rss_mb`` reports the resident size after imports and model construction so
the working memory of the run (the difference) can be compared too. Tasks run in the order
sample → forward → train, so each task's ``peak_rss_mb`` is the peak up to and including it.
Every measurement is synchronised (``mx.eval`` / ``.item()`` on MLX, ``.item()`` on torch);
``warmup`` untimed calls (compilation included) precede ``repeats`` timed ones; we report the
median and the min/max of the repeats.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, MLXRNNError
from mlxrnn.nn.cells import CELLS as CELL_REGISTRY
from mlxrnn.nn.cells import make_cell

#: every registered cell, in registry order (the default cell first)
CELLS = tuple(CELL_REGISTRY)
TASKS = ("train", "forward", "sample")
#: mlxrnn's own implementations (``--backends``) and the peers ``--peers`` adds.
OWN_IMPLS = ("numpy", "numpy-nojit", "mlx", "mlx-compiled", "mlx-autodiff", "mlx-autodiff-compiled")
PEER_IMPLS = ("torch", "mlx.nn", "mlx.nn-compiled")
IMPLS = OWN_IMPLS + PEER_IMPLS
#: the cell options that make mlxrnn compute what the peers compute
CELL_OPTIONS: dict[str, dict] = {"gru": {"variant": "reset_after"}}


def num_gates(cell: str) -> int:
    """G of a benchmarked cell (a 1×1 cell built with the bench's options knows it)."""
    return make_cell(cell, 1, 1, **CELL_OPTIONS.get(cell, {})).num_gates


class BenchmarkError(MLXRNNError):
    """A benchmark worker failed (the message carries its last error line)."""


@dataclass(frozen=True)
class Shape:
    """A language-model shape: batch B, steps T, embedding E, hidden H, vocabulary V, layers L."""

    batch: int = 32
    steps: int = 64
    embed: int = 128
    hidden: int = 256
    vocab: int = 65
    layers: int = 1

    def describe(self) -> str:
        return f"B{self.batch} T{self.steps} E{self.embed} H{self.hidden} V{self.vocab} L{self.layers}"


SIZES = {
    "ref": Shape(),  # the reference shape of the README and the targets
    "large": Shape(hidden=512, layers=2),
    "tiny": Shape(batch=4, steps=8, embed=8, hidden=16, vocab=11, layers=1),  # for tests
}
_SHAPE_KEYS = {"B": "batch", "T": "steps", "E": "embed", "H": "hidden", "V": "vocab", "L": "layers"}


def parse_size(text: str) -> tuple[str, Shape]:
    """A size name (ref, large, tiny) or ``KEY=N,...`` with keys B T E H V L overriding ``ref``."""
    text = text.strip()
    if text in SIZES:
        return text, SIZES[text]
    if "=" not in text:
        raise ConfigError(f"unknown size {text!r}: use one of {', '.join(SIZES)} or e.g. 'H=512,L=2'")
    overrides = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().upper()
        if key not in _SHAPE_KEYS or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"bad size item {item!r}: expected KEY=positive integer with KEY in B T E H V L")
        overrides[_SHAPE_KEYS[key]] = int(value)
    return text.replace(" ", ""), replace(SIZES["ref"], **overrides)


# --- analytic work --------------------------------------------------------------------------


def gemm_flops(cell: str, shape: Shape, task: str) -> float:
    """Matrix-multiply FLOPs (2·m·k·n each) of one ``task`` call, the standard algorithm.

    Forward, per layer with input width D and G gate blocks: input projection 2·N·D·GH and
    recurrence 2·N·H·GH over N = B·T positions; the head 2·N·H·V. Training adds, per layer,
    dW_x, dX (also for layer 0: the embedding's gradient needs it), dW_h and the dh recurrence,
    each as large as its forward product, and the head's dW and dX. Element-wise work, the
    loss and the optimizer are not counted. Sampling is not counted (it is latency-bound).
    """
    if task == "sample":
        return 0.0
    n, hidden, gate_width = shape.batch * shape.steps, shape.hidden, num_gates(cell) * shape.hidden
    forward = backward = 2.0 * n * hidden * shape.vocab
    backward *= 2
    for layer in range(shape.layers):
        width = shape.embed if layer == 0 else hidden
        input_proj, recurrence = 2.0 * n * width * gate_width, 2.0 * n * hidden * gate_width
        forward += input_proj + recurrence
        backward += 2 * input_proj + 2 * recurrence
    return forward + (backward if task == "train" else 0.0)


def tokens_per_call(shape: Shape, task: str, sample_tokens: int) -> int:
    return sample_tokens if task == "sample" else shape.batch * shape.steps


# --- workloads (built inside the worker process) ----------------------------------------------


def _lm_batch(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    size = (shape.batch, shape.steps)
    return {"inputs": rng.integers(0, shape.vocab, size), "targets": rng.integers(0, shape.vocab, size)}


class Workload:
    """One implementation set up for one cell and shape. Every method returns only when the
    work is done (synchronised)."""

    def train_step(self) -> None:
        raise NotImplementedError

    def forward(self) -> None:
        raise NotImplementedError

    def sample(self, num_tokens: int) -> None:
        raise NotImplementedError


class _GradientFnModel:
    """The Trainer's model protocol with gradients from ``grad_fn(params) -> (loss, grads)``.

    Lets the MLX autodiff and compiled variants reuse the library's clipping and Adam exactly.
    """

    def __init__(self, model: Any, grad_fn: Callable):
        self.model, self.xp, self.grad_fn = model, model.xp, grad_fn
        self._params = model.parameters()

    def parameters(self) -> dict:
        return dict(self._params)

    def load_parameters(self, flat: dict, strict: bool = True) -> None:
        self._params = dict(flat)
        self.model.load_parameters(self._params)  # tracing may have left placeholders in the model

    def loss_and_grads(self, batch: Any, training: bool = True, rng: Any = None) -> tuple[Any, dict, dict]:
        loss, grads = self.grad_fn(self._params)
        return loss, grads, {}


class MlxrnnWorkload(Workload):
    """mlxrnn's SequenceModel + Trainer (Adam, clip_norm=1.0) on ``backend``.

    ``gradients``: "bptt" (the hand-written backward) or "autodiff" (``mx.value_and_grad``);
    ``compiled`` wraps the gradient function in ``mx.compile``. A compiled function captures
    the (fixed) benchmark batch as a constant: fine for timing, but the library's input
    validation reads ids and targets as NumPy, so the Trainer cannot compile across batches.
    """

    def __init__(self, backend: Any, cell: str, shape: Shape, seed: int = 0,
                 gradients: str = "bptt", compiled: bool = False):
        from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
        from mlxrnn.nn.optim import Adam
        from mlxrnn.training.trainer import Trainer

        config = SequenceModelConfig(
            input_kind="embedding", input_size=shape.vocab, embed_size=shape.embed, cell=cell,
            hidden_size=shape.hidden, num_layers=shape.layers, output_size=shape.vocab,
            cell_options=CELL_OPTIONS.get(cell, {}), seed=seed,
        )
        self.model = SequenceModel(config, backend=backend)
        self.xp = self.model.xp
        self.batch = _lm_batch(shape, seed)
        trainable: Any = self.model
        if gradients != "bptt" or compiled:
            trainable = _GradientFnModel(self.model, self._grad_fn(gradients, compiled))
        self.trainer = Trainer(trainable, Adam(lr=1e-3), clip_norm=1.0)
        self.rng = np.random.default_rng(seed)

    def _grad_fn(self, gradients: str, compiled: bool) -> Callable:
        import mlx.core as mx

        model, batch = self.model, self.batch

        def loss_of(params):
            model.load_parameters(params)
            return model.loss(batch)[0]

        def handwritten(params):
            model.load_parameters(params)
            loss, grads, _ = model.loss_and_grads(batch)
            return loss, grads

        fn = mx.value_and_grad(loss_of) if gradients == "autodiff" else handwritten
        return mx.compile(fn) if compiled else fn

    def train_step(self) -> None:
        self.trainer.step(self.batch)  # ends with xp.eval and .item(): synchronised

    def forward(self) -> None:
        logits, _, _ = self.model.forward(self.batch["inputs"])
        self.xp.eval(logits)

    def sample(self, num_tokens: int) -> None:
        sample_tokens(self.model, num_tokens, self.rng)


def sample_tokens(model: Any, num_tokens: int, rng: np.random.Generator, token: int = 0) -> list[int]:
    """Draw ``num_tokens`` from an embedding-input SequenceModel at batch 1, feeding each back.

    The per-token path is :meth:`mlxrnn.nn.layers.Recurrent.step` (no caches): layer 0's input
    projection of the whole embedding table is computed once, so a token's step starts from a
    row of it, and only the recurrence, the head and the draw remain per token.
    """
    xp = model.xp
    table = model.rnn.project_inputs(model.embedding.params["weight"])  # (V, G·H)
    head_w, head_b = model.head.params["W"], model.head.params["b"]
    if xp.name == "mlx":
        import mlx.core as mx

        draw = lambda h, i: int(mx.random.categorical(mx.matmul(h, head_w) + head_b).item())  # noqa: E731
    else:
        # Gumbel-max: argmax(logits + G) with G ~ Gumbel(0, 1) is an exact draw from softmax(logits).
        # All the noise is drawn up front, with the head's bias added to it: a token costs one
        # add and one argmax after the head's matmul.
        noise_plus_bias = rng.gumbel(size=(num_tokens, int(head_b.shape[0]))).astype(head_b.dtype) + head_b
        draw = lambda h, i: int(np.argmax(np.matmul(h, head_w)[0] + noise_plus_bias[i]))  # noqa: E731
    tokens, state = [], None
    for i in range(num_tokens):
        h, state = model.rnn.step(x_proj=table[token : token + 1], state=state)
        token = draw(h, i)
        tokens.append(token)
    return tokens


class TorchWorkload(Workload):
    """The same network in PyTorch (CPU, default threads): nn.Embedding → nn.LSTM/GRU/RNN →
    nn.Linear, cross_entropy, clip_grad_norm_(1.0), Adam(lr=1e-3)."""

    def __init__(self, cell: str, shape: Shape, seed: int = 0):
        import torch

        self.torch, self.shape = torch, shape
        torch.manual_seed(seed)
        layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.embedding = torch.nn.Embedding(shape.vocab, shape.embed)
        self.rnn = layer(shape.embed, shape.hidden, num_layers=shape.layers, batch_first=True)
        self.head = torch.nn.Linear(shape.hidden, shape.vocab)
        self.params = [p for m in (self.embedding, self.rnn, self.head) for p in m.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        batch = _lm_batch(shape, seed)
        self.inputs, self.targets = (torch.from_numpy(batch[k]).long() for k in ("inputs", "targets"))
        self.generator = torch.Generator().manual_seed(seed)

    def train_step(self) -> None:
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        hidden, _ = self.rnn(self.embedding(self.inputs))
        logits = self.head(hidden)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, self.shape.vocab), self.targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        loss.item()

    def forward(self) -> None:
        with self.torch.inference_mode():
            self.head(self.rnn(self.embedding(self.inputs))[0]).sum().item()

    def sample(self, num_tokens: int) -> None:
        torch = self.torch
        token, state = torch.zeros((1, 1), dtype=torch.long), None
        with torch.inference_mode():
            for _ in range(num_tokens):
                hidden, state = self.rnn(self.embedding(token), state)
                probs = torch.softmax(self.head(hidden[:, -1]), dim=-1)
                token = torch.multinomial(probs, 1, generator=self.generator)
                token.item()


class MLXNNWorkload(Workload):
    """The same network with MLX's own layers: nn.Embedding → nn.LSTM/GRU/RNN (stacked) →
    nn.Linear, nn.losses.cross_entropy, optimizers.clip_grad_norm(1.0), optimizers.Adam(1e-3),
    gradients from ``nn.value_and_grad``; ``compiled`` compiles the whole step (MLX's recipe)."""

    def __init__(self, cell: str, shape: Shape, seed: int = 0, compiled: bool = False):
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim

        self.mx = mx
        mx.random.seed(seed)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.cell = cell

        class LM(nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = nn.Embedding(shape.vocab, shape.embed)
                self.layers = [layer(shape.embed if i == 0 else shape.hidden, shape.hidden)
                               for i in range(shape.layers)]
                self.head = nn.Linear(shape.hidden, shape.vocab)

            def __call__(self, ids, states=None):
                x, new_states = self.embedding(ids), []
                for i, rnn in enumerate(self.layers):
                    args = () if states is None else states[i]
                    out = rnn(x, *args)
                    if cell == "lstm":  # (all hidden, all cell) states
                        x = out[0]
                        new_states.append((out[0][:, -1], out[1][:, -1]))
                    else:
                        x = out
                        new_states.append((out[:, -1],))
                return self.head(x), new_states

        self.model = LM()
        self.optimizer = optim.Adam(learning_rate=1e-3)
        batch = _lm_batch(shape, seed)
        self.inputs, self.targets = mx.array(batch["inputs"]), mx.array(batch["targets"])

        def loss_fn(model, ids, targets):
            return nn.losses.cross_entropy(model(ids)[0], targets, reduction="mean")

        loss_and_grad = nn.value_and_grad(self.model, loss_fn)

        def step(ids, targets):
            loss, grads = loss_and_grad(self.model, ids, targets)
            grads, _ = optim.clip_grad_norm(grads, 1.0)
            self.optimizer.update(self.model, grads)
            return loss

        if compiled:
            self.optimizer.init(self.model.trainable_parameters())  # a fixed state tree: no recompiles
            state = [self.model.state, self.optimizer.state]
            step = mx.compile(step, inputs=state, outputs=state)
        self._step = step

    def train_step(self) -> None:
        loss = self._step(self.inputs, self.targets)
        self.mx.eval(loss, self.model.parameters(), self.optimizer.state)
        loss.item()

    def forward(self) -> None:
        logits, _ = self.model(self.inputs)
        self.mx.eval(logits)

    def sample(self, num_tokens: int) -> None:
        mx = self.mx
        token, states = mx.zeros((1, 1), dtype=mx.int32), None
        for _ in range(num_tokens):
            logits, states = self.model(token, states)
            token = mx.random.categorical(logits[:, -1])[None]
            token.item()


def make_workload(impl: str, cell: str, shape: Shape, seed: int = 0) -> Workload:
    if impl == "numpy":
        return MlxrnnWorkload("numpy", cell, shape, seed)
    if impl == "numpy-nojit":
        from mlxrnn.backend.numpy_backend import NumpyBackend

        return MlxrnnWorkload(NumpyBackend("float32", kernels="numpy"), cell, shape, seed)
    if impl.startswith("mlx-"):
        return MlxrnnWorkload("mlx", cell, shape, seed, gradients="autodiff" if "autodiff" in impl else "bptt",
                              compiled=impl.endswith("compiled"))
    if impl == "mlx":
        return MlxrnnWorkload("mlx", cell, shape, seed)
    if impl == "torch":
        return TorchWorkload(cell, shape, seed)
    if impl in ("mlx.nn", "mlx.nn-compiled"):
        return MLXNNWorkload(cell, shape, seed, compiled=impl.endswith("compiled"))
    raise ConfigError(f"unknown implementation {impl!r}: choose from {', '.join(IMPLS)}")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def time_calls(fn: Callable[[], None], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (already synchronising) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def run_worker(spec: dict) -> dict:
    """Measure one (implementation, cell, shape) for the listed tasks; runs in its own process."""
    shape = Shape(**spec["shape"])
    started = time.perf_counter()
    workload = make_workload(spec["impl"], spec["cell"], shape, spec.get("seed", 0))
    result: dict[str, Any] = {"setup_seconds": time.perf_counter() - started, "setup_rss_mb": _peak_rss_mb(),
                              "tasks": {}}
    if spec["impl"] == "torch":
        import torch

        result["threads"] = torch.get_num_threads()
    calls = {"sample": lambda: workload.sample(spec["sample_tokens"]), "forward": workload.forward,
             "train": workload.train_step}
    for task in [t for t in TASKS[::-1] if t in spec["tasks"]]:  # sample, forward, train
        seconds = time_calls(calls[task], spec["warmup"], spec["repeats"])
        result["tasks"][task] = {"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}
    return result


def sgemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    """NumPy's float32 matmul rate on a size² product: the machine-peak yardstick (median, GFLOP/s)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    seconds = time_calls(lambda: np.matmul(a, b, out=out), warmup=2, repeats=repeats)
    return 2.0 * size**3 / statistics.median(seconds) / 1e9


# --- orchestration (the parent process) -------------------------------------------------------


def available(impl: str) -> tuple[bool, str]:
    """Whether ``impl`` can run here, and if not, why (checked without importing frameworks)."""
    if impl in ("numpy", "numpy-nojit"):
        return True, ""
    if impl == "torch":
        return (importlib.util.find_spec("torch") is not None), "PyTorch is not installed (pip install torch)"
    from mlxrnn.backend import mlx_installed

    return mlx_installed(), "MLX is not installed (pip install 'mlx[cpu]' on Linux, 'mlx' on Apple silicon)"


@dataclass
class BenchSettings:
    cells: Sequence[str] = CELLS
    sizes: Sequence[str] = ("ref", "large")
    impls: Sequence[str] = ("numpy",)
    tasks: Sequence[str] = TASKS
    repeats: int = 5
    warmup: int = 2
    sample_tokens: int = 300
    baseline: str | None = None  # default: torch when measured, else the first implementation
    seed: int = 0
    #: re-measure a configuration while other processes used more than this share of the CPUs
    #: during it (after waiting for a quiet moment), up to ``busy_retries`` times; None: never
    max_background: float | None = None
    busy_retries: int = 3
    extra_notes: list = field(default_factory=list)

    def validate(self) -> BenchSettings:
        for label, values, allowed in (("cell", self.cells, CELLS), ("task", self.tasks, TASKS),
                                       ("implementation", self.impls, IMPLS)):
            if not values:
                raise ConfigError(f"choose at least one {label} ({', '.join(allowed)})")
            for value in values:
                if value not in allowed:
                    raise ConfigError(f"unknown {label} {value!r}: choose from {', '.join(allowed)}")
        for size in self.sizes:
            parse_size(size)
        for label, value, minimum in (("repeats", self.repeats, 1), ("warmup", self.warmup, 0),
                                      ("sample tokens", self.sample_tokens, 1)):
            if not isinstance(value, int) or value < minimum:
                raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")
        if self.max_background is not None and not 0 < self.max_background <= 1:
            raise ConfigError(f"max background must be a CPU share in (0, 1], got {self.max_background!r}")
        if self.baseline is not None and self.baseline not in IMPLS:
            raise ConfigError(f"unknown baseline {self.baseline!r}: choose from {', '.join(IMPLS)}")
        return self


def machine_info() -> dict:
    """CPU, cores, OS, library versions and current load: what a result needs to be read."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
    for dist in ("mlxrnn", "numpy", "mlx", "torch", "numba"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        info["numpy_blas"] = None
    info["thread_env"] = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                     "MLXRNN_MALLOC", "MLXRNN_KERNELS") if k in os.environ}
    try:  # which point-wise kernels the ``numpy`` rows ran, and why
        from mlxrnn.backend.kernels import kernel_choice

        choice = kernel_choice("float32")
        info["numpy_kernels"] = f"{choice.name} ({choice.reason})"
    except MLXRNNError as error:
        info["numpy_kernels"] = f"unusable ({error})"
    info["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return info


def _cpu_model() -> str:
    try:
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def wait_until_quiet(max_busy: float, timeout: float = 600.0, window: float = 2.0) -> bool:
    """Wait until all processes together keep the CPUs at most ``max_busy`` busy over a
    ``window``; False on timeout (or where /proc/stat is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _busy_cpu_seconds()
        if before is None:
            return False
        time.sleep(window)
        if (_busy_cpu_seconds() - before) / (window * (os.cpu_count() or 1)) <= max_busy:
            return True
    return False


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_in_subprocess(spec: dict) -> dict:
    """Run one worker in a fresh process; also report the share of the machine other processes
    used meanwhile (``background_cpu``, Linux only), since on a busy machine timings mean little."""
    command = [sys.executable, "-m", "mlxrnn.bench.harness", json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    busy, own, wall = _busy_cpu_seconds(), _children_cpu_seconds(), time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {proc.returncode}"
        raise BenchmarkError(f"the {spec['impl']} {spec['cell']} benchmark worker failed: {reason}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    busy_after = _busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        others = (busy_after - busy) - (_children_cpu_seconds() - own)
        result["background_cpu"] = max(0.0, others) / ((time.perf_counter() - wall) * (os.cpu_count() or 1))
    return result


def _summary(seconds: list[float], tokens: int) -> dict:
    rates = sorted(tokens / s for s in seconds)
    return {"tokens_per_s": statistics.median(rates), "tokens_per_s_min": rates[0], "tokens_per_s_max": rates[-1]}


def run_benchmarks(settings: BenchSettings, progress: Callable[[str], None] | None = None,
                   isolate: bool = True) -> dict:
    """Measure every (implementation, cell, size) of ``settings``; returns the JSON-able report.

    ``progress`` receives one line per finished worker. ``isolate=False`` measures in this
    process instead of fresh ones (quicker, but peak memory then means nothing). Implementations that are not installed
    are skipped with a note. Rows carry ``ratio`` = tokens/s ÷ the baseline's on the same
    (cell, size, task), with ``ratio_min``/``ratio_max`` from the extremes of both spreads.
    """
    settings.validate()
    notes = list(settings.extra_notes)
    impls = []
    for impl in dict.fromkeys(settings.impls):
        ok, why = available(impl)
        if ok:
            impls.append(impl)
        else:
            notes.append(f"{impl} skipped: {why}")
    sizes = [parse_size(s) for s in dict.fromkeys(settings.sizes)]
    jobs = [(impl, cell, name, shape) for name, shape in sizes for cell in settings.cells for impl in impls]
    rows: list[dict] = []
    if progress is not None:
        progress(f"measuring {len(jobs)} configurations ({', '.join(impls)}) ...")
    yardstick_gflops = _run_in_subprocess_sgemm() if isolate else sgemm_gflops()
    for index, (impl, cell, size_name, shape) in enumerate(jobs, 1):
        spec = {"impl": impl, "cell": cell, "shape": asdict(shape), "tasks": list(settings.tasks),
                "repeats": settings.repeats, "warmup": settings.warmup, "sample_tokens": settings.sample_tokens,
                "seed": settings.seed}
        measured = _run_in_subprocess(spec) if isolate else run_worker(spec)
        for _ in range(settings.busy_retries if settings.max_background is not None else 0):
            if measured.get("background_cpu", 0.0) <= settings.max_background:
                break
            if progress is not None:
                progress(f"  {impl} {cell} {size_name}: other processes used {measured['background_cpu']:.0%} "
                         "of the CPUs meanwhile; measuring again when the machine is quiet")
            wait_until_quiet(settings.max_background)
            measured = _run_in_subprocess(spec)
        parts = []
        for task, data in measured["tasks"].items():
            tokens = tokens_per_call(shape, task, settings.sample_tokens)
            row = {"impl": impl, "cell": cell, "size": size_name, "shape": shape.describe(), "task": task,
                   **_summary(data["seconds"], tokens), "median_seconds": statistics.median(data["seconds"]),
                   "seconds": data["seconds"], "peak_rss_mb": data["peak_rss_mb"],
                   "setup_rss_mb": measured["setup_rss_mb"]}
            flops = gemm_flops(cell, shape, task)
            if flops:
                row["gemm_gflops"] = flops / row["median_seconds"] / 1e9
                row["fraction_of_sgemm_peak"] = row["gemm_gflops"] / yardstick_gflops
            for key in ("threads", "background_cpu"):
                if key in measured:
                    row[key] = measured[key]
            rows.append(row)
            parts.append(f"{task} {_format_rate(row['tokens_per_s'])}")
        if progress is not None:
            progress(f"[{index}/{len(jobs)}] {impl} {cell} {size_name}: " + ", ".join(parts) + " tok/s")
    baseline = settings.baseline or ("torch" if "torch" in impls else (impls[0] if impls else None))
    _add_ratios(rows, baseline)
    if baseline is not None and baseline not in impls:
        notes.append(f"baseline {baseline} was not measured: no ratios")
    return {"machine": machine_info(), "sgemm_1024_gflops": yardstick_gflops,
            "settings": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(settings).items()
                         if k != "extra_notes"} | {"baseline": baseline},
            "results": rows, "notes": notes}


def _run_in_subprocess_sgemm() -> float:
    command = [sys.executable, "-c", "from mlxrnn.bench.harness import sgemm_gflops; print(sgemm_gflops())"]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f"the sgemm yardstick failed: {proc.stderr.strip().splitlines()[-1:]}")
    return float(proc.stdout.strip())


def _add_ratios(rows: list[dict], baseline: str | None) -> None:
    reference = {(r["cell"], r["size"], r["task"]): r for r in rows if r["impl"] == baseline}
    for row in rows:
        base = reference.get((row["cell"], row["size"], row["task"]))
        if base is None:
            continue
        row["ratio"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["ratio_min"] = row["tokens_per_s_min"] / base["tokens_per_s_max"]
        row["ratio_max"] = row["tokens_per_s_max"] / base["tokens_per_s_min"]
        row["memory_ratio"] = row["peak_rss_mb"] / base["peak_rss_mb"]


# --- presentation -----------------------------------------------------------------------------


def _format_rate(rate: float) -> str:
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def format_table(report: dict, markdown: bool = False) -> str:
    """The report as a table: tokens/s (median, min–max) and the ratio to the baseline."""
    baseline = report["settings"].get("baseline")
    header = ["task", "cell", "size", "implementation", "tokens/s (median)", "min–max",
              f"× {baseline}" if baseline else "ratio", "ratio min–max", "peak RSS MB", "GEMM share of peak"]
    lines = []
    order = {task: i for i, task in enumerate(TASKS)}
    for row in sorted(report["results"], key=lambda r: (order[r["task"]], r["cell"], r["size"])):
        lines.append([
            row["task"], row["cell"], row["size"], row["impl"], _format_rate(row["tokens_per_s"]),
            f"{_format_rate(row['tokens_per_s_min'])}–{_format_rate(row['tokens_per_s_max'])}",
            f"{row['ratio']:.2f}" if "ratio" in row else "",
            f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f}" if "ratio" in row else "",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['fraction_of_sgemm_peak']:.0%}" if "fraction_of_sgemm_peak" in row else "",
        ])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(cells[i]) for cells in lines)) if lines else len(h) for i, h in enumerate(header)]

    def render(cells: list[str]) -> str:  # text columns left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(cells) for cells in lines])


def format_summary(report: dict) -> str:
    """Machine line, yardstick and notes, printed under the table."""
    m = report["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("mlxrnn", "numpy", "mlx", "torch", "numba") if m.get(k))
    lines = [f"{m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}; {versions}",
             f"NumPy float32 1024² matmul (the peak yardstick): {report['sgemm_1024_gflops']:.0f} GFLOP/s; "
             f"repeats {report['settings']['repeats']}, warm-up {report['settings']['warmup']}"]
    if m.get("numpy_kernels"):
        lines.append(f"point-wise kernels of the numpy rows: {m['numpy_kernels']}")
    background = [r["background_cpu"] for r in report["results"] if "background_cpu" in r]
    if background and max(background) > 0.1:
        lines.append(f"warning: other processes used up to {max(background):.0%} of the CPUs during the runs "
                     "(see background_cpu in --json): the timings are unreliable, run again on a quiet machine")
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def split_list(text: str | Iterable[str]) -> list[str]:
    """"a,b" or ["a,b", "c"] -> ["a", "b", "c"] (the CLI's comma-separated options)."""
    items = [text] if isinstance(text, str) else list(text)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


if __name__ == "__main__":  # the worker: python -m mlxrnn.bench.harness '{"impl": ..., ...}'
    try:
        print(json.dumps(run_worker(json.loads(sys.argv[1]))))
    except MLXRNNError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
