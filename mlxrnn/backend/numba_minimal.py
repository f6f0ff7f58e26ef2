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
gates are small, so it uses σ(k) = 1 / (1 + e^−k), exact to rounding down to k ≈ −87 (float32),
and below 1e-30 for both gates it takes the limit σ(k_u − k_f) (relative error < 1e-30), never
0/0. The u⟨t⟩ gates are recomputed in backward rather than stored: cheaper than a (T, B, H)
write and read.

Layout: any strides work; the fast case, which the layer gives, is x_proj (T, B, G·H) and
dL/dy (T, B, H) row-major per (t, b) row, states stored as (B, T, H) so that the layer's output
(B, T, H) needs no copy. Loops run b, then t (the recurrence), then j (contiguous, vectorised).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numba import njit, prange

from .numba_pointwise import _JIT, _tanh

MINGRU, MINLSTM = 0, 1
KINDS = {"mingru": MINGRU, "minlstm": MINLSTM}


@njit(**_JIT)
def _update_row(kind, x_row, H, out):
    """out[j] = u for one (t, b) row of x_proj (G·H,)."""
    one = x_row.dtype.type(1.0)
    half = x_row.dtype.type(0.5)
    if kind == MINGRU:
        for j in range(H):
            out[j] = half + half * _tanh(half * x_row[j])
    else:
        tiny = x_row.dtype.type(1e-30)
        for j in range(H):
            k_u, k_f = x_row[j], x_row[H + j]
            s_u = one / (one + math.exp(-k_u))
            s_f = one / (one + math.exp(-k_f))
            total = s_u + s_f
            if total > tiny:
                out[j] = s_u / total
            else:  # both gates below 1e-30: σ(k_u)/(σ(k_u)+σ(k_f)) → σ(k_u − k_f)
                out[j] = one / (one + math.exp(k_f - k_u))


def _forward(kind, x_proj, h0, mask, reverse, h):
    """x_proj (T, B, G·H), h0 (B, H), mask (T, B) -> h (B, T, H): the state after every step, time order.

    Processing order is t = 0 … T−1, or T−1 … 0 with ``reverse``. Sequences b are independent:
    the compiled-parallel version runs them on several threads.
    """
    T, B = x_proj.shape[0], x_proj.shape[1]
    H = h0.shape[1]
    C = x_proj.shape[2] - H  # the candidate block starts here
    for b in prange(B):
        update = np.empty(H, dtype=x_proj.dtype)
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s == 0:
                prev = h0[b]
            else:
                prev = h[b, t + 1] if reverse else h[b, t - 1]
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
    for b in prange(B):
        update = np.empty(H, dtype=x_proj.dtype)
        carry = d_final[b]  # δ flowing into the step being processed: starts as dL/dh_final
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            if s == 0:
                prev = h0[b]
            else:
                prev = h[b, t + 1] if reverse else h[b, t - 1]
            x_row = x_proj[t, b]
            _update_row(kind, x_row, H, update)
            m = mask[t, b]
            dy = d_y[t, b]
            d_row = d_x_proj[t, b]
            for j in range(H):
                delta = carry[j] + m * dy[j]
                u = update[j]
                d_u = m * delta * (x_row[C + j] - prev[j])
                d_row[C + j] = m * u * delta
                if kind == MINGRU:
                    d_row[j] = d_u * u * (one - u)
                else:  # u = σ(z), z = log σ(k_u) − log σ(k_f); ∂z/∂k_u = σ(−k_u), ∂z/∂k_f = −σ(−k_f)
                    d_z = d_u * u * (one - u)
                    d_row[j] = d_z / (one + math.exp(x_row[j]))
                    d_row[H + j] = -d_z / (one + math.exp(x_row[H + j]))
                if record:
                    delta_out[t, b, j] = delta
                carry[j] = (one - m * u) * delta


#: one compiled version each: threads over the batch, and one thread (small batches, or when the
#: caller wants the cores for something else; MLXRNN_KERNEL_THREADS=1 picks it)
_KERNELS = {
    "parallel": (njit(parallel=True, **_JIT)(_forward), njit(parallel=True, **_JIT)(_backward)),
    "serial": (njit(**_JIT)(_forward), njit(**_JIT)(_backward)),
}


def _pick(batch: int) -> tuple:
    threads = os.environ.get("MLXRNN_KERNEL_THREADS", "").strip()
    return _KERNELS["serial" if batch < 2 or threads == "1" else "parallel"]


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
    forward, _ = _pick(batch)
    forward(KINDS[kind], x_proj, np.ascontiguousarray(h0, dtype=x_proj.dtype), _mask_2d(mask, steps, batch, x_proj.dtype),
            bool(reverse), h)
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
    _, backward = _pick(batch)
    backward(KINDS[kind], x_proj, np.ascontiguousarray(h0, dtype=dtype), h, _mask_2d(mask, steps, batch, dtype),
             bool(reverse), np.asarray(d_y, dtype=dtype), d_h0, d_x_proj, deltas, bool(record))
    return d_x_proj, d_h0, (deltas if record else None)
