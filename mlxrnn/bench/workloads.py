"""mlxrnn's own implementations as benchmark workloads (built inside the worker process).

* ``numpy``: the NumPy backend; sampling draws Gumbel-max noise on the host (:func:`sample_tokens`).
* ``mlx``: the MLX backend with the eager step (``Trainer(compile=False)``, i.e. ``--no-compile``)
  and the eager per-token sampler.
* ``mlx-compiled``: what ``mlxrnn train`` and ``mlxrnn sample`` run on MLX by default — the
  compiled training step (:mod:`mlxrnn.training.compiled`) and the compiled per-token sampler
  (:mod:`mlxrnn.lm.mlx_sampling`).
* ``mlx-autodiff``: training gradients from ``mx.value_and_grad`` of the forward instead of the
  hand-written BPTT (``-compiled``: that gradient function wrapped in ``mx.compile``); sampling
  as ``mlx`` (``mlx-compiled``).

The ``forward`` task runs the eager forward on every MLX variant (evaluation is not compiled).
Every method returns only when its work is done (synchronised). MLX workloads also report the
number of graph nodes (primitives) one training step evaluates: :func:`count_graph_nodes`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np

from mlxrnn.bench.sizes import CELL_OPTIONS, Shape
from mlxrnn.lm.compiled_sampling import CompiledSampler


def lm_batch(shape: Shape, seed: int) -> dict[str, np.ndarray]:
    """Random ids and next-token targets of one (B, T) batch."""
    rng = np.random.default_rng(seed)
    size = (shape.batch, shape.steps)
    return {"inputs": rng.integers(0, shape.vocab, size), "targets": rng.integers(0, shape.vocab, size)}


def count_graph_nodes(*trees: Any) -> int:
    """Primitives MLX would run to evaluate the (unevaluated) arrays in ``trees``: the nodes of
    their graph back to already-evaluated inputs, counted from ``mx.export_to_dot``. A fused
    kernel of a compiled function counts once."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    arrays = [leaf for tree in trees for _, leaf in tree_flatten(tree) if isinstance(leaf, mx.array)]
    dot = io.StringIO()
    mx.export_to_dot(dot, *arrays)
    return sum("shape=rectangle" in line for line in dot.getvalue().splitlines())


class Workload:
    """One implementation set up for one cell and shape. Every method returns only when the
    work is done (synchronised)."""

    def train_step(self) -> None:
        raise NotImplementedError

    def forward(self) -> None:
        raise NotImplementedError

    def sample(self, num_tokens: int) -> None:
        raise NotImplementedError

    def graph_nodes(self) -> int | None:
        """Graph nodes one training step evaluates (MLX workloads), else None."""
        return None


class _GradientFnModel:
    """The Trainer's model protocol with gradients from ``grad_fn(params) -> (loss, grads)``.

    Lets the MLX autodiff variants reuse the library's clipping and Adam exactly.
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
    """mlxrnn's SequenceModel + Trainer (Adam lr 1e-3, clip_norm 1.0) on ``backend``.

    ``gradients``: "bptt" (the hand-written backward) or "autodiff" (``mx.value_and_grad``);
    ``compiled``: with bptt, the library's compiled step; with autodiff, the gradient function
    in ``mx.compile`` (which captures the fixed benchmark batch: fine for timing only).
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
        self.xp, self.seed = self.model.xp, seed
        self.batch = lm_batch(shape, seed)
        trainable: Any = self.model
        if gradients == "autodiff":
            trainable = _GradientFnModel(self.model, self._autodiff_grad_fn(compiled))
        self.optimizer = Adam(lr=1e-3)
        self.trainer = Trainer(trainable, self.optimizer, clip_norm=1.0, compile=compiled)
        self.rng = np.random.default_rng(seed)
        self.sampler = None
        if self.xp.name == "mlx":
            from mlxrnn.lm.mlx_sampling import TokenSampler
            from mlxrnn.models.decoding import SamplingOptions

            self.sampler = TokenSampler(self.model, SamplingOptions(), compiled=compiled)

    def _autodiff_grad_fn(self, compiled: bool) -> Callable:
        import mlx.core as mx

        model, batch = self.model, self.batch

        def loss_of(params):
            model.load_parameters(params)
            return model.loss(batch)[0]

        fn = mx.value_and_grad(loss_of)
        return mx.compile(fn) if compiled else fn

    def _finish(self, *arrays: Any) -> None:
        self.xp.eval(*arrays, self.model.parameters(), self.optimizer.state)

    def train_step(self) -> None:
        result = self.trainer.step(self.batch)
        self._finish(result.loss_array)  # the whole update, not only the loss, is done when this returns

    def forward(self) -> None:
        # forward only, as evaluation and scoring run it (the peers time theirs without autograd)
        logits, _, _ = self.model.forward(self.batch["inputs"], keep_cache=False)
        self.xp.eval(logits)

    def sample(self, num_tokens: int) -> None:
        if self.sampler is None:
            sample_tokens(self.model, num_tokens, self.rng)
            return
        stream = self.sampler.stream(np.zeros((1, 1), dtype=np.int32), seed=self.seed)
        for _ in range(num_tokens):
            next(stream)  # each token's id is read back, as `mlxrnn sample` does to stream text

    def graph_nodes(self) -> int | None:
        if self.xp.name != "mlx":
            return None
        loss, norm, aux = self.trainer.lazy_step(self.batch)
        nodes = count_graph_nodes([loss, norm], self.model.parameters(), self.optimizer.state)
        self._finish(loss, norm)
        return nodes


def sample_tokens(model: Any, num_tokens: int, rng: np.random.Generator, token: int = 0) -> list[int]:
    """Draw ``num_tokens`` from an embedding-input SequenceModel at batch 1 on the host, feeding each back.

    On the numba kernels this is :class:`~mlxrnn.lm.compiled_sampling.CompiledSampler`, the
    path of ``mlxrnn sample`` (softmax at temperature 1 and an inverse-CDF draw per token, as
    the torch peer's softmax and multinomial; the first token is drawn after reading ``token``).
    Otherwise:

    The per-token path is :meth:`mlxrnn.nn.layers.Recurrent.step` (no caches): layer 0's input
    projection of the whole embedding table is computed once, so a token's step starts from a
    row of it, and only the recurrence, the head and the draw remain per token.
    """
    compiled = CompiledSampler.for_model(model)
    if compiled is not None:  # what `mlxrnn sample` runs for one sample: step, softmax and draw compiled
        logits, state = model.forward(np.array([[token]]), keep_cache=False)[:2]
        stream = compiled.stream(np.asarray(logits[:, -1], dtype=np.float64), state, (), rng)
        return [int(next(stream)[0]) for _ in range(num_tokens)]
    table = model.rnn.project_inputs(model.embedding.params["weight"])  # (V, G·H)
    head_w, head_b = model.head.params["W"], model.head.params["b"]
    # Gumbel-max: argmax(logits + G) with G ~ Gumbel(0, 1) is an exact draw from softmax(logits).
    # All the noise is drawn up front, with the head's bias added to it: a token costs one add
    # and one argmax after the head's matmul.
    noise_plus_bias = rng.gumbel(size=(num_tokens, int(head_b.shape[0]))).astype(head_b.dtype) + head_b
    tokens, state = [], None
    for i in range(num_tokens):
        h, state = model.rnn.step(x_proj=table[token : token + 1], state=state)
        token = int(np.argmax(np.matmul(h, head_w)[0] + noise_plus_bias[i]))
        tokens.append(token)
    return tokens
