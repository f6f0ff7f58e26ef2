"""What the benchmark measures, before anything runs: cells, tasks, shapes and their analytic work.

The network is language-model shaped (embedding → recurrent stack → linear → softmax
cross-entropy). A :class:`Shape` fixes batch B, steps T, embedding E, hidden H, vocabulary V
and layers L; :func:`gemm_flops` counts the matrix-multiply work of one call of a task, so a
timing can be read as a share of the machine's matmul peak.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.nn.cells import CELLS as CELL_REGISTRY
from mlxrnn.nn.cells import make_cell

#: every registered cell, in registry order (the default cell first)
CELLS = tuple(CELL_REGISTRY)
TASKS = ("train", "forward", "sample")
#: the cell options that make mlxrnn compute what the peers compute (PyTorch's and mlx.nn's GRU)
CELL_OPTIONS: dict[str, dict] = {"gru": {"variant": "reset_after"}}


def num_gates(cell: str) -> int:
    """G of a benchmarked cell (a 1×1 cell built with the bench's options knows it)."""
    return make_cell(cell, 1, 1, **CELL_OPTIONS.get(cell, {})).num_gates


def has_recurrent_weights(cell: str) -> bool:
    """Whether the cell multiplies its state by a matrix W_h each step (minGRU, minLSTM do not)."""
    built = make_cell(cell, 1, 1, **CELL_OPTIONS.get(cell, {}))
    return "W_h" in built.init_params(np.random.default_rng(0))


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
    "ref": Shape(),  # the reference shape of the README and the issues' targets
    "large": Shape(hidden=512, layers=2),
    # hidden 64: little arithmetic per op, so per-op overhead dominates (a proxy for GPU dispatch)
    "small": Shape(hidden=64),
    "tiny": Shape(batch=4, steps=8, embed=8, hidden=16, vocab=11, layers=1),  # for tests
}
_SHAPE_KEYS = {"B": "batch", "T": "steps", "E": "embed", "H": "hidden", "V": "vocab", "L": "layers"}


def parse_size(text: str) -> tuple[str, Shape]:
    """A size name (ref, large, small, tiny) or ``KEY=N,...`` with keys B T E H V L overriding ``ref``."""
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


def gemm_flops(cell: str, shape: Shape, task: str) -> float:
    """Matrix-multiply FLOPs (2·m·k·n each) of one ``task`` call, the standard algorithm.

    Forward, per layer with input width D and G gate blocks: input projection 2·N·D·GH and
    recurrence 2·N·H·GH over N = B·T positions; the head 2·N·H·V. Training adds, per layer,
    dW_x, dX (also for layer 0: the embedding's gradient needs it), dW_h and the dh recurrence,
    each as large as its forward product, and the head's dW and dX. Cells without a recurrent
    weight (minGRU, minLSTM) have no recurrence products. Element-wise work (a minGRU's whole
    scan), the loss and the optimizer are not counted. Sampling is not counted (it is latency-bound).
    """
    if task == "sample":
        return 0.0
    n, hidden, gate_width = shape.batch * shape.steps, shape.hidden, num_gates(cell) * shape.hidden
    recurrent = has_recurrent_weights(cell)
    forward = backward = 2.0 * n * hidden * shape.vocab
    backward *= 2
    for layer in range(shape.layers):
        width = shape.embed if layer == 0 else hidden
        input_proj, recurrence = 2.0 * n * width * gate_width, 2.0 * n * hidden * gate_width * recurrent
        forward += input_proj + recurrence
        backward += 2 * input_proj + 2 * recurrence
    return forward + (backward if task == "train" else 0.0)


def tokens_per_call(shape: Shape, task: str, sample_tokens: int) -> int:
    return sample_tokens if task == "sample" else shape.batch * shape.steps
