"""Batch-1 sampling on the NumPy backend in one compiled loop (numba): the per-token path of
``mlxrnn sample`` with one sample, and of the bench's sampling task.

:class:`CompiledSampler` gathers a :class:`~mlxrnn.models.sequence_model.SequenceModel`'s
weights once into the arrays :func:`mlxrnn.backend.numba_sampling.sample_chunk` reads, then
draws tokens in chunks: one call draws a chunk's tokens and runs their steps, and the chunks
grow (1, 2, 4, … 64 tokens) so the first tokens of a streamed sample appear at once and a long
one costs one call per 64 tokens. Every token takes the same uniform from the generator as the
NumPy path (``rng.random`` once per token, in order), so draws match it for a seed except at a
rounding tie (see numba_sampling.py). Models it cannot run (MLX, float64, the plain NumPy
kernels, bidirectional, peepholes, other cells or variants) get None from :meth:`for_model`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

#: the largest number of tokens one compiled call draws
MAX_CHUNK = 64


def _cell_kind(cell: Any) -> int | None:
    """numba_sampling's code for a cell it implements (these constants: LSTM 0, GRU 1, RNN 2), else None."""
    if cell.name == "lstm" and not getattr(cell, "peephole", False):
        return 0
    if cell.name == "gru" and getattr(cell, "variant", None) == "reset_after":
        return 1
    if cell.name == "rnn" and getattr(cell, "activation", None) == "tanh":
        return 2
    return None


class CompiledSampler:
    """The weights of one model laid out for :func:`~mlxrnn.backend.numba_sampling.sample_chunk`."""

    def __init__(self, model: Any, kind: int):
        rnn, xp = model.rnn, model.xp
        if model.config.input_kind == "embedding":
            inputs = model.embedding.params["weight"]
        else:  # one-hot inputs: the projection of the identity is the table
            inputs = xp.from_numpy(np.eye(model.config.input_size))
        self.kind = kind
        self.table = np.ascontiguousarray(rnn.project_inputs(inputs))  # (V_in, G·H)
        params = [rnn._direction_params(layer, 0) for layer in range(rnn.num_layers)]
        hidden, dtype = rnn.hidden_size, self.table.dtype
        width = self.table.shape[1]
        rest = params[1:]
        self.w_x = np.ascontiguousarray([p["W_x"] for p in rest] if rest else np.zeros((1, hidden, width), dtype))
        self.b_x = np.ascontiguousarray([p["b"] for p in rest] if rest else np.zeros((1, width), dtype))
        self.w_h = np.ascontiguousarray([p["W_h"] for p in params])  # (L, H, G·H)
        self.b_hn = np.ascontiguousarray([p.get("b_hn", np.zeros(hidden, dtype)) for p in params], dtype=dtype)
        self.head_w = np.ascontiguousarray(model._head_weight())  # (H, V); a tied head's transposed view copied
        bias = model.head.params.get("b")
        self.head_b = np.ascontiguousarray(bias if bias is not None else np.zeros(self.head_w.shape[1], dtype))
        self.layers, self.hidden = rnn.num_layers, hidden

    @classmethod
    def for_model(cls, model: Any) -> CompiledSampler | None:
        """A sampler for ``model``, or None when the compiled loop does not cover it."""
        xp, rnn = model.xp, model.rnn
        if xp.name != "numpy" or xp.dtype_name != "float32" or rnn.bidirectional:
            return None
        kinds = {_cell_kind(cell) for cell in rnn.cells}
        if len(kinds) != 1 or None in kinds:
            return None
        try:
            if xp.kernels.name != "numba":  # chooses the kernels (imports numba) when not done yet
                return None
        except Exception:  # numba requested but unusable: the NumPy path reports it
            return None
        return cls(model, kinds.pop())

    def state_arrays(self, state: Any) -> tuple[np.ndarray, np.ndarray]:
        """(h, c) as (L, H) float32 working copies of a batch-1 public state ((L, 1, H), or the pair)."""
        parts = state if isinstance(state, tuple) else (state,)
        h = np.array(parts[0][:, 0, :], dtype=self.table.dtype, order="C")
        c = (np.array(parts[1][:, 0, :], dtype=self.table.dtype, order="C") if len(parts) > 1
             else np.zeros_like(h))
        return h, c

    def stream(self, logits: np.ndarray, state: Any, banned: Sequence[int], rng: np.random.Generator,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               greedy: bool = False) -> Iterator[np.ndarray]:
        """Tokens drawn one after another, each as a (1,) int array, from ``logits`` (1, V) and the
        state after the context; endless (the caller stops)."""
        from mlxrnn.backend.numba_sampling import sample_chunk

        h, c = self.state_arrays(state)
        current = np.array(logits[0], dtype=np.float64)
        banned_ids = np.asarray(sorted(set(banned)), dtype=np.int64)
        # top_k past the vocabulary keeps every token (as on the NumPy path); clamped here because
        # the compiled loop takes a 64-bit integer and the CLI accepts any size
        top_k = min(int(top_k or 0), current.shape[0])
        options = (float(temperature), top_k, float(1.0 if top_p is None else top_p), bool(greedy))
        size = 1
        while True:
            # The uniforms the NumPy path would take, one per token and in order (none when greedy).
            uniforms = np.zeros(size) if greedy else rng.random(size)
            out = np.empty(size, dtype=np.int64)
            sample_chunk(self.kind, self.table, self.w_x, self.b_x, self.w_h, self.b_hn, self.head_w, self.head_b,
                         h, c, current, banned_ids, *options, uniforms, out)
            for token in out:
                yield np.array([token])
            size = min(2 * size, MAX_CHUNK)
