"""Batch-1 sampling in one compiled loop: recurrent step, head, temperature/top-k/top-p, draw.

At batch 1 a token's arithmetic is small (0.5 MFLOP for an LSTM with H 256), so a per-token
path made of NumPy calls spends most of its time between the calls. :func:`sample_chunk` runs
``n`` tokens of it in one numba call: for each token, draw from the current logits, feed the
drawn id back through every layer and the head, and keep the new logits for the next draw.

The draw is the one of :func:`mlxrnn.models.decoding.next_token_distribution` followed by
:func:`~mlxrnn.models.decoding.draw_tokens` (float64, same order of operations) and takes one
uniform per token, the one ``rng.random((1, 1))`` gives there, so a seed gives the same draws
as the NumPy path unless a uniform lands within rounding (≈1e-7 relative, float32 logits) of a
boundary between two tokens: the products here are plain loops, not OpenBLAS's sgemv, and sum
in another order.

Cells (``kind``): 0 LSTM (blocks [u, f, c̃, o]), 1 GRU with the reset after the product
(blocks [u, r, c], bias b_hn), 2 tanh RNN; the equations of mlxrnn/backend/pointwise.py, with
the float32 tanh of numba_scalar.py (what the numba time-loop kernels use).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .numba_scalar import JIT as _JIT
from .numba_scalar import tanh as _tanh

LSTM, GRU, RNN = 0, 1, 2


@njit(**_JIT)
def _product(x, weight, out):
    """out = x @ weight: x (K,), weight (K, N) row-major. Eight rows of the weight at a time, so
    ``out`` is read and written once per eight rows while the inner loop runs along contiguous
    memory and vectorises (17 us against 27 us a row at a time for 256 x 1024, in-process; the
    same as OpenBLAS's sgemv from 512 x 2048 up, where reading the weight is all the time)."""
    rows, width = weight.shape
    out[:] = 0.0
    k = 0
    while k + 8 <= rows:
        r0, r1, r2, r3 = weight[k], weight[k + 1], weight[k + 2], weight[k + 3]
        r4, r5, r6, r7 = weight[k + 4], weight[k + 5], weight[k + 6], weight[k + 7]
        a0, a1, a2, a3, a4, a5, a6, a7 = x[k], x[k + 1], x[k + 2], x[k + 3], x[k + 4], x[k + 5], x[k + 6], x[k + 7]
        for n in range(width):
            out[n] += (((a0 * r0[n] + a1 * r1[n]) + (a2 * r2[n] + a3 * r3[n]))
                       + ((a4 * r4[n] + a5 * r5[n]) + (a6 * r6[n] + a7 * r7[n])))
        k += 8
    while k < rows:  # the last rows when K is not a multiple of 8
        xk = x[k]
        for n in range(width):
            out[n] += xk * weight[k, n]
        k += 1


@njit(**_JIT)
def _layer_step(kind, x_proj, rec, h, c, b_hn):
    """One layer's cell update in place: x_proj, rec (G·H,) the input and recurrent products;
    h, c (H,) the state (c only for an LSTM); b_hn (H,) the GRU's recurrent candidate bias."""
    hidden = h.shape[0]
    half = h.dtype.type(0.5)
    for j in range(hidden):
        if kind == 0:
            u = half + half * _tanh(half * (rec[j] + x_proj[j]))
            f = half + half * _tanh(half * (rec[hidden + j] + x_proj[hidden + j]))
            g = _tanh(rec[2 * hidden + j] + x_proj[2 * hidden + j])
            o = half + half * _tanh(half * (rec[3 * hidden + j] + x_proj[3 * hidden + j]))
            cell = f * c[j] + u * g
            c[j] = cell
            h[j] = o * _tanh(cell)
        elif kind == 1:
            u = half + half * _tanh(half * (rec[j] + x_proj[j]))
            r = half + half * _tanh(half * (rec[hidden + j] + x_proj[hidden + j]))
            n = _tanh(x_proj[2 * hidden + j] + r * (rec[2 * hidden + j] + b_hn[j]))
            h[j] = h[j] + u * (n - h[j])
        else:
            h[j] = _tanh(rec[j] + x_proj[j])


@njit(**_JIT)
def draw(logits, banned, temperature, top_k, top_p, greedy, uniform):
    """One token id from float64 logits (V,): ``banned`` ids excluded, then temperature, top-k
    (0: off), top-p (≥ 1: off), then argmax (greedy) or the inverse-CDF draw at ``uniform``."""
    vocab = logits.shape[0]
    z = logits.copy()
    for i in range(banned.shape[0]):
        z[banned[i]] = -np.inf
    z -= z.max()  # the best allowed logit to 0 before dividing: a tiny temperature gives -inf, not NaN
    z /= temperature
    if 0 < top_k < vocab:
        kth = np.sort(z)[vocab - top_k]
        for i in range(vocab):
            if z[i] < kth:
                z[i] = -np.inf
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="mergesort")  # stable, as the NumPy path sorts
        running = 0.0
        keep = np.zeros(vocab, dtype=np.bool_)
        for i in range(vocab):
            p = probs[order[i]]
            running += p
            keep[order[i]] = (running - p) < top_p  # the mass before it is still short of p
        for i in range(vocab):
            if not keep[i]:
                probs[i] = 0.0
        probs /= probs.sum()
    if greedy:
        return np.argmax(probs)
    cumulative = np.cumsum(probs)
    target = uniform * cumulative[-1]
    count = 0
    for i in range(vocab):
        if cumulative[i] <= target:
            count += 1
    return min(count, vocab - 1)


@njit(**_JIT)
def sample_chunk(kind, table, w_x, b_x, w_h, b_hn, head_w, head_b, h, c, logits, banned, temperature, top_k,
                 top_p, greedy, uniforms, out):
    """Draw len(uniforms) tokens into ``out``, feeding each back; state and logits updated in place.

    Shapes (L layers, H hidden, G gates, V vocabulary): table (V_in, G·H) layer 0's projected
    inputs by token id; w_x (max(L−1, 1), H, G·H), b_x (max(L−1, 1), G·H) the input products of
    layers 1…; w_h (L, H, G·H); b_hn (L, H); head_w (H, V), head_b (V,); h, c (L, H) float32;
    logits (V,) float64, the logits to draw the first token from, left as those after the last.
    """
    layers, hidden = h.shape
    width = w_h.shape[2]
    x_proj = np.empty(width, dtype=h.dtype)
    rec = np.empty(width, dtype=h.dtype)
    head = np.empty(head_w.shape[1], dtype=h.dtype)
    for i in range(uniforms.shape[0]):
        token = draw(logits, banned, temperature, top_k, top_p, greedy, uniforms[i])
        out[i] = token
        for layer in range(layers):
            if layer == 0:
                x_proj[:] = table[token]
            else:
                _product(h[layer - 1], w_x[layer - 1], x_proj)
                x_proj += b_x[layer - 1]
            _product(h[layer], w_h[layer], rec)
            _layer_step(kind, x_proj, rec, h[layer], c[layer], b_hn[layer])
        _product(h[layers - 1], head_w, head)
        for v in range(head.shape[0]):
            logits[v] = head[v] + head_b[v]
