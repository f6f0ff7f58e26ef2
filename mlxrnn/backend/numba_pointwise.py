"""The cells' point-wise kernels compiled with numba: one pass over memory per time step.

Optional (``pip install 'mlxrnn[fast]'``) and imported only when the NumPy backend selects
these kernels (mlxrnn/backend/kernels.py), so ``import mlxrnn`` never loads numba. Each kernel
reads its inputs once and writes its outputs once, with the whole gate arithmetic in registers;
NumPy needs 10–20 passes for the same step (mlxrnn/backend/numpy_pointwise.py, the reference
these are tested against, as is mlxrnn/backend/pointwise.py).

Layout: the kernels see every (B, F) array in memory order, as a C-contiguous (F, B) matrix.
The time loop's arrays are batch-fastest, so that is ``a.T`` with no copy, and batch-1 rows
(sampling) are both layouts at once; anything else is copied once (:func:`_mem`).

float32 tanh is a rational approximation (Eigen's, the one TensorFlow and JAX use on CPU):
it vectorises, unlike libm's scalar ``tanhf``, and its error is below 4e-7 (tests check it
against float64 tanh over the whole float32 range). float64 kernels call ``math.tanh`` and are
exact; they are there so the float64 finite-difference gradient checks cover this code, not
for speed (the scalar tanh is slower than NumPy's vectorised one, so ``auto`` keeps float64
on the NumPy kernels). Compiled code is cached on disk (``cache=True``): the first use on a
machine compiles for ~10–30 s, later processes load in well under a second.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import numba_minimal
from .numba_scalar import JIT as _JIT
from .numba_scalar import tanh as _tanh
from .pointwise import TableRows


@njit(**_JIT)
def tanh_array(x, out):
    """out = tanh(x), flat; for testing the float32 approximation."""
    for i in range(x.shape[0]):
        out[i] = _tanh(x[i])


@njit(**_JIT)
def lstm_forward_kernel(rec, x_proj, c_prev, h, c, tanh_c):
    """rec (4H, B) -> gates in place; h, c, tanh_c (H, B) written."""
    rec += x_proj
    _lstm_cached_gates(rec, c_prev, h, c, tanh_c)


@njit(**_JIT)
def lstm_forward_rows_kernel(rec, table, ids, c_prev, h, c, tanh_c):
    """:func:`lstm_forward_kernel` with x_proj[k, b] = table[ids[b], k] (table (V, 4H), ids (B,)):
    the rows are added to rec first (the same sums), then the same gate arithmetic."""
    _add_rows(rec, table, ids)
    _lstm_cached_gates(rec, c_prev, h, c, tanh_c)


@njit(**_JIT)
def _lstm_cached_gates(rec, c_prev, h, c, tanh_c):
    """rec (4H, B) the gates' pre-activations -> the gates (u, f, g, o) in place, with what the
    backward needs: c and tanh(c) (H, B), and h = o tanh(c)."""
    H, B = c_prev.shape
    half = rec.dtype.type(0.5)
    for j in range(H):
        for b in range(B):
            u = half + half * _tanh(half * rec[j, b])
            f = half + half * _tanh(half * rec[H + j, b])
            g = _tanh(rec[2 * H + j, b])
            o = half + half * _tanh(half * rec[3 * H + j, b])
            cell = f * c_prev[j, b] + u * g
            squashed = _tanh(cell)
            rec[j, b], rec[H + j, b], rec[2 * H + j, b], rec[3 * H + j, b] = u, f, g, o
            c[j, b] = cell
            tanh_c[j, b] = squashed
            h[j, b] = o * squashed


@njit(**_JIT)
def lstm_infer_kernel(rec, x_proj, c, h):
    """Forward only (no caches): rec, x_proj (4H, B); c (H, B) updated in place; h (H, B) written.
    rec += x_proj first, then the gate arithmetic of lstm_forward_kernel: the same numbers."""
    rec += x_proj
    _lstm_infer_gates(rec, c, h)


@njit(**_JIT)
def lstm_infer_rows_kernel(rec, table, ids, c, h):
    """:func:`lstm_infer_kernel` with the input projection read from a projected embedding table,
    x_proj[k, b] = table[ids[b], k] with table (V, 4H), ids (B,): the folded lookup without
    gathering a (T, B, 4H) copy of the rows first (4x less time per step than that copy at the
    reference size). The rows are added in a loop of their own, so the gate loop below still
    vectorises over b."""
    _add_rows(rec, table, ids)
    _lstm_infer_gates(rec, c, h)


@njit(**_JIT)
def _add_rows(rec, table, ids):
    """rec[k, b] += table[ids[b], k]: rec (G·H, B) in memory order, table (V, G·H), ids (B,).
    Contiguous along b, the way rec lies: 2.3x faster than adding one table row at a time."""
    gates, batch = rec.shape
    for k in range(gates):
        for b in range(batch):
            rec[k, b] += table[ids[b], k]


@njit(**_JIT)
def _lstm_infer_gates(pre, c, h):
    """pre (4H, B) the gates' pre-activations; c updated in place, h written."""
    H, B = c.shape
    half = pre.dtype.type(0.5)
    for j in range(H):
        for b in range(B):
            u = half + half * _tanh(half * pre[j, b])
            f = half + half * _tanh(half * pre[H + j, b])
            g = _tanh(pre[2 * H + j, b])
            o = half + half * _tanh(half * pre[3 * H + j, b])
            cell = f * c[j, b] + u * g
            c[j, b] = cell
            h[j, b] = o * _tanh(cell)


@njit(**_JIT)
def lstm_backward_kernel(d_h, d_c, gates, tanh_c, c_prev, d_pre, d_c_prev):
    H, B = d_h.shape
    one = d_h.dtype.type(1.0)
    for j in range(H):
        for b in range(B):
            u, f, g, o = gates[j, b], gates[H + j, b], gates[2 * H + j, b], gates[3 * H + j, b]
            squashed, dh = tanh_c[j, b], d_h[j, b]
            dc = d_c[j, b] + dh * o * (one - squashed * squashed)
            d_pre[j, b] = dc * g * u * (one - u)
            d_pre[H + j, b] = dc * c_prev[j, b] * f * (one - f)
            d_pre[2 * H + j, b] = dc * u * (one - g * g)
            d_pre[3 * H + j, b] = dh * squashed * o * (one - o)
            d_c_prev[j, b] = dc * f


@njit(**_JIT)
def gru_forward_kernel(rec, x_proj, b_hn, h_prev, h, cand):
    """rec (3H, B) -> [Γ_u, Γ_r, rc] in place; h, cand (H, B) written."""
    H, B = h_prev.shape
    half = rec.dtype.type(0.5)
    for j in range(H):
        bias = b_hn[j]
        for b in range(B):
            u = half + half * _tanh(half * (rec[j, b] + x_proj[j, b]))
            r = half + half * _tanh(half * (rec[H + j, b] + x_proj[H + j, b]))
            rc = rec[2 * H + j, b] + bias
            n = _tanh(x_proj[2 * H + j, b] + r * rc)
            rec[j, b], rec[H + j, b], rec[2 * H + j, b] = u, r, rc
            cand[j, b] = n
            h[j, b] = h_prev[j, b] + u * (n - h_prev[j, b])


@njit(**_JIT)
def gru_backward_kernel(d_h, gates, cand, rec_cand, h_prev, d_x_proj, d_recurrent, d_h_prev):
    H, B = d_h.shape
    one = d_h.dtype.type(1.0)
    for j in range(H):
        for b in range(B):
            u, r, n, dh = gates[j, b], gates[H + j, b], cand[j, b], d_h[j, b]
            d_u = dh * (n - h_prev[j, b]) * u * (one - u)
            d_n = dh * u * (one - n * n)
            d_r = d_n * rec_cand[j, b] * r * (one - r)
            d_x_proj[j, b] = d_recurrent[j, b] = d_u
            d_x_proj[H + j, b] = d_recurrent[H + j, b] = d_r
            d_x_proj[2 * H + j, b] = d_n
            d_recurrent[2 * H + j, b] = d_n * r
            d_h_prev[j, b] = dh * (one - u)


@njit(**_JIT)
def tanh_forward_kernel(rec, x_proj):
    F, B = rec.shape
    for j in range(F):
        for b in range(B):
            rec[j, b] = _tanh(rec[j, b] + x_proj[j, b])


@njit(**_JIT)
def tanh_backward_kernel(d_h, h, d_pre):
    F, B = h.shape
    one = h.dtype.type(1.0)
    for j in range(F):
        for b in range(B):
            d_pre[j, b] = d_h[j, b] * (one - h[j, b] * h[j, b])


@njit(**_JIT)
def adam_kernel(grad, param, m, v, beta1, beta2, step_size, eps_hat, l2, decay, new_param, new_m, new_v):
    """Adam/AdamW on flat arrays in one pass (see mlxrnn.nn.optim.Adam for the equations)."""
    one = param.dtype.type(1.0)
    for i in range(param.shape[0]):
        p = param[i]
        g = grad[i] + l2 * p
        m_i = beta1 * m[i] + (one - beta1) * g
        v_i = beta2 * v[i] + (one - beta2) * g * g
        new_m[i], new_v[i] = m_i, v_i
        new_param[i] = p * decay - step_size * m_i / (math.sqrt(v_i) + eps_hat)


def _mem(a: np.ndarray) -> np.ndarray:
    """(B, F) -> its memory-order (F, B) C-contiguous matrix: a view when ``a`` is batch-fastest."""
    t = a.T
    return t if t.flags.c_contiguous else np.ascontiguousarray(t)


def _new(like: np.ndarray, features: int) -> np.ndarray:
    """A fresh memory-order (features, B) matrix of ``like``'s dtype."""
    return np.empty((features, like.shape[0]), dtype=like.dtype)


class NumbaKernels:
    """numba versions of :class:`mlxrnn.backend.pointwise.PlainKernels`; results are batch-fastest."""

    name = "numba"
    #: ``lstm_forward`` takes a :class:`~mlxrnn.backend.pointwise.TableRows` as x_proj
    reads_table_rows = True

    def lstm_forward(self, rec, x_proj, c_prev) -> tuple:
        gates, c_mem = _mem(rec), _mem(c_prev)
        h, c, tanh_c = (np.empty_like(c_mem) for _ in range(3))
        if isinstance(x_proj, TableRows):  # the folded lookup: the kernel reads the projected table's rows
            lstm_forward_rows_kernel(gates, x_proj.table, x_proj.ids, c_mem, h, c, tanh_c)
        else:
            lstm_forward_kernel(gates, _mem(x_proj), c_mem, h, c, tanh_c)
        return h.T, c.T, gates.T, tanh_c.T

    def lstm_infer_sequence(self, W_h, h0, c0, order, x_proj=None, table=None, ids=None) -> tuple:
        """A whole LSTM direction forward only: no per-step caches, no per-step allocations.

        W_h (H, 4H) stored column-major (the time loop's layout), h0, c0 (B, H); steps taken in
        ``order`` (a list of t); inputs either x_proj (T, B, 4H) with every [t] batch-fastest, or
        rows of ``table`` (V, 4H) at ``ids`` (T, B). Returns (h of every step as a (T, H, B)
        array, i.e. [t].T is step t's (B, H) output, batch-fastest; final h; final c).
        The recurrent product is the BLAS call the cached path makes, into one reused buffer.
        """
        w_t = W_h.T if W_h.T.flags.c_contiguous else np.ascontiguousarray(W_h.T)  # (4H, H)
        c = np.array(c0.T, order="C")  # (H, B), updated in place step by step
        hidden, batch = c.shape
        out = np.empty((len(order), hidden, batch), dtype=c.dtype)
        rec = np.empty((w_t.shape[0], batch), dtype=c.dtype)
        h_prev = _mem(h0)
        if ids is not None:
            ids = np.ascontiguousarray(ids, dtype=np.intp)
        for t in order:
            np.matmul(w_t, h_prev, out=rec)
            if ids is None:
                lstm_infer_kernel(rec, _mem(x_proj[t]), c, out[t])
            else:
                lstm_infer_rows_kernel(rec, table, ids[t], c, out[t])
            h_prev = out[t]
        return out, h_prev.T, c.T

    def lstm_backward(self, d_h, d_c, gates, tanh_c, c_prev) -> tuple:
        d_h_mem = _mem(d_h)
        d_pre, d_c_prev = _new(d_h, 4 * d_h.shape[1]), np.empty_like(d_h_mem)
        lstm_backward_kernel(d_h_mem, _mem(d_c), _mem(gates), _mem(tanh_c), _mem(c_prev), d_pre, d_c_prev)
        return d_pre.T, d_c_prev.T

    def gru_forward(self, rec, x_proj, b_hn, h_prev) -> tuple:
        rec_mem, h_prev_mem = _mem(rec), _mem(h_prev)
        H = h_prev.shape[1]
        h, cand = np.empty_like(h_prev_mem), np.empty_like(h_prev_mem)
        gru_forward_kernel(rec_mem, _mem(x_proj), np.ascontiguousarray(b_hn), h_prev_mem, h, cand)
        return h.T, rec_mem[: 2 * H].T, cand.T, rec_mem[2 * H :].T

    def gru_backward(self, d_h, gates, cand, rec_cand, h_prev) -> tuple:
        d_h_mem = _mem(d_h)
        d_x_proj, d_recurrent = _new(d_h, 3 * d_h.shape[1]), _new(d_h, 3 * d_h.shape[1])
        d_h_prev = np.empty_like(d_h_mem)
        gru_backward_kernel(d_h_mem, _mem(gates), _mem(cand), _mem(rec_cand), _mem(h_prev), d_x_proj, d_recurrent,
                            d_h_prev)
        return d_x_proj.T, d_recurrent.T, d_h_prev.T

    def tanh_forward(self, rec, x_proj):
        rec_mem = _mem(rec)
        tanh_forward_kernel(rec_mem, _mem(x_proj))
        return rec_mem.T

    def tanh_backward(self, d_h, h):
        h_mem = _mem(h)
        d_pre = np.empty_like(h_mem)
        tanh_backward_kernel(_mem(d_h), h_mem, d_pre)
        return d_pre.T

    # whole-sequence kernels of the minimal cells (minGRU, minLSTM): mlxrnn/backend/numba_minimal.py
    def minimal_forward(self, kind, x_proj, h0, mask, reverse):
        """x_proj (T, B, G·H), h0 (B, H), mask (T, B, 1) or None -> states h (B, T, H), time order."""
        return numba_minimal.minimal_forward(kind, x_proj, h0, mask, reverse)

    def minimal_backward(self, kind, x_proj, h0, h, mask, reverse, d_y, d_final, record=False):
        """-> (d x_proj (T, B, G·H), dL/dh0 (B, H), δ (T, B, H) when ``record`` else None)."""
        return numba_minimal.minimal_backward(kind, x_proj, h0, h, mask, reverse, d_y, d_final, record)

    def adam_update(self, grad, param, m, v, beta1, beta2, step_size, eps_hat, l2=0.0, decay=1.0):
        """One Adam/AdamW update in one pass -> (new param, new m, new v), fresh arrays (the
        optimizer's updates never mutate, so a step can be undone); None when an operand is not
        C-contiguous (the caller then runs the reference)."""
        arrays = (grad, param, m, v)
        if not all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.dtype == param.dtype for a in arrays):
            return None
        scalar = param.dtype.type
        outs = tuple(np.empty_like(param) for _ in range(3))
        adam_kernel(*(a.reshape(-1) for a in arrays), scalar(beta1), scalar(beta2), scalar(step_size), scalar(eps_hat),
                    scalar(l2), scalar(decay), *(o.reshape(-1) for o in outs))
        return outs
