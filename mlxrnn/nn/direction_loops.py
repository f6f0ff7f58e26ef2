"""One layer, one direction: the time loop forward and its backward through time.

:class:`~mlxrnn.nn.layers.Recurrent` stacks layers and directions, handles states, masks and
dropout between layers; for each (layer, direction) it calls the two methods of
:class:`DirectionLoops` here, which own the loop itself (equations in mlxrnn/nn/layers.py):

* ``_run_direction``: the hoisted input projection P = X W_x + b (or, for token inputs, rows of
  the projected table), then either the cell's own whole-sequence pass (``sequence_forward``:
  minGRU, minLSTM) or ``cell.step`` over t in processing order, with the mask blend;
* ``_infer_lstm_direction``: forward only (``keep_cache=False``) for a plain LSTM on the numba
  kernels, the whole direction in ``kernels.lstm_infer_sequence`` (no caches, no per-step
  arrays, a folded lookup's rows read inside the kernel; training's step kernel reads them too);
* ``_backward_direction``: the same steps in reverse through ``cell.step_backward`` (or the
  cell's ``sequence_backward``), then ``_projection_grads`` — dW_x, db and dX as one GEMM each
  over all steps — and the cell's recurrent weight gradients.

Layout: on NumPy the loop runs batch-fastest (``xp.time_loop``, see mlxrnn/backend/numpy_backend.py);
``_relayout`` moves arrays into it once per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlxrnn.backend.pointwise import TableRows

DIRECTION_NAMES = ("fwd", "bwd")


def _loop_backend(xp: Any) -> Any:
    """The backend the time loop runs on (the protocol's ``time_loop``)."""
    return xp.time_loop


def _relayout(xp: Any, a: Any, layout: str) -> Any:
    """``a`` in ``layout``: the protocol's ``batch_fastest`` or ``row_major`` (identities on MLX)."""
    return xp.batch_fastest(a) if layout == "batch_fastest" else xp.row_major(a)


def _fused_inference(cell: Any, loop_xp: Any) -> bool:
    """Whether a forward-only pass of ``cell`` can run the fused LSTM inference loop: a plain LSTM
    (no peepholes) on kernels that have it (NumPy's numba kernels)."""
    return (cell.name == "lstm" and not getattr(cell, "peephole", False)
            and hasattr(getattr(loop_xp, "kernels", None), "lstm_infer_sequence"))


def _reads_rows(cell: Any, loop_xp: Any) -> bool:
    """Whether the cell's step kernel reads a folded lookup's rows itself (a plain LSTM on kernels
    with ``reads_table_rows``: NumPy's numba kernels), so the loop need not gather them first."""
    return (cell.name == "lstm" and not getattr(cell, "peephole", False)
            and getattr(getattr(loop_xp, "kernels", None), "reads_table_rows", False))


@dataclass(frozen=True)
class _StepRows:
    """The folded lookup's projections by step: ``[t]`` is step t's TableRows (no copy made)."""

    table: Any  # (V, G·H) projected table
    ids: Any  # (T, B) time-major token ids, NumPy intp

    def __getitem__(self, t: int) -> TableRows:
        return TableRows(self.table, self.ids[t])


@dataclass(frozen=True)
class TokenInputs:
    """Layer inputs given as rows of a table, x[b, t] = table[ids[b, t]]: an embedding lookup
    that :class:`Recurrent` may fold into layer 0 instead of materialising.

    Folding projects the table once — (E[ids]) W_x = (E W_x)[ids], a (V, D)·(D, G·H) product
    instead of a (B·T, D)·(D, G·H) one — and in backward sums the projection's gradient per
    token first, so dW_x and the table's gradient are (V, ·) products too. The layer folds when
    that needs fewer FLOPs (``fold=None``; True/False force it), and either way its
    :meth:`Recurrent.backward` returns the gradient with respect to ``table`` (V, D) in place of dx.
    """

    table: Any  # (V, D) backend array, e.g. an Embedding's weight
    ids: Any  # (B, T) token ids (NumPy or backend ints)
    fold: bool | None = None

    def worth_folding(self, gate_width: int) -> bool:
        """Fewer GEMM FLOPs folded: 2VD·G·H·3 + 2NV·G·H (table products, per-token sum) < 2ND·G·H·3."""
        if self.fold is not None:
            return self.fold
        (vocab, width), positions = self.table.shape, int(np.prod(self.ids.shape))
        return 3 * vocab * width + positions * vocab < 3 * positions * width


@dataclass
class _DirectionCache:
    inputs: Any  # (T·B, D_in) time-major layer input, rows t·B + b
    steps: list = field(default_factory=list)  # per-step cell caches, in processing order
    whole: Any = None  # the cache of a cell's sequence_forward (then ``steps`` stays empty)


class DirectionLoops:
    """The per-direction forward and backward of :class:`~mlxrnn.nn.layers.Recurrent` (a mixin:
    it reads the layer's ``xp``, ``cells``, ``hidden_size`` and ``_direction_params``)."""

    def _run_direction(self, layer: int, direction: int, inputs: Any, state: tuple, mask: Any,
                       batch_major: bool = False, keep_cache: bool = True):
        xp, loop_xp, cell = self.xp, _loop_backend(self.xp), self.cells[layer]
        params = self._direction_params(layer, direction)
        if not keep_cache and mask is None and _fused_inference(cell, loop_xp):
            return self._infer_lstm_direction(layer, direction, inputs, state, batch_major)
        if isinstance(inputs, TokenInputs):  # layer 0 folds the lookup: project the table, gather rows
            T, B = int(inputs.ids.shape[0]), int(inputs.ids.shape[1])
            inputs_2d = TokenInputs(inputs.table, xp.reshape(inputs.ids, (T * B,)), True)
            table_proj = xp.matmul(inputs.table, params["W_x"]) + params["b"]  # (V, G·H)
            # NumPy's time loop: gather straight into its batch-fastest layout; a whole-sequence
            # cell reads (t, b) rows, so it gets plain row-major rows.
            take = None if hasattr(cell, "sequence_forward") else getattr(xp, "take_batch_fastest", None)
            if _reads_rows(cell, loop_xp):  # no gathered copy at all: the step's kernel reads the rows
                projected = _StepRows(table_proj, np.ascontiguousarray(inputs.ids, dtype=np.intp))
            elif take is not None:
                projected = take(table_proj, inputs.ids)
            else:
                projected = xp.take(table_proj, inputs.ids, axis=0)
        else:
            T, B = int(inputs.shape[0]), int(inputs.shape[1])
            inputs_2d = xp.reshape(inputs, (T * B, -1))
            # The hoisted input projection: one GEMM for every time step at once (on the loop's
            # backend: its batch-fastest result is cheaper to lay out per step below; a
            # whole-sequence cell's element-wise passes want it row-major, as xp gives it).
            matmul = xp.matmul if hasattr(cell, "sequence_forward") else loop_xp.matmul
            projected = matmul(inputs_2d, params["W_x"])
            projected += params["b"]  # in place: the product is ours
        if hasattr(cell, "sequence_forward"):  # the cell runs all T steps itself (e.g. a linear scan)
            projected = xp.reshape(projected, (T, B, cell.gate_width))
            out, state, whole = cell.sequence_forward(xp, params, projected, state, mask, reverse=direction == 1)
            return out, state, _DirectionCache(inputs_2d, whole=whole) if keep_cache else None
        if not isinstance(projected, _StepRows):
            projected = _relayout(xp, xp.reshape(projected, (T, B, cell.gate_width)), "batch_fastest")
        params["W_h"] = _relayout(xp, params["W_h"], "batch_fastest")  # the forward product's fast layout
        state = tuple(_relayout(xp, part, "batch_fastest") for part in state)
        dir_cache = _DirectionCache(inputs_2d)
        outputs: list = [None] * T
        for t in range(T - 1, -1, -1) if direction == 1 else range(T):
            new_state, step_cache = cell.step(loop_xp, params, projected[t], state)
            if mask is None:
                state, outputs[t] = new_state, new_state[0]
            else:
                m = mask[t]
                state = tuple(m * new + (1.0 - m) * old for new, old in zip(new_state, state))
                outputs[t] = m * new_state[0]
            if keep_cache:  # forward only (evaluation): each step's cache is dropped at once
                dir_cache.steps.append(step_cache)
        dir_cache = dir_cache if keep_cache else None
        stack = getattr(xp, "stack_batch_major", None) if batch_major else None
        if stack is not None:  # the stack's public output: (B, T, H) in memory, no relayout later
            return stack(outputs), state, dir_cache
        return xp.reshape(xp.concat(outputs, axis=0), (T, B, self.hidden_size)), state, dir_cache

    def _infer_lstm_direction(self, layer: int, direction: int, inputs: Any, state: tuple, batch_major: bool):
        """Forward only, an LSTM on the numba kernels (``kernels.lstm_infer_sequence``): the same
        numbers as the cached loop, without its caches, its per-step arrays and, for token inputs,
        without gathering a (T, B, 4H) copy of the projected table's rows (the kernel reads them)."""
        xp, loop_xp = self.xp, _loop_backend(self.xp)
        params = self._direction_params(layer, direction)
        W_h = _relayout(xp, params["W_h"], "batch_fastest")  # the cached loop's operand layout: same products
        h0, c0 = (_relayout(xp, part, "batch_fastest") for part in state)
        if isinstance(inputs, TokenInputs):
            T = int(inputs.ids.shape[0])
            table_proj = xp.matmul(inputs.table, params["W_x"]) + params["b"]  # (V, 4H)
            sources = {"table": table_proj, "ids": inputs.ids}
        else:
            T, B = int(inputs.shape[0]), int(inputs.shape[1])
            projected = loop_xp.matmul(xp.reshape(inputs, (T * B, -1)), params["W_x"])
            projected += params["b"]
            sources = {"x_proj": _relayout(xp, xp.reshape(projected, (T, B, -1)), "batch_fastest")}
        order = list(range(T - 1, -1, -1)) if direction == 1 else list(range(T))
        steps, h, c = loop_xp.kernels.lstm_infer_sequence(W_h, h0, c0, order, **sources)  # steps (T, H, B)
        if batch_major:  # the stack's public output: (B, T, H) in memory, as stack_batch_major gives it
            return xp.row_major(xp.permute_dims(steps, (2, 0, 1))).transpose(1, 0, 2), (h, c), None
        return xp.permute_dims(steps, (0, 2, 1)), (h, c), None

    def _backward_direction(self, layer, direction, d_out, d_state, dir_cache: _DirectionCache, mask, record=None):
        xp, loop_xp, cell = self.xp, _loop_backend(self.xp), self.cells[layer]
        params = self._direction_params(layer, direction)
        if dir_cache.whole is not None:  # the cell's own backward over all T steps gives dP at once
            d_proj, d_state = cell.sequence_backward(xp, params, dir_cache.whole, d_out, d_state, record)
            d_inputs, grads = self._projection_grads(params, dir_cache.inputs, d_proj, int(d_out.shape[0]), xp.matmul)
            return d_inputs, d_state, grads
        T = len(dir_cache.steps)
        order = list(range(T - 1, -1, -1)) if direction == 1 else list(range(T))
        d_out = _relayout(xp, d_out, "batch_fastest")
        d_state = tuple(_relayout(xp, part, "batch_fastest") for part in d_state)
        d_projected: list = [None] * T  # both in time order, to line up with the inputs
        d_recurrent: list = [None] * T
        for position in range(T - 1, -1, -1):  # walk the processing order backwards
            t = order[position]
            if record is not None:  # only when asked; a padded step's output is 0, not its state
                d_out_t = d_out[t] if mask is None else mask[t] * d_out[t]
                record[t] = (d_state[0] + d_out_t,) + tuple(d_state[1:])
            if mask is None:
                d_new = (d_state[0] + d_out[t],) + tuple(d_state[1:])
                d_carry = None
            else:
                m = mask[t]
                d_new = (m * (d_state[0] + d_out[t]),) + tuple(m * d for d in d_state[1:])
                d_carry = tuple((1.0 - m) * d for d in d_state)  # padded steps pass the state through
            d_projected[t], d_recurrent[t], d_prev = cell.step_backward(
                loop_xp, params, dir_cache.steps[position], d_new
            )
            d_state = d_prev if d_carry is None else tuple(a + b for a, b in zip(d_prev, d_carry))
        caches = dir_cache.steps[::-1] if direction == 1 else dir_cache.steps  # time order
        d_proj = xp.concat(d_projected, axis=0)  # (T·B, G·H), rows t·B + b
        same = all(a is b for a, b in zip(d_projected, d_recurrent))  # e.g. an LSTM: one array serves both
        d_rec = d_proj if same else xp.concat(d_recurrent, axis=0)
        d_inputs, grads = self._projection_grads(params, dir_cache.inputs, d_proj, T, loop_xp.matmul)
        stacked = {key: xp.concat([c[key] for c in caches], axis=0) for key in cell.recurrent_input_keys}
        grads.update(cell.recurrent_grads(xp, params, stacked, d_rec))
        return d_inputs, d_state, grads

    def _projection_grads(self, params: dict, inputs_2d: Any, d_proj: Any, T: int, matmul: Any) -> tuple[Any, dict]:
        """dW_x, db and the inputs' gradient from dP (T·B, G·H): one GEMM each over all steps
        (``matmul`` computes dX, in the layout the layer below wants)."""
        xp = self.xp
        if isinstance(inputs_2d, TokenInputs):  # folded lookup: sum d_proj per token, then (V, ·) products
            one_hot = xp.one_hot(inputs_2d.ids, int(inputs_2d.table.shape[0]))  # (T·B, V)
            d_table_proj = xp.matmul(xp.permute_dims(one_hot, (1, 0)), d_proj)  # (V, G·H)
            grads = {"W_x": xp.matmul(xp.permute_dims(inputs_2d.table, (1, 0)), d_table_proj),
                     "b": xp.sum(d_table_proj, axis=0)}
            d_inputs = xp.matmul(d_table_proj, xp.permute_dims(params["W_x"], (1, 0)))  # d table (V, D)
        else:
            grads = {"W_x": xp.matmul(xp.permute_dims(inputs_2d, (1, 0)), d_proj), "b": xp.sum(d_proj, axis=0)}
            d_inputs = matmul(d_proj, xp.permute_dims(params["W_x"], (1, 0)))
            d_inputs = xp.reshape(d_inputs, (T, -1, int(inputs_2d.shape[1])))
        return d_inputs, grads
