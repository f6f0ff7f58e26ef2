"""Sequence layers: the time loop, its backward through time, stacking and both directions.

This module stacks layers and directions and owns states, masks and dropout between layers;
the loop of one layer and direction is in mlxrnn/nn/direction_loops.py, and the layers without
a time axis (Embedding, Linear) in mlxrnn/nn/dense.py (both re-exported here).

``RNN``, ``GRU`` and ``LSTM`` are :class:`Recurrent` layers with a different cell. Inputs are
batch-first, (B, T, D), as in ``mlx.nn``; internally the loop runs time-major (T, B, ·) so each
step reads a contiguous slice.

Forward, per layer ℓ and direction:
    P = X W_x + b                       one (T·B, D) × (D, G·H) matmul for all steps (hoisted)
    state⟨t⟩ = cell.step(P⟨t⟩, state⟨t−1⟩)          only the recurrent matmul stays in the loop
With a mask m⟨t⟩ ∈ {0, 1} (B,), padded steps carry the state through unchanged and output 0:
    state⟨t⟩ = m ∗ new + (1 − m) ∗ state⟨t−1⟩,   y⟨t⟩ = m ∗ new
so the final state is each sequence's last valid step, and the reverse direction, walking
t = T−1 … 0, starts from its initial state at each sequence's own last step (right padding).

Backward walks the same steps in reverse; only dh⟨t−1⟩ = dP⟨t⟩ W_hᵀ is a per-step matmul.
dW_x = Xᵀ dP, db = Σ dP, dX = dP W_xᵀ and dW_h = Σ_t h⟨t−1⟩ᵀ dP⟨t⟩ are one GEMM each after the
loop (see :meth:`mlxrnn.nn.cells.Cell.recurrent_grads`).

A cell with ``sequence_forward`` / ``sequence_backward`` methods (minGRU, minLSTM: gates from
the input alone, see mlxrnn/nn/min_cells.py) replaces the per-step loop with its own pass over
all T steps: it gets P (T, B, G·H), the state, the (T, B, 1) mask and the direction, returns
outputs, final state and its cache, and in backward returns dP (T·B, G·H) and the initial
state's gradient; the GEMMs around the loop are the same.

Memory layout (it matters on NumPy; MLX's layout methods are identities). OpenBLAS multiplies
a batch of states (B, H) by a weight (H, G·H) faster when the activations are stored
batch-fastest (column-major; figures in benchmarks/results/numpy_layout.md). So the time loop
runs on ``xp.time_loop`` — NumPy whose 2-D products come back batch-fastest — and the loop's
inputs (projections, states, output gradients) are put in that layout once per call with
``xp.batch_fastest``; NumPy's element-wise ops keep it. Per-step results are joined with one
``concat`` along the batch axis, which yields the (T·B, ·) matrices of the weight-gradient GEMMs
as they are. The math and the code are the same on every backend; the layout methods are part
of the backend protocol (mlxrnn/backend/protocol.py).

States use PyTorch's layout: (L·D, B, H) with index 2ℓ + d (d = 0 forward, 1 backward);
an LSTM's state is the pair (h, c). States returned by one call can be passed as the next
call's ``initial_state``: gradients never flow back across calls (truncated BPTT), because
backward only reaches them through ``d_final_state``, which the trainer leaves at zero.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.cells import Cell, cell_class, make_cell
from mlxrnn.nn.checks import check_finite, check_layer_input, shape_error
from mlxrnn.nn.dense import Embedding, Linear, check_token_ids, one_hot
from mlxrnn.nn.direction_loops import DIRECTION_NAMES, DirectionLoops, TokenInputs, _relayout
from mlxrnn.nn.layer_inputs import LayerInputs, lengths_to_mask
from mlxrnn.nn.module import Module, check_positive_int, check_probability
from mlxrnn.nn.single_steps import SingleSteps

__all__ = ["Recurrent", "RNN", "GRU", "LSTM", "make_recurrent", "RecurrentCache", "TokenInputs", "lengths_to_mask",
           "Embedding", "Linear", "check_token_ids", "one_hot", "DIRECTION_NAMES"]


@dataclass
class RecurrentCache:
    """Everything :meth:`Recurrent.backward` needs from a forward pass."""

    batch_size: int
    time_steps: int
    mask: Any  # (T, B, 1) or None
    directions: dict  # (layer, direction) -> _DirectionCache
    dropout_masks: dict  # layer -> (T, B, H_out) scaled keep-mask ((1, B, H_out) when locked)
    tokens: TokenInputs | None = None  # when the inputs were TokenInputs: backend ids (B, T) and the table
    folded: bool = False  # whether layer 0 folded the table lookup


class Recurrent(LayerInputs, SingleSteps, DirectionLoops, Module):
    """A stack of recurrent layers of any registered cell, optionally bidirectional.

    ``Recurrent(D, H, cell="gru", variant="reset_after")`` or the aliases :class:`RNN`,
    :class:`GRU`, :class:`LSTM`; every cell in :data:`mlxrnn.nn.cells.CELLS` works.

    Args:
        input_size: D, features per input step.
        hidden_size: H, units per direction.
        num_layers: L, stacked layers; layer ℓ+1 reads layer ℓ's outputs.
        bidirectional: also run each layer from t = T−1 down to 0.
        merge: how the two directions' outputs combine: "concat" (2H features) or "sum" (H).
        dropout: inverted dropout on the outputs of every layer but the last, training only.
        locked_dropout: draw one dropout mask per sequence, shared by all time steps (variational
            dropout, :mod:`mlxrnn.nn.dropout`), instead of one per step.
        seed: seeds the NumPy generator all parameters are drawn from (identical on every backend).
        backend, dtype: see :func:`mlxrnn.get_backend`.
        cell: the registered cell name (the aliases fix it); ``cell_options`` go to its class.

    Shapes: ``forward(x (B, T, D)) -> (outputs (B, T, H_out), final_state, cache)`` with
    H_out = 2H for a bidirectional concat, else H; calling the layer, ``layer(x)``, returns
    ``(outputs, final_state)`` as PyTorch's layers do (see :meth:`forward` for the keywords).
    """

    cell_name = "lstm"  # the default cell; the aliases below fix their own

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        merge: str = "concat",
        dropout: float = 0.0,
        seed: int = 0,
        backend: Any = None,
        dtype: str = "float32",
        *,
        cell: str | None = None,
        locked_dropout: bool = False,
        **cell_options: Any,
    ):
        super().__init__(backend, dtype)
        if cell is not None:
            cell_class(cell)  # a ConfigError naming the registered cells
            if type(self) is not Recurrent and cell != type(self).cell_name:
                raise ConfigError(f"{type(self).__name__} is the {type(self).cell_name!r} cell; got cell={cell!r}")
            self.cell_name = cell
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bidirectional = bool(bidirectional)
        if merge not in ("concat", "sum"):
            raise ConfigError(f"merge must be 'concat' or 'sum', got {merge!r}")
        self.merge = merge
        self.dropout = check_probability("dropout", dropout)
        self.locked_dropout = bool(locked_dropout)
        self.cell_options = dict(cell_options)
        self.num_directions = 2 if self.bidirectional else 1
        self.output_size = self.hidden_size * (2 if self.bidirectional and merge == "concat" else 1)
        self.cells: list[Cell] = []
        rng = np.random.default_rng(seed)
        arrays: dict[str, np.ndarray] = {}
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.output_size
            cell = make_cell(self.cell_name, layer_input, self.hidden_size, **cell_options)
            self.cells.append(cell)
            for direction in DIRECTION_NAMES[: self.num_directions]:
                for name, value in cell.init_params(rng).items():
                    arrays[f"l{layer}.{direction}.{name}"] = value
        self._set_numpy_params(arrays)
        self._param_names: dict[tuple[int, int], list[tuple[str, str]]] = {}
        self._dropout_rng = np.random.default_rng(None if seed is None else seed + 1)

    @property
    def state_size(self) -> int:
        """Arrays in the state: 2 for an LSTM (h, c), 1 otherwise."""
        return self.cells[0].state_size

    def extra_repr(self) -> str:
        """The sizes, then every setting that differs from its default (as PyTorch shows them)."""
        parts = [f"cell={self.cell_name!r}"] if type(self) is Recurrent else []
        parts += [f"input_size={self.input_size}", f"hidden_size={self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            parts.append("bidirectional=True" + (f", merge={self.merge!r}" if self.merge != "concat" else ""))
        if self.dropout:
            parts.append(f"dropout={self.dropout:g}")
        defaults = inspect.signature(cell_class(self.cell_name).__init__).parameters
        parts += [f"{name}={value!r}" for name, value in self.cell_options.items()
                  if name not in defaults or defaults[name].default != value]
        return ", ".join(parts)

    def io_sizes(self) -> tuple[int, int]:
        return self.input_size, self.output_size

    def config(self) -> dict:
        """The constructor's settings (cell, sizes, layers, directions, dropout, cell options) as a dict."""
        return {
            "cell": self.cell_name,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "merge": self.merge,
            "dropout": self.dropout,
            "locked_dropout": self.locked_dropout,
            **self.cell_options,
        }

    def _direction_params(self, layer: int, direction: int) -> dict[str, Any]:
        """{"W_x": ..., "W_h": ..., ...} of one layer and direction (a fresh dict: callers may add to it)."""
        names = self._param_names.get((layer, direction))
        if names is None:  # parameter names never change, only their values: look them up once
            prefix = f"l{layer}.{DIRECTION_NAMES[direction]}."
            names = [(name[len(prefix) :], name) for name in self.params if name.startswith(prefix)]
            self._param_names[(layer, direction)] = names
        return {short: self.params[name] for short, name in names}

    # --- state layout -----------------------------------------------------------------------
    def zero_state(self, batch_size: int) -> Any:
        """The all-zeros state in the public layout (an array, or (h, c) for an LSTM)."""
        zeros = self.xp.zeros((self.num_layers * self.num_directions, batch_size, self.hidden_size))
        return self._public_state([zeros] * self.state_size)

    # --- forward ----------------------------------------------------------------------------
    def forward(
        self,
        x: Any,
        initial_state: Any = None,
        mask: Any = None,
        lengths: Any = None,
        training: bool = False,
        rng: np.random.Generator | None = None,
        keep_cache: bool = True,
    ) -> tuple[Any, Any, RecurrentCache | None]:
        """Run the stack over a batch.

        Args:
            x: (B, T, D) inputs (NumPy arrays are converted to the backend), or
                :class:`TokenInputs` (an embedding lookup the layer may fold into layer 0).
            initial_state: (L·D, B, H) — or (h0, c0) for an LSTM — or None for zeros.
            mask: (B, T) 1 for valid steps, 0 for padding; or give ``lengths`` (B,) instead.
            training: enables dropout between layers.
            rng: the generator dropout masks are drawn from (default: the layer's own).
            keep_cache: False runs forward only (evaluation, scoring): no per-step caches are
                kept (a plain LSTM on the numba kernels runs a fused loop), the same outputs and
                states, and the returned cache is None.
        Returns:
            outputs (B, T, H_out), zero at padded steps; final_state in the layout of
            ``initial_state``; and the cache for :meth:`backward` (None without ``keep_cache``).
        """
        xp = self.xp
        tokens = folded = None
        if not isinstance(x, TokenInputs):
            x = check_layer_input(x, "x")  # lists as models take them; other libraries' arrays refused
        if isinstance(x, TokenInputs):
            tokens = self._check_tokens(x)
            folded = tokens.worth_folding(self.cells[0].gate_width)
            x = tokens.ids if folded else xp.take(tokens.table, tokens.ids, axis=0)
        elif isinstance(x, np.ndarray):
            check_finite(x, "x", "clean the inputs first", xp.dtype_name)  # 1e300 would be inf in float32
            x = xp.from_numpy(x)
        if not folded and (len(x.shape) != 3 or x.shape[2] != self.input_size):
            raise shape_error("x", f"(batch, time, {self.input_size})", x.shape)
        B, T = int(x.shape[0]), int(x.shape[1])
        if T < 1:
            raise ShapeError("x must have at least one time step")
        if B < 1:
            raise ShapeError("x holds no sequences (batch size 0); pass at least one")
        step_mask = self._time_major_mask(mask, lengths, B, T)
        initial_parts = self._state_parts(initial_state, B, check_values=True)
        cache = RecurrentCache(B, T, step_mask, {}, {}, tokens, bool(folded))
        final_parts: list[list] = [[] for _ in range(self.state_size)]
        if folded:  # layer 0 reads rows of the table: keep time-major ids (T, B)
            layer_input = TokenInputs(tokens.table, xp.permute_dims(tokens.ids, (1, 0)), True)
        else:
            layer_input = xp.permute_dims(x, (1, 0, 2))  # (T, B, D)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                state = tuple(
                    part[index] if part is not None else xp.zeros((B, self.hidden_size)) for part in initial_parts
                )
                out, state, dir_cache = self._run_direction(
                    layer, direction, layer_input, state, step_mask,
                    batch_major=layer == self.num_layers - 1 and self.num_directions == 1, keep_cache=keep_cache)
                cache.directions[(layer, direction)] = dir_cache
                outputs.append(out)
                for k in range(self.state_size):
                    final_parts[k].append(state[k])
            merged = (
                outputs[0]
                if len(outputs) == 1
                else (xp.concat(outputs, axis=2) if self.merge == "concat" else outputs[0] + outputs[1])
            )
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                drop_mask = self._dropout_mask(rng if rng is not None else self._dropout_rng, (T, B, self.output_size))
                cache.dropout_masks[layer] = drop_mask
                merged = merged * drop_mask
            layer_input = merged
        outputs = _relayout(xp, xp.permute_dims(layer_input, (1, 0, 2)), "row_major")  # (B, T, H_out)
        final_state = self._public_state([xp.stack(parts, axis=0) for parts in final_parts])
        return outputs, final_state, cache if keep_cache else None

    # --- backward ---------------------------------------------------------------------------
    def backward(
        self, d_outputs: Any, d_final_state: Any, cache: RecurrentCache, step_grads: dict | None = None
    ) -> tuple[Any, Any, dict]:
        """Backpropagation through time.

        Args:
            d_outputs: (B, T, H_out) dLoss/doutputs, or None when only the final state is used.
            d_final_state: dLoss/dfinal_state in the state layout, or None.
            step_grads: for inspection (e.g. :mod:`mlxrnn.models.gradflow`): a dict that is filled
                with ``{(layer, direction): [dL/dstate⟨t⟩ for t = 0 … T−1]}``, each item the state
                tuple ((B, H) arrays: (dh,) or (dh, dc)), the total gradient with respect to the
                state after step t (the carried one at padded steps) — through that step's output
                and through every later step. Costs one addition per step; None records nothing.
        Returns:
            (dx (B, T, D), d_initial_state in the state layout, grads keyed like ``params``);
            for :class:`TokenInputs` the first item is the table's gradient (V, D) instead.
        """
        xp = self.xp
        B, T, H = cache.batch_size, cache.time_steps, self.hidden_size
        if d_outputs is None:
            d_layer_out = xp.zeros((T, B, self.output_size))
        else:
            d_layer_out = xp.permute_dims(d_outputs, (1, 0, 2))
        d_final_parts = self._state_parts(d_final_state, B)
        grads: dict[str, Any] = {}
        d_initial: list[list] = [[None] * (self.num_layers * self.num_directions) for _ in range(self.state_size)]
        for layer in range(self.num_layers - 1, -1, -1):
            if layer in cache.dropout_masks:
                d_layer_out = d_layer_out * cache.dropout_masks[layer]
            d_layer_in = None
            for direction in range(self.num_directions):
                if self.num_directions == 2 and self.merge == "concat":
                    d_out = d_layer_out[:, :, direction * H : (direction + 1) * H]
                else:
                    d_out = d_layer_out
                index = layer * self.num_directions + direction
                d_state = tuple(part[index] if part is not None else xp.zeros((B, H)) for part in d_final_parts)
                record = None if step_grads is None else step_grads.setdefault((layer, direction), [None] * T)
                d_in, d_state0, dir_grads = self._backward_direction(
                    layer, direction, d_out, d_state, cache.directions[(layer, direction)], cache.mask, record
                )
                d_layer_in = d_in if d_layer_in is None else d_layer_in + d_in
                prefix = f"l{layer}.{DIRECTION_NAMES[direction]}."
                grads.update({prefix + name: value for name, value in dir_grads.items()})
                for k in range(self.state_size):
                    d_initial[k][index] = d_state0[k]
            d_layer_out = d_layer_in
        if cache.folded:
            d_x = d_layer_out  # (V, D): layer 0 already returned the table's gradient
        elif cache.tokens is not None:
            table = cache.tokens.table
            d_x = xp.scatter_add_rows(int(table.shape[0]), cache.tokens.ids, xp.permute_dims(d_layer_out, (1, 0, 2)))
        else:
            d_x = xp.permute_dims(d_layer_out, (1, 0, 2))
        d_initial_state = self._public_state([xp.stack(parts, axis=0) for parts in d_initial])
        return d_x, d_initial_state, {name: grads[name] for name in self.params}


class RNN(Recurrent):
    """Vanilla RNN layers: a⟨t⟩ = g(W_aa a⟨t−1⟩ + W_ax x⟨t⟩ + b_a), ``activation`` = "tanh" | "relu"."""

    cell_name = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 merge: str = "concat", dropout: float = 0.0, seed: int = 0, backend: Any = None,
                 dtype: str = "float32", *, activation: str = "tanh"):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, merge, dropout, seed, backend, dtype,
                         activation=activation)


class GRU(Recurrent):
    """GRU layers; ``variant`` = "full" (the notes'), "reset_after" (PyTorch/cuDNN) or "simple"."""

    cell_name = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 merge: str = "concat", dropout: float = 0.0, seed: int = 0, backend: Any = None,
                 dtype: str = "float32", *, variant: str = "full"):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, merge, dropout, seed, backend, dtype,
                         variant=variant)


class LSTM(Recurrent):
    """LSTM layers; ``peephole=True`` adds c⟨t−1⟩ to the update/forget gates and c⟨t⟩ to the output gate;
    ``forget_bias`` is the forget gate's initial bias."""

    cell_name = "lstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 merge: str = "concat", dropout: float = 0.0, seed: int = 0, backend: Any = None,
                 dtype: str = "float32", *, peephole: bool = False, forget_bias: float = 1.0):
        super().__init__(input_size, hidden_size, num_layers, bidirectional, merge, dropout, seed, backend, dtype,
                         peephole=peephole, forget_bias=forget_bias)


def make_recurrent(cell: str, input_size: int, hidden_size: int, **kwargs: Any) -> Recurrent:
    """Build recurrent layers of any registered cell by name ("rnn", "gru", "lstm", ...)."""
    return Recurrent(input_size, hidden_size, cell=cell, **kwargs)
