"""Recurrent cells: the math of one time step, forward and backward, in one place.

Every cell is written once against the array-backend protocol (``xp``), so the same code runs
on NumPy and on MLX. Conventions, shared by all cells:

* Row vectors: ``x`` is (B, D), the hidden state ``h`` is (B, H). The course notes write
  column vectors, a⟨t⟩ = g(W_aa a⟨t−1⟩ + W_ax x⟨t⟩ + b_a); here ``W_h = W_aaᵀ`` (H, G·H) and
  ``W_x = W_axᵀ`` (D, G·H), with the G gate blocks fused side by side.
* The input projection ``x_proj = x @ W_x + b`` (B, G·H) does not depend on the state, so the
  layer computes it for all time steps in one matmul and hands each step its slice.
  A cell's :meth:`step` only does the recurrent part.
* ``state`` is a tuple: ``(h,)`` for RNN and GRU, ``(h, c)`` for LSTM. ``state[0]`` is the
  output of the step.
* :meth:`step_backward` takes the gradient of the loss with respect to the new state and
  returns ``(d_x_proj, d_recurrent, d_prev_state)``: the gradient with respect to the input
  projection (from which the layer gets dW_x, db and dx with one matmul each over all steps),
  the gradient with respect to the recurrent pre-activations (from which
  :meth:`recurrent_grads` gets dW_h with one matmul over all steps), and the gradient flowing
  into the previous state.

Initialisation draws every parameter from one NumPy ``Generator`` in float64, so both backends
start from bit-identical weights after the cast to their dtype:
W_x, W_h ~ U(−1/√H, 1/√H) (as PyTorch does), biases 0, the LSTM forget-gate bias 1
(Jozefowicz et al., 2015), peephole weights ~ U(−1/√H, 1/√H).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError

Params = dict[str, Any]
Cache = dict[str, Any]


def check_forget_bias(forget_bias: Any) -> float:
    """The forget-gate bias option of the LSTM-like cells, as a float; a ConfigError unless finite."""
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float, np.floating, np.integer)) \
            or not np.isfinite(forget_bias):
        raise ConfigError(f"invalid cell_options: forget_bias must be a finite number, got {forget_bias!r}")
    return float(forget_bias)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], hidden_size: int) -> np.ndarray:
    bound = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-bound, bound, size=shape)


class Cell:
    """Base class: sizes, shared initialisation and the recurrent weight gradient.

    A subclass sets ``name`` (the registry key: ``--cell NAME``, ``make_recurrent(NAME, ...)``,
    the ``cell`` field of every model config and checkpoint), ``gate_names`` (its fused blocks,
    in order, as the notes name them) and ``state_size``; it implements :meth:`step` and
    :meth:`step_backward`, and is listed once with :func:`register_cell`.
    """

    name: str = ""
    #: the fused gate blocks, left to right, in the notes' letters (u: update, f: forget, ...)
    gate_names: tuple[str, ...] = ("c",)
    num_gates: int = 1
    state_size: int = 1  # number of arrays in the state tuple
    #: cache keys whose (T·B, H) stacks :meth:`recurrent_grads` multiplies with d_recurrent
    recurrent_input_keys: tuple[str, ...] = ("h_prev",)

    def __init__(self, input_size: int, hidden_size: int):
        for label, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)

    @property
    def gate_width(self) -> int:
        """G·H: the width of the fused pre-activations."""
        return self.num_gates * self.hidden_size

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw the parameters (float64 NumPy) from ``rng``: W_x (D, G·H), W_h (H, G·H), b (G·H,)."""
        H, GH = self.hidden_size, self.gate_width
        return {
            "W_x": _uniform(rng, (self.input_size, GH), H),
            "W_h": _uniform(rng, (H, GH), H),
            "b": np.zeros(GH),
        }

    def recurrent_grads(self, xp, params: Params, stacked: Cache, d_recurrent: Any) -> Params:
        """dW_h = Σ_t h⟨t−1⟩ᵀ d_recurrent⟨t⟩ as one GEMM; ``stacked`` holds (T·B, ·) cache stacks."""
        h_prev = stacked["h_prev"]
        return {"W_h": xp.matmul(xp.permute_dims(h_prev, (1, 0)), d_recurrent)}

    def sigmoid_gates(self, cache: Cache) -> dict[str, Any]:
        """This step's sigmoid gate values by gate name, each (B, H), read from :meth:`step`'s cache.

        For diagnostics (gate saturation in :mod:`mlxrnn.models.gradflow`); ungated cells have none.
        """
        return {}



class RNNCell(Cell):
    """Vanilla (Elman) RNN cell.

    a⟨t⟩ = g(W_aa a⟨t−1⟩ + W_ax x⟨t⟩ + b_a),  g = tanh or ReLU.

    Row form: ``h = g(x_proj + h_prev @ W_h)`` with x_proj (B, H), h_prev (B, H), W_h (H, H).
    """

    name = "rnn"
    gate_names = ("c",)
    num_gates = 1
    state_size = 1

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh"):
        super().__init__(input_size, hidden_size)
        if activation not in ("tanh", "relu"):
            raise ConfigError(f"RNN activation must be 'tanh' or 'relu', got {activation!r}")
        self.activation = activation


    def step(self, xp, params: Params, x_proj, state: tuple) -> tuple[tuple, Cache]:
        """One step: projected input x_proj (B, H) and state (h,) → ((h,), cache for :meth:`step_backward`)."""
        (h_prev,) = state
        rec = xp.matmul(h_prev, params["W_h"])
        h = xp.kernels.tanh_forward(rec, x_proj) if self.activation == "tanh" else xp.maximum(x_proj + rec, 0.0)
        return (h,), {"h_prev": h_prev, "h": h}

    def step_backward(self, xp, params: Params, cache: Cache, d_state: tuple):
        """BPTT through one step: d(new state) → (d x_proj, d(previous state))."""
        (d_h,) = d_state
        h = cache["h"]
        if self.activation == "tanh":
            d_pre = xp.kernels.tanh_backward(d_h, h)  # tanh' = 1 − tanh²
        else:
            d_pre = d_h * (h > 0)  # ReLU' = 1 where the output is positive (0 at the kink)
        d_h_prev = xp.matmul(d_pre, xp.permute_dims(params["W_h"], (1, 0)))
        return d_pre, d_pre, (d_h_prev,)


class GRUCell(Cell):
    """Gated recurrent unit in three variants; gate blocks are ordered [u, r, c].

    ``variant="full"`` (the notes' full GRU; Cho et al. 2014), c⟨t−1⟩ = a⟨t−1⟩ = h_prev:
        Γ_u = σ(W_u [c⟨t−1⟩, x⟨t⟩] + b_u)                 update gate
        Γ_r = σ(W_r [c⟨t−1⟩, x⟨t⟩] + b_r)                 relevance (reset) gate
        c̃⟨t⟩ = tanh(W_c [Γ_r ∗ c⟨t−1⟩, x⟨t⟩] + b_c)      reset applied *before* the matmul
        c⟨t⟩ = Γ_u ∗ c̃⟨t⟩ + (1 − Γ_u) ∗ c⟨t−1⟩

    ``variant="reset_after"`` (PyTorch, cuDNN, Keras ``reset_after=True``): the reset gate
    multiplies the recurrent projection *after* the matmul, which has its own bias b_hn (H,):
        c̃⟨t⟩ = tanh(x W_xc + b_c + Γ_r ∗ (c⟨t−1⟩ W_hc + b_hn))
    (PyTorch writes h = (1 − z) n + z h_prev, i.e. its z is our 1 − Γ_u.)

    ``variant="simple"`` (the notes' simplified GRU, update gate only; blocks [u, c]):
        c̃⟨t⟩ = tanh(W_c [c⟨t−1⟩, x⟨t⟩] + b_c),  Γ_u = σ(W_u [c⟨t−1⟩, x⟨t⟩] + b_u)

    Shapes: x_proj (B, G·H) with G = 3 (2 for simple), W_h (H, G·H), state (h,) with h (B, H).
    """

    name = "gru"
    gate_names = ("u", "r", "c")
    num_gates = 3
    state_size = 1
    VARIANTS = ("full", "reset_after", "simple")

    def __init__(self, input_size: int, hidden_size: int, variant: str = "full"):
        super().__init__(input_size, hidden_size)
        if variant not in self.VARIANTS:
            raise ConfigError(f"GRU variant must be one of {', '.join(self.VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.num_gates = 2 if variant == "simple" else 3
        self.gate_names = ("u", "c") if variant == "simple" else ("u", "r", "c")
        self.recurrent_input_keys = ("h_prev", "reset_h") if variant == "full" else ("h_prev",)


    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        params = super().init_params(rng)
        if self.variant == "reset_after":
            params["b_hn"] = np.zeros(self.hidden_size)
        return params

    def step(self, xp, params: Params, x_proj, state: tuple) -> tuple[tuple, Cache]:
        """One step: projected input x_proj (B, 3H) and state (h,) → ((h,), cache for :meth:`step_backward`)."""
        (h_prev,) = state
        H = self.hidden_size
        W_h = params["W_h"]
        if self.variant == "simple":
            pre = x_proj + xp.matmul(h_prev, W_h)
            u, cand = xp.sigmoid(pre[:, :H]), xp.tanh(pre[:, H:])
            cache = {"h_prev": h_prev, "u": u, "cand": cand}
        elif self.variant == "full":
            update_reset = xp.sigmoid(x_proj[:, : 2 * H] + xp.matmul(h_prev, W_h[:, : 2 * H]))  # [u, r]
            u, r = update_reset[:, :H], update_reset[:, H:]
            reset_h = r * h_prev
            cand = xp.tanh(x_proj[:, 2 * H :] + xp.matmul(reset_h, W_h[:, 2 * H :]))
            cache = {"h_prev": h_prev, "update_reset": update_reset, "cand": cand, "reset_h": reset_h}
        else:  # reset_after: all the step's element-wise work is one fused kernel
            h, update_reset, cand, rec_cand = xp.kernels.gru_forward(
                xp.matmul(h_prev, W_h), x_proj, params["b_hn"], h_prev)
            return (h,), {"h_prev": h_prev, "update_reset": update_reset, "cand": cand, "rec_cand": rec_cand}
        # h = u ∗ c̃ + (1 − u) ∗ h_prev, written as h_prev + u ∗ (c̃ − h_prev): two passes, not four.
        cache["cand_minus_h"] = cand - h_prev
        h = h_prev + u * cache["cand_minus_h"]
        return (h,), cache

    def sigmoid_gates(self, cache: Cache) -> dict[str, Any]:
        if self.variant == "simple":
            return {"u": cache["u"]}
        update_reset, H = cache["update_reset"], self.hidden_size
        return {"u": update_reset[:, :H], "r": update_reset[:, H:]}

    def step_backward(self, xp, params: Params, cache: Cache, d_state: tuple):
        """BPTT through one step: d(new state) → (d x_proj, d(previous state))."""
        (d_h,) = d_state
        H = self.hidden_size
        W_h = params["W_h"]
        if self.variant == "reset_after":
            d_x_proj, d_recurrent, d_h_prev = xp.kernels.gru_backward(
                d_h, cache["update_reset"], cache["cand"], cache["rec_cand"], cache["h_prev"])
            d_h_prev = d_h_prev + xp.matmul(d_recurrent, xp.permute_dims(W_h, (1, 0)))
            return d_x_proj, d_recurrent, (d_h_prev,)
        cand = cache["cand"]
        u = cache["u"] if self.variant == "simple" else cache["update_reset"][:, :H]
        d_h_u = d_h * u
        d_h_prev = d_h - d_h_u  # ∂h/∂h_prev through the (1 − u) path
        d_cand_pre = d_h_u * (1.0 - cand * cand)
        if self.variant == "simple":
            d_u_pre = d_h * cache["cand_minus_h"] * u * (1.0 - u)
            d_x_proj = xp.concat([d_u_pre, d_cand_pre], axis=1)
            d_h_prev = d_h_prev + xp.matmul(d_x_proj, xp.permute_dims(W_h, (1, 0)))
            return d_x_proj, d_x_proj, (d_h_prev,)
        # full
        update_reset = cache["update_reset"]
        u_r_slope = update_reset * (1.0 - update_reset)  # σ' for [u, r] in one pass
        d_u_pre = d_h * cache["cand_minus_h"] * u_r_slope[:, :H]
        r = update_reset[:, H:]
        d_reset_h = xp.matmul(d_cand_pre, xp.permute_dims(W_h[:, 2 * H :], (1, 0)))
        d_r_pre = d_reset_h * cache["h_prev"] * u_r_slope[:, H:]
        d_gates = xp.concat([d_u_pre, d_r_pre], axis=1)
        d_h_prev = d_h_prev + d_reset_h * r + xp.matmul(d_gates, xp.permute_dims(W_h[:, : 2 * H], (1, 0)))
        d_x_proj = xp.concat([d_gates, d_cand_pre], axis=1)
        # The candidate block's recurrent input is r ∗ h_prev; recurrent_grads knows that.
        return d_x_proj, d_x_proj, (d_h_prev,)

    def recurrent_grads(self, xp, params: Params, stacked: Cache, d_recurrent: Any) -> Params:
        H = self.hidden_size
        h_prev_t = xp.permute_dims(stacked["h_prev"], (1, 0))
        if self.variant == "full":
            reset_h_t = xp.permute_dims(stacked["reset_h"], (1, 0))
            d_W_h = xp.concat(
                [xp.matmul(h_prev_t, d_recurrent[:, : 2 * H]), xp.matmul(reset_h_t, d_recurrent[:, 2 * H :])],
                axis=1,
            )
            return {"W_h": d_W_h}
        grads = {"W_h": xp.matmul(h_prev_t, d_recurrent)}
        if self.variant == "reset_after":
            grads["b_hn"] = xp.sum(d_recurrent[:, 2 * H :], axis=0)
        return grads


class LSTMCell(Cell):
    """Long short-term memory cell, optionally with peephole connections; blocks [u, f, c̃, o].

        Γ_u = σ(W_u [a⟨t−1⟩, x⟨t⟩] + b_u (+ p_u ∗ c⟨t−1⟩))     update (input) gate
        Γ_f = σ(W_f [a⟨t−1⟩, x⟨t⟩] + b_f (+ p_f ∗ c⟨t−1⟩))     forget gate, b_f initialised to 1
        c̃⟨t⟩ = tanh(W_c [a⟨t−1⟩, x⟨t⟩] + b_c)                  candidate cell
        c⟨t⟩ = Γ_u ∗ c̃⟨t⟩ + Γ_f ∗ c⟨t−1⟩
        Γ_o = σ(W_o [a⟨t−1⟩, x⟨t⟩] + b_o (+ p_o ∗ c⟨t⟩))        output gate (peephole sees c⟨t⟩)
        a⟨t⟩ = Γ_o ∗ tanh(c⟨t⟩)

    Peepholes (Gers & Schmidhuber, 2000) are diagonal: p_u, p_f, p_o are (H,) vectors.
    The gate order matches PyTorch's (i, f, g, o). Shapes: x_proj (B, 4H), W_h (H, 4H),
    state (h, c) with h, c (B, H).
    """

    name = "lstm"
    gate_names = ("u", "f", "c", "o")
    num_gates = 4
    state_size = 2

    def __init__(self, input_size: int, hidden_size: int, peephole: bool = False, forget_bias: float = 1.0):
        super().__init__(input_size, hidden_size)
        if not isinstance(peephole, (bool, np.bool_)):  # "no" would be truthy: peepholes nobody asked for
            raise ConfigError(f"LSTM peephole must be true or false, got {peephole!r:.40}")
        self.peephole = bool(peephole)
        self.forget_bias = check_forget_bias(forget_bias)

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        params = super().init_params(rng)
        H = self.hidden_size
        params["b"][H : 2 * H] = self.forget_bias
        if self.peephole:
            for name in ("p_u", "p_f", "p_o"):
                params[name] = _uniform(rng, (H,), H)
        return params

    def step(self, xp, params: Params, x_proj, state: tuple) -> tuple[tuple, Cache]:
        """One step: projected input x_proj (B, 4H) and state (h, c) → ((h, c), cache for :meth:`step_backward`)."""
        h_prev, c_prev = state
        if not self.peephole:  # all the step's element-wise work is one fused kernel
            h, c, gates, tanh_c = xp.kernels.lstm_forward(xp.matmul(h_prev, params["W_h"]), x_proj, c_prev)
            return (h, c), {"h_prev": h_prev, "c_prev": c_prev, "gates": gates, "tanh_c": tanh_c}
        # Peepholes: Γ_u and Γ_f also see c⟨t−1⟩, and Γ_o sees c⟨t⟩, so it waits for the new cell.
        H = self.hidden_size
        pre = x_proj + xp.matmul(h_prev, params["W_h"])
        peep_u, peep_f = params["p_u"] * c_prev, params["p_f"] * c_prev
        update_forget = xp.concat([xp.sigmoid(pre[:, :H] + peep_u), xp.sigmoid(pre[:, H : 2 * H] + peep_f)], axis=1)
        u, f = update_forget[:, :H], update_forget[:, H:]
        cand = xp.tanh(pre[:, 2 * H : 3 * H])
        c = f * c_prev + u * cand
        o = xp.sigmoid(pre[:, 3 * H :] + params["p_o"] * c)
        tanh_c = xp.tanh(c)
        h = o * tanh_c
        cache = {"h_prev": h_prev, "c_prev": c_prev, "update_forget": update_forget, "cand": cand, "o": o, "c": c,
                 "tanh_c": tanh_c}
        return (h, c), cache

    def sigmoid_gates(self, cache: Cache) -> dict[str, Any]:
        H = self.hidden_size
        if "gates" in cache:  # the fused kernels' cache: [Γ_u, Γ_f, c̃, Γ_o] side by side (B, 4H)
            gates = cache["gates"]
            return {"u": gates[:, :H], "f": gates[:, H : 2 * H], "o": gates[:, 3 * H :]}
        update_forget = cache["update_forget"]
        return {"u": update_forget[:, :H], "f": update_forget[:, H:], "o": cache["o"]}

    def step_backward(self, xp, params: Params, cache: Cache, d_state: tuple):
        """BPTT through one step: d(new state) → (d x_proj, d(previous state))."""
        d_h, d_c = d_state
        if not self.peephole:
            d_pre, d_c_prev = xp.kernels.lstm_backward(d_h, d_c, cache["gates"], cache["tanh_c"], cache["c_prev"])
            return d_pre, d_pre, (xp.matmul(d_pre, xp.permute_dims(params["W_h"], (1, 0))), d_c_prev)
        H = self.hidden_size
        update_forget, cand, o, tanh_c = (cache[k] for k in ("update_forget", "cand", "o", "tanh_c"))
        d_o_pre = d_h * tanh_c * o * (1.0 - o)
        d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c) + d_o_pre * params["p_o"]
        # dL/d[Γ_u, Γ_f] = d_c ∗ [c̃, c⟨t−1⟩], times σ' of both gates in one pass
        d_uf_pre = xp.concat([d_c * cand, d_c * cache["c_prev"]], axis=1) * update_forget * (1.0 - update_forget)
        d_cand_pre = d_c * update_forget[:, :H] * (1.0 - cand * cand)
        d_c_prev = d_c * update_forget[:, H:] + d_uf_pre[:, :H] * params["p_u"] + d_uf_pre[:, H:] * params["p_f"]
        d_pre = xp.concat([d_uf_pre, d_cand_pre, d_o_pre], axis=1)
        d_h_prev = xp.matmul(d_pre, xp.permute_dims(params["W_h"], (1, 0)))
        return d_pre, d_pre, (d_h_prev, d_c_prev)

    @property
    def recurrent_input_keys(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("h_prev", "c_prev", "c") if self.peephole else ("h_prev",)

    def recurrent_grads(self, xp, params: Params, stacked: Cache, d_recurrent: Any) -> Params:
        grads = super().recurrent_grads(xp, params, stacked, d_recurrent)
        if self.peephole:
            H = self.hidden_size
            grads["p_u"] = xp.sum(d_recurrent[:, :H] * stacked["c_prev"], axis=0)
            grads["p_f"] = xp.sum(d_recurrent[:, H : 2 * H] * stacked["c_prev"], axis=0)
            grads["p_o"] = xp.sum(d_recurrent[:, 3 * H :] * stacked["c"], axis=0)
        return grads


#: The cell registry: name -> class. Layers, models, the CLI's ``--cell`` choices, the bench and
#: interop all read it, so a new cell is one class plus one :func:`register_cell` line (and one
#: line in :data:`mlxrnn.testing.CELL_VARIANTS`, which a test checks).
CELLS: dict[str, type[Cell]] = {}


def register_cell(cls: type[Cell]) -> type[Cell]:
    """Add ``cls`` to :data:`CELLS` under ``cls.name``; returns it, so it also works as a decorator."""
    if not cls.name or cls.name in CELLS:
        raise ConfigError(f"cell class {cls.__name__} needs a unique, non-empty name (got {cls.name!r})")
    CELLS[cls.name] = cls
    return cls


for _cell_class in (LSTMCell, GRUCell, RNNCell):  # the default cell first
    register_cell(_cell_class)


def cell_class(name: str) -> type[Cell]:
    """The registered class for ``name``, or a ConfigError listing the registered names."""
    if name not in CELLS:
        raise ConfigError(f"unknown cell {name!r}: choose one of {', '.join(CELLS)}")
    return CELLS[name]


def cell_option_names(name: str) -> tuple[str, ...]:
    """The options a cell takes besides its sizes, read from its constructor's signature."""
    parameters = inspect.signature(cell_class(name).__init__).parameters
    return tuple(p for p in parameters if p not in ("self", "input_size", "hidden_size"))


def make_cell(kind: str, input_size: int, hidden_size: int, **options: Any) -> Cell:
    """Build a registered cell by name, e.g. ``make_cell("lstm", D, H, peephole=True)``."""
    cls = cell_class(kind)
    unknown = sorted(str(k) for k in options if k not in cell_option_names(kind))
    if unknown:
        valid = ", ".join(cell_option_names(kind)) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for cell {kind!r}; valid: {valid}")
    return cls(input_size, hidden_size, **options)
