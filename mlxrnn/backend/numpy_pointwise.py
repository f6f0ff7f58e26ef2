"""The cells' point-wise kernels on plain NumPy: the math of mlxrnn/backend/pointwise.py in place.

Each NumPy call costs a fixed overhead plus a pass over its operands, so these kernels write
into arrays they own (``out=``), reuse the recurrent product ``rec`` for the gates instead of
allocating, and compute σ'(·) and 1 − tanh² into one scratch array. Results keep the layout of
their inputs: the time loop's arrays are batch-fastest (see numpy_backend.py), where a gate
block ``a[:, kH:(k+1)H]`` is one contiguous stretch of memory, so every call below is one flat
loop. Same values as the reference up to float rounding (tests/test_kernels.py).
"""

from __future__ import annotations

import numpy as np


def sigmoid_(a: np.ndarray) -> np.ndarray:
    """σ(a) in place, as 0.5 + 0.5·tanh(a/2): one transcendental, no overflow for large |a|."""
    np.multiply(a, 0.5, out=a)
    np.tanh(a, out=a)
    np.multiply(a, 0.5, out=a)
    np.add(a, 0.5, out=a)
    return a


def _sigmoid_slope(s: np.ndarray) -> np.ndarray:
    """σ' = σ (1 − σ) from σ, into a new array."""
    slope = np.subtract(1.0, s)
    np.multiply(slope, s, out=slope)
    return slope


def _tanh_slope(t: np.ndarray, out: np.ndarray) -> np.ndarray:
    """1 − t² from t = tanh(·), into ``out``."""
    np.multiply(t, t, out=out)
    np.subtract(1.0, out, out=out)
    return out


class NumpyKernels:
    """In-place NumPy versions of :class:`mlxrnn.backend.pointwise.PlainKernels`."""

    name = "numpy"

    def lstm_forward(self, rec, x_proj, c_prev) -> tuple:
        H = c_prev.shape[1]
        gates = np.add(rec, x_proj, out=rec)  # (B, 4H) pre-activations, then [Γ_u, Γ_f, c̃, Γ_o] in place
        sigmoid_(gates[:, : 2 * H])
        np.tanh(gates[:, 2 * H : 3 * H], out=gates[:, 2 * H : 3 * H])
        sigmoid_(gates[:, 3 * H :])
        u, f, cand, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        c = np.multiply(f, c_prev)
        c += np.multiply(u, cand, out=np.empty_like(c))
        tanh_c = np.tanh(c)
        return np.multiply(o, tanh_c), c, gates, tanh_c

    def lstm_backward(self, d_h, d_c, gates, tanh_c, c_prev) -> tuple:
        H = d_h.shape[1]
        u, f, cand, o = (gates[:, k * H : (k + 1) * H] for k in range(4))
        d_pre = np.empty_like(gates)
        d_u, d_f, d_cand, d_o = (d_pre[:, k * H : (k + 1) * H] for k in range(4))
        # dc = dc_in + da ∗ Γ_o ∗ (1 − tanh²c), built in d_cand's memory until d_cand needs it
        total_dc = np.empty_like(d_h)
        _tanh_slope(tanh_c, out=total_dc)
        total_dc *= o
        total_dc *= d_h
        total_dc += d_c
        np.multiply(d_h, tanh_c, out=d_o)
        d_o *= _sigmoid_slope(o)
        np.multiply(total_dc, cand, out=d_u)
        np.multiply(total_dc, c_prev, out=d_f)
        d_pre[:, : 2 * H] *= _sigmoid_slope(gates[:, : 2 * H])  # σ' of Γ_u and Γ_f in one pass
        _tanh_slope(cand, out=d_cand)
        d_cand *= u
        d_cand *= total_dc
        return d_pre, np.multiply(total_dc, f, out=total_dc)

    def gru_forward(self, rec, x_proj, b_hn, h_prev) -> tuple:
        H = h_prev.shape[1]
        gates = np.add(rec[:, : 2 * H], x_proj[:, : 2 * H], out=rec[:, : 2 * H])
        sigmoid_(gates)
        rec_cand = np.add(rec[:, 2 * H :], b_hn, out=rec[:, 2 * H :])
        cand = np.multiply(gates[:, H:], rec_cand)
        cand += x_proj[:, 2 * H :]
        np.tanh(cand, out=cand)
        h = np.subtract(cand, h_prev)
        h *= gates[:, :H]
        h += h_prev
        return h, gates, cand, rec_cand

    def gru_backward(self, d_h, gates, cand, rec_cand, h_prev) -> tuple:
        H = d_h.shape[1]
        u, r = gates[:, :H], gates[:, H:]
        shape = (d_h.shape[0], 3 * H)
        d_x_proj = np.empty_like(d_h, shape=shape)
        d_recurrent = np.empty_like(d_h, shape=shape)
        d_u, d_r, d_cand = (d_x_proj[:, k * H : (k + 1) * H] for k in range(3))
        one_minus_u = np.subtract(1.0, u)
        np.subtract(cand, h_prev, out=d_u)
        d_u *= d_h
        d_u *= u
        d_u *= one_minus_u
        _tanh_slope(cand, out=d_cand)
        d_cand *= u
        d_cand *= d_h
        np.multiply(d_cand, rec_cand, out=d_r)
        d_r *= _sigmoid_slope(r)
        d_recurrent[:, : 2 * H] = d_x_proj[:, : 2 * H]
        np.multiply(d_cand, r, out=d_recurrent[:, 2 * H :])
        return d_x_proj, d_recurrent, np.multiply(d_h, one_minus_u, out=one_minus_u)

    def tanh_forward(self, rec, x_proj):
        np.add(rec, x_proj, out=rec)
        return np.tanh(rec, out=rec)

    def tanh_backward(self, d_h, h):
        d_pre = _tanh_slope(h, out=np.empty_like(h))
        d_pre *= d_h
        return d_pre
