"""Fused point-wise kernels of the recurrent cells: the reference, written against the protocol.

One time step of a gated cell is a GEMM (``rec = h_prev @ W_h``) followed by element-wise
work: the gate nonlinearities, the state update and, in backward, their derivatives. A backend
offers that element-wise work as a few ``kernels`` methods so it can run it in as few passes as
it can (NumPy: in place with ``out=``; with the optional numba extra: one compiled loop per
step). This module is the plain version every backend can run — MLX uses it as is — and the
oracle the faster versions are tested against. Gate blocks are fused side by side as in
mlxrnn.nn.cells (row vectors, (B, G·H)); equations in the notes' letters:

LSTM, blocks [u, f, c̃, o] (``lstm_forward`` / ``lstm_backward``):
    pre = x_proj + rec,  Γ_u, Γ_f, Γ_o = σ(pre_u, pre_f, pre_o),  c̃ = tanh(pre_c)
    c = Γ_f ∗ c⟨t−1⟩ + Γ_u ∗ c̃,  a = Γ_o ∗ tanh(c)
    backward, with dc = dc_in + da ∗ Γ_o ∗ (1 − tanh²c):
    dpre = [dc ∗ c̃ ∗ σ'_u, dc ∗ c⟨t−1⟩ ∗ σ'_f, dc ∗ Γ_u ∗ (1 − c̃²), da ∗ tanh c ∗ σ'_o],
    dc⟨t−1⟩ = dc ∗ Γ_f,   with σ' = σ (1 − σ).

GRU with the reset applied after the matmul (``gru_forward`` / ``gru_backward``), blocks [u, r, c]:
    Γ_u, Γ_r = σ(x_u + rec_u, x_r + rec_r),  rc = rec_c + b_hn,  c̃ = tanh(x_c + Γ_r ∗ rc)
    h = h⟨t−1⟩ + Γ_u ∗ (c̃ − h⟨t−1⟩)
    backward: du = dh ∗ (c̃ − h⟨t−1⟩) ∗ σ'_u,  dc = dh ∗ Γ_u ∗ (1 − c̃²),  dr = dc ∗ rc ∗ σ'_r;
    d_x_proj = [du, dr, dc], d_recurrent = [du, dr, dc ∗ Γ_r], and the direct path
    dh⟨t−1⟩ = dh ∗ (1 − Γ_u) (the layer adds d_recurrent W_hᵀ).

Tanh RNN (``tanh_forward`` / ``tanh_backward``): h = tanh(x_proj + rec);  dpre = dh ∗ (1 − h²).

Arguments named ``rec`` are the step's recurrent product, which a kernel may overwrite (the
NumPy kernels reuse its memory); every other input is read only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TableRows:
    """A step's input projection given as rows of a projected embedding table, x_proj[b] =
    table[ids[b]] (table (V, G·H), ids (B,)): what a kernel with ``reads_table_rows`` accepts as
    ``x_proj`` of ``lstm_forward``, reading the rows itself instead of a gathered (B, G·H) copy."""

    table: Any
    ids: Any


def _blocks(a: Any, count: int, width: int) -> list:
    return [a[:, k * width : (k + 1) * width] for k in range(count)]


class PlainKernels:
    """The point-wise kernels as plain protocol operations on backend ``xp``."""

    name = "plain"

    def __init__(self, xp: Any):
        self.xp = xp

    def lstm_forward(self, rec, x_proj, c_prev) -> tuple:
        """(rec, x_proj (B, 4H), c_prev (B, H)) -> (h, c, gates (B, 4H) = [Γ_u, Γ_f, c̃, Γ_o], tanh c)."""
        xp, H = self.xp, int(c_prev.shape[1])
        pre = x_proj + rec
        update_forget = xp.sigmoid(pre[:, : 2 * H])
        cand = xp.tanh(pre[:, 2 * H : 3 * H])
        out_gate = xp.sigmoid(pre[:, 3 * H :])
        c = update_forget[:, H:] * c_prev + update_forget[:, :H] * cand
        tanh_c = xp.tanh(c)
        return out_gate * tanh_c, c, xp.concat([update_forget, cand, out_gate], axis=1), tanh_c

    def lstm_backward(self, d_h, d_c, gates, tanh_c, c_prev) -> tuple:
        """-> (d_pre (B, 4H), d_c_prev (B, H)); see the module docstring."""
        xp = self.xp
        u, f, cand, o = _blocks(gates, 4, int(d_h.shape[1]))
        d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
        d_pre = xp.concat([d_c * cand * u * (1.0 - u), d_c * c_prev * f * (1.0 - f), d_c * u * (1.0 - cand * cand),
                           d_h * tanh_c * o * (1.0 - o)], axis=1)
        return d_pre, d_c * f

    def gru_forward(self, rec, x_proj, b_hn, h_prev) -> tuple:
        """(rec, x_proj (B, 3H), b_hn (H,), h_prev (B, H)) -> (h, gates (B, 2H) = [Γ_u, Γ_r], c̃, rc)."""
        xp, H = self.xp, int(h_prev.shape[1])
        gates = xp.sigmoid(x_proj[:, : 2 * H] + rec[:, : 2 * H])
        rec_cand = rec[:, 2 * H :] + b_hn
        cand = xp.tanh(x_proj[:, 2 * H :] + gates[:, H:] * rec_cand)
        return h_prev + gates[:, :H] * (cand - h_prev), gates, cand, rec_cand

    def gru_backward(self, d_h, gates, cand, rec_cand, h_prev) -> tuple:
        """-> (d_x_proj (B, 3H), d_recurrent (B, 3H), direct dh⟨t−1⟩ (B, H)); see the module docstring."""
        xp = self.xp
        u, r = _blocks(gates, 2, int(d_h.shape[1]))
        d_u = d_h * (cand - h_prev) * u * (1.0 - u)
        d_cand = d_h * u * (1.0 - cand * cand)
        d_r = d_cand * rec_cand * r * (1.0 - r)
        return xp.concat([d_u, d_r, d_cand], axis=1), xp.concat([d_u, d_r, d_cand * r], axis=1), d_h * (1.0 - u)

    def tanh_forward(self, rec, x_proj) -> Any:
        """tanh(x_proj + rec), (B, H)."""
        return self.xp.tanh(x_proj + rec)

    def tanh_backward(self, d_h, h) -> Any:
        """d_h ∗ (1 − h²), (B, H)."""
        return d_h * (1.0 - h * h)
