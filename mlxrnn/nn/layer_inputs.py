"""What a recurrent layer checks and prepares before its time loop: the initial state's parts,
the time-major mask (from ``mask`` or ``lengths``), dropout masks and token inputs.

A mixin of :class:`~mlxrnn.nn.layers.Recurrent`, which supplies ``xp``, ``state_size``,
``num_layers``, ``num_directions``, ``hidden_size``, ``input_size``, ``dropout`` and
``locked_dropout``. Shapes: B batch, T time, H hidden; masks are (T, B, 1) inside the loop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.checks import check_finite, shape_error
from mlxrnn.nn.dense import check_token_ids
from mlxrnn.nn.direction_loops import TokenInputs, _relayout
from mlxrnn.nn.dropout import dropout_mask


def lengths_to_mask(lengths: Any, max_len: int) -> np.ndarray:
    """(B,) valid lengths -> (B, T) float mask, 1 on valid steps. Right padding is assumed."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ShapeError(
            f"lengths must be a 1-D integer array (one length per sequence); got {lengths.dtype} {lengths.shape}"
        )
    if lengths.size and (lengths.min() < 0 or lengths.max() > max_len):
        raise ConfigError(
            f"lengths must lie in [0, {max_len}] (the time dimension); got min {lengths.min()}, max {lengths.max()}"
        )
    return (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.float64)


class LayerInputs:
    """The input and state checks of :class:`~mlxrnn.nn.layers.Recurrent` (see the module docstring)."""

    def _public_state(self, parts: list) -> Any:
        return tuple(parts) if self.state_size > 1 else parts[0]

    def _state_parts(self, state: Any, batch_size: int, check_values: bool = False) -> list:
        """Public state -> list of state_size arrays, each (L·D, B, H), validated (with
        ``check_values``, NumPy states must also be finite: one NaN would make every output NaN)."""
        if state is None:
            return [None] * self.state_size
        if self.state_size == 1 and isinstance(state, (tuple, list)):
            raise ShapeError(
                f"initial_state of a {self.cell_name} layer is one array (num_layers*num_directions, batch, hidden), "
                f"not a pair of {len(state)}; only an LSTM's state is a pair (h, c)"
            )
        parts = list(state) if self.state_size > 1 else [state]
        if self.state_size > 1 and (not isinstance(state, (tuple, list)) or len(parts) != self.state_size):
            raise ShapeError("initial_state of an LSTM must be a pair (h0, c0)")
        expected = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        for part in parts:
            if not hasattr(part, "shape"):
                raise ShapeError(f"initial_state must be an array (or a pair for an LSTM), got {type(part).__name__}")
            if tuple(part.shape) != expected:
                raise shape_error(
                    "initial_state", f"(num_layers*num_directions, batch, hidden) = {expected}", part.shape
                )
            if check_values:
                check_finite(part, "initial_state", "pass a finite state (or None for zeros)", self.xp.dtype_name)
        xp = self.xp
        return [xp.from_numpy(p) if isinstance(p, np.ndarray) and (xp.name != "numpy" or p.dtype != xp.dtype) else p
                for p in parts]

    def _dropout_mask(self, source: Any, shape: tuple[int, int, int]) -> Any:
        """The scaled keep-mask (T, B, H_out) of one layer's outputs — (1, B, H_out), shared by every
        step, for locked dropout: 1/(1 − p) where kept, else 0.

        ``source`` is a NumPy generator (keep where ``random() >= p``, drawn on the host so every
        backend sees the same masks), or an object with ``dropout_mask(xp, shape, p)`` that
        supplies the masks itself, e.g. ones drawn before a compiled step
        (:mod:`mlxrnn.training.compiled`), in the same order.
        """
        xp, (T, B, features) = self.xp, shape
        supply = getattr(source, "dropout_mask", None)
        if supply is not None:
            return supply(xp, (1, B, features) if self.locked_dropout else shape, self.dropout)
        mask = dropout_mask(source, self.dropout, T, B, features, self.locked_dropout)  # (T or 1, B, H_out)
        return _relayout(xp, xp.from_numpy(mask), "batch_fastest")

    def _check_tokens(self, tokens: TokenInputs) -> TokenInputs:
        table = tokens.table
        if len(table.shape) != 2 or table.shape[1] != self.input_size:
            raise shape_error("TokenInputs.table", f"(vocabulary, {self.input_size})", table.shape)
        ids = check_token_ids(self.xp, tokens.ids, int(table.shape[0]))
        if len(ids.shape) != 2:
            raise shape_error("TokenInputs.ids", "(batch, time)", ids.shape)
        return TokenInputs(table, ids, tokens.fold)

    def _time_major_mask(self, mask: Any, lengths: Any, B: int, T: int) -> Any:
        if mask is not None and lengths is not None:
            raise ConfigError("give either mask or lengths, not both")
        if lengths is not None:
            mask = lengths_to_mask(lengths, T)
        if mask is None:
            return None
        if not isinstance(mask, (np.ndarray, list)):  # a backend array: used as it is, never read back
            if tuple(mask.shape) != (B, T):
                raise shape_error("mask", f"(batch, time) = {(B, T)}", mask.shape)
            return self.xp.astype(self.xp.permute_dims(mask, (1, 0)), self.xp.dtype)[:, :, None]
        mask_np = np.asarray(mask)
        if mask_np.shape != (B, T):
            raise shape_error("mask", f"(batch, time) = {(B, T)}", mask_np.shape)
        check_finite(mask_np, "mask", "a mask is 1 on valid steps and 0 on padding")
        if mask_np.size and not (mask_np.min() >= 0 and mask_np.max() <= 1):
            raise ConfigError(
                f"mask values must lie in [0, 1] (1 on valid steps, 0 on padding); got {mask_np.min():g} to "
                f"{mask_np.max():g}"
            )
        return self.xp.from_numpy(mask_np.T[:, :, None].astype(np.float64))  # (T, B, 1)
