"""minGRU and minLSTM (Feng et al., "Were RNNs All We Needed?", arXiv:2410.01201, 2024).

Both drop the previous state from every gate and from the candidate, so all of them come from
the input alone — one GEMM for all T steps (the layer's hoisted projection) — and the state
update becomes the first-order linear recurrence of mlxrnn/nn/scan.py. In the notes' notation
(row vectors, x⟨t⟩ (B, D), c⟨t⟩ = a⟨t⟩ (B, H), fused blocks of W_x (D, G·H) and b (G·H,)):

minGRU (blocks [u, c], G = 2), the notes' simplified GRU without c⟨t−1⟩ in its gate and
candidate (the paper's z_t is our Γ_u; no tanh on the candidate):
    Γ_u = σ(x⟨t⟩ W_u + b_u)
    c̃⟨t⟩ = x⟨t⟩ W_c + b_c
    c⟨t⟩ = (1 − Γ_u) ∗ c⟨t−1⟩ + Γ_u ∗ c̃⟨t⟩

minLSTM (blocks [u, f, c], G = 3; no output gate, no tanh, the cell state is the output):
    Γ_u = σ(x⟨t⟩ W_u + b_u),  Γ_f = σ(x⟨t⟩ W_f + b_f)      input and forget gates
    Γ_f' = Γ_f / (Γ_f + Γ_u),  Γ_u' = Γ_u / (Γ_f + Γ_u)     normalised: Γ_f' + Γ_u' = 1
    c̃⟨t⟩ = x⟨t⟩ W_c + b_c
    c⟨t⟩ = Γ_f' ∗ c⟨t−1⟩ + Γ_u' ∗ c̃⟨t⟩
The normalisation makes every state a convex combination of c⟨0⟩ and the candidates, so the
scale of c does not grow with T (the paper's reason for it). Γ_u' is computed as
σ(log Γ_u − log Γ_f) = σ(softplus(−k_f) − softplus(−k_u)) from the pre-activations k: the
ratio itself is 0/0 once both sigmoids round to 0 (k < −17 in float32).

So both cells are h⟨t⟩ = (1 − u) ∗ h⟨t−1⟩ + u ∗ c̃⟨t⟩ with an update weight u ∈ (0, 1) — u = Γ_u
(minGRU) or Γ_u' (minLSTM) — and differ only in how u comes from the projection
(:meth:`MinimalCell.gates`). That one definition serves both evaluation modes:

* :meth:`MinimalCell.step` — one step, for sampling and carried state (``Recurrent.step``),
  with :meth:`MinimalCell.step_backward` its per-step derivative;
* :meth:`MinimalCell.sequence_forward` / :meth:`MinimalCell.sequence_backward` — the whole
  sequence: gates for every step in one element-wise pass, then :func:`linear_scan` for the
  states and for the adjoint. :class:`~mlxrnn.nn.layers.Recurrent` uses these when a cell has
  them, instead of its per-step loop.

The paper's log-space variant also passes c̃ through g(x) = x + ½ (x ≥ 0), σ(x) (x < 0) so that
log c̃ exists; our scan needs no logarithms (see mlxrnn/nn/scan.py), so c̃ stays linear as in
the paper's sequential equations. No peer framework (PyTorch, Keras, mlx.nn) has these cells:
interop refuses them and the benchmark's peer rows skip them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.nn.cells import Cache, Cell, Params, _uniform, check_forget_bias, register_cell
from mlxrnn.nn.scan import linear_scan


def _softplus(xp: Any, x: Any) -> Any:
    """log(1 + eˣ) without overflow: max(x, 0) + log1p(e^−|x|)."""
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


class MinimalCell(Cell):
    """Shared part of minGRU and minLSTM: h⟨t⟩ = (1 − u⟨t⟩) ∗ h⟨t−1⟩ + u⟨t⟩ ∗ c̃⟨t⟩.

    A subclass defines :meth:`gates`, the projection x_proj (..., G·H) -> (the update weight u,
    the candidate c̃), each (..., H), and :meth:`gates_backward`, dL/du and dL/dc̃ -> d x_proj.
    The backward recomputes the gates' derivatives from x_proj and u, so a forward pass without
    training (evaluation, sampling) does not pay for them. There is no recurrent weight (no W_h).
    """

    state_size = 1
    recurrent_input_keys: tuple[str, ...] = ()  # no W_h: nothing to multiply d_recurrent with

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """W_x (D, G·H) ~ U(±1/√H) as for every cell, b (G·H,) = 0."""
        return {"W_x": _uniform(rng, (self.input_size, self.gate_width), self.hidden_size),
                "b": np.zeros(self.gate_width)}

    def gates(self, xp: Any, x_proj: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def gates_backward(self, xp: Any, x_proj: Any, update: Any, d_update: Any, d_cand: Any) -> Any:
        raise NotImplementedError

    def recurrent_grads(self, xp, params: Params, stacked: Cache, d_recurrent: Any) -> Params:
        return {}  # no recurrent weights

    # --- one step ------------------------------------------------------------------------
    def step(self, xp, params: Params, x_proj, state: tuple) -> tuple[tuple, Cache]:
        """x_proj (B, G·H), state (h_prev (B, H),) -> ((h,), cache)."""
        (h_prev,) = state
        update, cand = self.gates(xp, x_proj)
        h = (1.0 - update) * h_prev + update * cand
        return (h,), {"h_prev": h_prev, "x_proj": x_proj, "update": update, "cand": cand}

    def step_backward(self, xp, params: Params, cache: Cache, d_state: tuple):
        """dh -> (d x_proj, the same array as d_recurrent, (dh_prev,)): ∂h/∂u = c̃ − h_prev."""
        (d_h,) = d_state
        update = cache["update"]
        d_update = d_h * (cache["cand"] - cache["h_prev"])
        d_x_proj = self.gates_backward(xp, cache["x_proj"], update, d_update, d_h * update)
        return d_x_proj, d_x_proj, (d_h * (1.0 - update),)

    # --- the whole sequence --------------------------------------------------------------
    def sequence_forward(self, xp, params: Params, x_proj, state: tuple, mask, reverse: bool = False):
        """All T steps at once.

        Args:
            x_proj: (T, B, G·H) the input projection of every step, in time order.
            state: (h0 (B, H),) the state before the first processed step.
            mask: (T, B, 1) of 0/1 (1: valid step) or None. A padded step keeps the state
                (its u is multiplied by 0) and outputs 0, as in the layer's per-step loop.
            reverse: process t = T−1 … 0 (the backward direction of a bidirectional layer).
        Returns:
            (outputs (T, B, H) in time order, (h_final,), cache for :meth:`sequence_backward`).

        Cost: the gates in one element-wise pass over (T, B, G·H), then one :func:`linear_scan`
        over (T, B, H); no matrix product (the projection was hoisted by the layer).
        """
        fused = getattr(getattr(xp, "kernels", None), "minimal_forward", None)
        if fused is not None:  # one compiled pass (numba: mlxrnn/backend/numba_minimal.py), same math
            (h0,) = state
            h = fused(self.name, x_proj, h0, mask, reverse)  # (B, T, H): states in time order
            states = xp.permute_dims(h, (1, 0, 2))
            outputs = states if mask is None else mask * states
            final = states[0] if reverse else states[-1]
            cache = {"fused": True, "h": h, "h0": h0, "x_proj": x_proj, "mask": mask, "reverse": reverse}
            return outputs, (final,), cache
        if reverse:  # work in processing order; flip back at the end
            x_proj = xp.flip(x_proj, 0)
            mask = None if mask is None else xp.flip(mask, 0)
        (h0,) = state
        update, cand = self.gates(xp, x_proj)
        used = update if mask is None else mask * update  # padded steps: h⟨t⟩ = h⟨t−1⟩
        states = linear_scan(xp, 1.0 - used, used * cand, h0, include_initial=True)  # (T + 1, B, H): h0 first
        h = states[1:]
        outputs = h if mask is None else mask * h
        cache = {"states": states, "x_proj": x_proj, "update": update, "cand": cand, "mask": mask,
                 "reverse": reverse}
        return (xp.flip(outputs, 0) if reverse else outputs), (h[-1],), cache

    def sequence_backward(self, xp, params: Params, cache: Cache, d_outputs, d_state: tuple, record=None):
        """The adjoint of :meth:`sequence_forward`, also a linear scan (run backwards in time).

        With δ⟨t⟩ = dL/dh⟨t⟩ in processing order, g⟨t⟩ = m⟨t⟩ ∗ dL/dy⟨t⟩ and a⟨t⟩ = 1 − m⟨t⟩ u⟨t⟩:
            δ⟨t⟩ = a⟨t+1⟩ ∗ δ⟨t+1⟩ + g⟨t⟩,   δ⟨T−1⟩ = g⟨T−1⟩ + dL/dh_final
            dL/du⟨t⟩ = m⟨t⟩ ∗ δ⟨t⟩ ∗ (c̃⟨t⟩ − h⟨t−1⟩),   dL/dc̃⟨t⟩ = m⟨t⟩ ∗ δ⟨t⟩ ∗ u⟨t⟩,   dL/dh0 = a⟨0⟩ ∗ δ⟨0⟩

        Args:
            d_outputs: (T, B, H) dL/doutputs in time order; d_state: (dL/dh_final (B, H),).
            record: None, or a list of T slots that receives (δ⟨t⟩,) in time order: the total
                gradient with respect to the state after step t (see ``Recurrent.backward``'s
                ``step_grads``).
        Returns:
            (d x_proj (T·B, G·H), rows t·B + b in time order; (dL/dh0 (B, H),)).
        """
        if cache.get("fused"):
            d_x_proj, d_h0, deltas = xp.kernels.minimal_backward(
                self.name, cache["x_proj"], cache["h0"], cache["h"], cache["mask"], cache["reverse"], d_outputs,
                d_state[0], record=record is not None)
            if record is not None:
                for t in range(int(deltas.shape[0])):
                    record[t] = (deltas[t],)
            steps, batch = int(d_x_proj.shape[0]), int(d_x_proj.shape[1])
            return xp.reshape(d_x_proj, (steps * batch, self.gate_width)), (d_h0,)
        states, update, mask = cache["states"], cache["update"], cache["mask"]
        steps, batch = int(update.shape[0]), int(update.shape[1])
        if cache["reverse"]:
            d_outputs = xp.flip(d_outputs, 0)
        used = update if mask is None else mask * update
        d_direct = d_outputs if mask is None else mask * d_outputs
        retain = 1.0 - used  # a⟨t⟩
        # δ⟨T−1⟩ = g⟨T−1⟩ + dL/dh_final, then the scan over t = T−2 … 0 with a⟨t+1⟩ = retain[1:]
        delta = linear_scan(xp, retain[1:], d_direct[:-1], d_direct[-1] + d_state[0], reverse=True,
                            include_initial=True)  # (T, B, H)
        if record is not None:
            in_time_order = xp.flip(delta, 0) if cache["reverse"] else delta
            for t in range(steps):
                record[t] = (in_time_order[t],)
        d_used = delta * (cache["cand"] - states[:-1])  # states[:-1] = h⟨t−1⟩
        d_update = d_used if mask is None else mask * d_used
        d_x_proj = self.gates_backward(xp, cache["x_proj"], update, d_update, delta * used)
        if cache["reverse"]:
            d_x_proj = xp.flip(d_x_proj, 0)
        return xp.reshape(d_x_proj, (steps * batch, self.gate_width)), (retain[0] * delta[0],)


class MinGRUCell(MinimalCell):
    """minGRU: u = Γ_u = σ(k_u), c̃ = x_proj's candidate block; blocks [u, c] (see the module doc).

    Shapes: x_proj (..., 2H), W_x (D, 2H), b (2H,), state (h,) with h (B, H).
    """

    name = "mingru"
    gate_names = ("u", "c")
    num_gates = 2

    def gates(self, xp, x_proj):
        H = self.hidden_size
        return xp.sigmoid(x_proj[..., :H]), x_proj[..., H:]

    def gates_backward(self, xp, x_proj, update, d_update, d_cand):
        return xp.concat([d_update * update * (1.0 - update), d_cand], axis=-1)  # σ' = σ (1 − σ)


class MinLSTMCell(MinimalCell):
    """minLSTM: u = Γ_u' = Γ_u / (Γ_f + Γ_u); blocks [u, f, c] (see the module doc).

    ``forget_bias`` initialises b_f (1, as for our LSTM), so a fresh cell leans towards keeping
    its state: Γ_f' = σ(1)/(σ(1) + σ(0)) ≈ 0.59 at zero input.
    Shapes: x_proj (..., 3H), W_x (D, 3H), b (3H,), state (h,) with h (B, H).
    """

    name = "minlstm"
    gate_names = ("u", "f", "c")
    num_gates = 3

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0):
        super().__init__(input_size, hidden_size)
        self.forget_bias = check_forget_bias(forget_bias)

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        params = super().init_params(rng)
        params["b"][self.hidden_size : 2 * self.hidden_size] = self.forget_bias
        return params

    def gates(self, xp, x_proj):
        H = self.hidden_size
        k_u, k_f = x_proj[..., :H], x_proj[..., H : 2 * H]
        # u = Γ_u / (Γ_f + Γ_u) = σ(log Γ_u − log Γ_f), log σ(k) = −softplus(−k)
        return xp.sigmoid(_softplus(xp, -k_f) - _softplus(xp, -k_u)), x_proj[..., 2 * H :]

    def gates_backward(self, xp, x_proj, update, d_update, d_cand):
        H = self.hidden_size
        d_logit = d_update * update * (1.0 - update)  # σ' of log Γ_u − log Γ_f
        # ∂(log Γ_u − log Γ_f)/∂k_u = 1 − Γ_u = σ(−k_u);  ∂/∂k_f = −σ(−k_f)
        d_k_u = d_logit * xp.sigmoid(-x_proj[..., :H])
        d_k_f = -(d_logit * xp.sigmoid(-x_proj[..., H : 2 * H]))
        return xp.concat([d_k_u, d_k_f, d_cand], axis=-1)


register_cell(MinGRUCell)
register_cell(MinLSTMCell)
