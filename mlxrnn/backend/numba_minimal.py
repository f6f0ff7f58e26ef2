"""minGRU and minLSTM over a whole sequence, compiled with numba: one pass forward, one backward.

The reference (mlxrnn/nn/min_cells.py with mlxrnn/nn/scan.py) computes the gates for every step
in several element-wise passes over (T, B, G·H) arrays, then runs the linear scan, then (in
backward) the adjoint scan and the gates' derivatives, each a separate pass: about 15 NumPy
passes over T·B·H elements per direction. For a matched-size model those passes, not the GEMMs,
were 80% of a training step (8192 tokens × H = 1272: 0.6 s, of which GEMMs ≈ 0.1 s). Here each
(b, t) row is read once and written once, the gates never reach memory, and the state is the
previous row of the output, so a step costs what reading its inputs and writing its outputs
costs.

Same math, same names as the reference (processing order; m⟨t⟩ the 0/1 mask, 1 without one):
    u⟨t⟩ = σ(k_u)  (minGRU)   or   σ(k_u) / (σ(k_f) + σ(k_u))  (minLSTM),   c̃⟨t⟩ = x_proj's last block
    h⟨t⟩ = h⟨t−1⟩ + m⟨t⟩ u⟨t⟩ (c̃⟨t⟩ − h⟨t−1⟩)
    δ⟨t⟩ = (1 − m⟨t+1⟩ u⟨t+1⟩) δ⟨t+1⟩ + m⟨t⟩ dL/dy⟨t⟩,   δ after the last step = dL/dh_final
    dL/du = m δ (c̃ − h⟨t−1⟩),  dL/dc̃ = m u δ,  dL/dh0 = (1 − m⟨0⟩ u⟨0⟩) δ⟨0⟩
with dL/dk from dL/du as in :class:`~mlxrnn.nn.min_cells.MinGRUCell` / ``MinLSTMCell``.

Numerics: minGRU's σ is the LSTM kernels' 0.5 + 0.5·tanh(k/2) (float32 tanh: a rational
approximation, error < 4e-7 absolute). minLSTM's ratio needs σ's *relative* accuracy when both
gates are small, so it uses u = (1 + e^−k_f) / (2 + e^−k_u + e^−k_f) (the ratio of the sigmoids,
two exponentials that the backward's σ(−k) reuse), and where that sum overflows (both k below
≈ −88 in float32) the limit σ(k_u − k_f), never inf/inf. The u⟨t⟩ gates are recomputed in
backward rather than stored: cheaper than a (T, B, H) write and read.

Layout: any strides work; the fast case, which the layer gives, is x_proj (T, B, G·H) and
dL/dy (T, B, H) row-major per (t, b) row, states stored as (B, T, H) so that the layer's output
(B, T, H) needs no copy. Loops run b, then t (the recurrence), then j (contiguous, vectorised).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .numba_scalar import JIT as _JIT
from .numba_scalar import tanh as _tanh

MINGRU, MINLSTM = 0, 1
KINDS = {"mingru": MINGRU, "minlstm": MINLSTM}


@njit(inline="always")
def _minlstm_gate(k_u, k_f, one):
    """minLSTM's u = σ(k_u) / (σ(k_u) + σ(k_f)) and the exponentials e^−k_u, e^−k_f it used.

    u = (1 + e^−k_f) / (2 + e^−k_u + e^−k_f): two exponentials (the backward's σ(−k) reuse them),
    relative accuracy kept when both gates are tiny; where the sum overflows (both k below ≈ −88
    in float32) it takes the limit σ(k_u − k_f), never inf/inf. ``one`` is 1 in the arrays' dtype.
    """
    e_u, e_f = math.exp(-k_u), math.exp(-k_f)
    total = one + one + e_u + e_f
    if total < math.inf:
        return (one + e_f) / total, e_u, e_f
    return one / (one + math.exp(k_f - k_u)), e_u, e_f


@njit(**_JIT)
def _update_row(kind, x_row, H, out):
    """out[j] = u for one (t, b) row of x_proj (G·H,): σ(k_u) for minGRU, :func:`_minlstm_gate` for minLSTM."""
    one, half = x_row.dtype.type(1.0), x_row.dtype.type(0.5)
    if kind == MINGRU:
        for j in range(H):
            out[j] = half + half * _tanh(half * x_row[j])
    else:
        for j in range(H):
            out[j] = _minlstm_gate(x_row[j], x_row[H + j], one)[0]


@njit(inline="always")
def _step_and_previous(h0, h, b, s, T, reverse):
    """The time index of processing position ``s`` and the state before it: (t, row (H,) of h0 or h)."""
    t = T - 1 - s if reverse else s
    if s == 0:
        return t, h0[b]
    return t, (h[b, t + 1] if reverse else h[b, t - 1])


def _forward(kind, x_proj, h0, mask, reverse, h):
    """x_proj (T, B, G·H), h0 (B, H), mask (T, B) -> h (B, T, H): the state after every step, time order.

    Processing order is t = 0 … T−1, or T−1 … 0 with ``reverse``.
    """
    T, B = x_proj.shape[0], x_proj.shape[1]
    H = h0.shape[1]
    C = x_proj.shape[2] - H  # the candidate block starts here
    for b in range(B):
        update = np.empty(H, dtype=x_proj.dtype)
        for s in range(T):
            t, prev = _step_and_previous(h0, h, b, s, T, reverse)
            x_row = x_proj[t, b]
            _update_row(kind, x_row, H, update)
            m = mask[t, b]
            out = h[b, t]
            for j in range(H):
                p = prev[j]
                out[j] = p + m * update[j] * (x_row[C + j] - p)


def _backward(kind, x_proj, h0, h, mask, reverse, d_y, d_final, d_x_proj, delta_out, record):
    """The adjoint of :func:`_forward`.

    Args:
        d_y (T, B, H) dL/doutputs; d_final (B, H) dL/dh_final, overwritten with dL/dh0.
        d_x_proj (T, B, G·H) written; delta_out (T, B, H) receives δ⟨t⟩ when ``record``.
    """
    T, B = x_proj.shape[0], x_proj.shape[1]
    H = h0.shape[1]
    C = x_proj.shape[2] - H
    one = x_proj.dtype.type(1.0)
    half = x_proj.dtype.type(0.5)
    for b in range(B):
        carry = d_final[b]  # δ flowing into the step being processed: starts as dL/dh_final
        for s in range(T - 1, -1, -1):
            t, prev = _step_and_previous(h0, h, b, s, T, reverse)
            x_row = x_proj[t, b]
            m = mask[t, b]
            dy = d_y[t, b]
            d_row = d_x_proj[t, b]
            if kind == MINGRU:  # one loop per kind, so the minGRU loop has no branch and vectorises
                for j in range(H):
                    delta = carry[j] + m * dy[j]
                    u = half + half * _tanh(half * x_row[j])
                    d_row[j] = m * delta * (x_row[C + j] - prev[j]) * u * (one - u)  # dL/dk_u = dL/du σ'
                    d_row[C + j] = m * u * delta
                    if record:
                        delta_out[t, b, j] = delta
                    carry[j] = (one - m * u) * delta
            else:  # u = σ(z), z = log σ(k_u) − log σ(k_f); ∂z/∂k_u = σ(−k_u), ∂z/∂k_f = −σ(−k_f)
                for j in range(H):
                    delta = carry[j] + m * dy[j]
                    u, e_u, e_f = _minlstm_gate(x_row[j], x_row[H + j], one)
                    d_z = m * delta * (x_row[C + j] - prev[j]) * u * (one - u)
                    d_row[j] = d_z / (one + one / e_u)  # σ(−k) = 1 / (1 + 1/e^−k)
                    d_row[H + j] = -d_z / (one + one / e_f)
                    d_row[C + j] = m * u * delta
                    if record:
                        delta_out[t, b, j] = delta
                    carry[j] = (one - m * u) * delta


# One thread: running the batch's rows on both cores (numba's prange) was slower here (minGRU
# H 1272, T 256: 37.5k vs 41.7k tokens/s; minLSTM H 912: 20.3k vs 24.6k): memory-bound passes.
_forward_kernel, _backward_kernel = njit(**_JIT)(_forward), njit(**_JIT)(_backward)


def _mask_2d(mask, steps: int, batch: int, dtype) -> np.ndarray:
    """(T, B, 1) 0/1 mask or None -> (T, B) in ``dtype`` (ones when None)."""
    if mask is None:
        return np.ones((steps, batch), dtype=dtype)
    return np.ascontiguousarray(np.asarray(mask, dtype=dtype).reshape(steps, batch))


def minimal_forward(kind: str, x_proj: np.ndarray, h0: np.ndarray, mask, reverse: bool) -> np.ndarray:
    """All states h (B, T, H) of a minGRU/minLSTM direction (see the module docstring)."""
    steps, batch, _ = x_proj.shape
    hidden = h0.shape[1]
    h = np.empty((batch, steps, hidden), dtype=x_proj.dtype)
    _forward_kernel(KINDS[kind], x_proj, np.ascontiguousarray(h0, dtype=x_proj.dtype),
                    _mask_2d(mask, steps, batch, x_proj.dtype), bool(reverse), h)
    return h


def minimal_backward(kind: str, x_proj: np.ndarray, h0: np.ndarray, h: np.ndarray, mask, reverse: bool,
                     d_y: np.ndarray, d_final: np.ndarray, record: bool = False) -> tuple:
    """(d x_proj (T, B, G·H) row-major, dL/dh0 (B, H), δ (T, B, H) or None) for :func:`minimal_forward`'s run."""
    steps, batch, width = x_proj.shape
    hidden = h0.shape[1]
    dtype = x_proj.dtype
    d_x_proj = np.empty((steps, batch, width), dtype=dtype)
    d_h0 = np.array(d_final, dtype=dtype, order="C", copy=True)  # the kernel carries δ in it
    deltas = np.empty((steps, batch, hidden) if record else (1, 1, 1), dtype=dtype)
    _backward_kernel(KINDS[kind], x_proj, np.ascontiguousarray(h0, dtype=dtype), h, _mask_2d(mask, steps, batch, dtype),
                     bool(reverse), np.asarray(d_y, dtype=dtype), d_h0, d_x_proj, deltas, bool(record))
    return d_x_proj, d_h0, (deltas if record else None)
