"""Sampling on MLX: the whole per-token path on the device, only the drawn ids come back.

Per token, one compiled call does what :mod:`mlxrnn.lm.sampling` does on the host for NumPy:

    x_proj = P[y⟨t−1⟩]                        a row of layer 0's projected table P (V, G·H)
    h, state = rnn.step(x_proj, state)         the cache-free step of every layer
    z = h W_y + b_y                            logits (B, V)
    z[banned] = −∞;  z = (z − max z) / τ       <PAD> (and <UNK>, and <EOS> for characters) never drawn
    top-k, then top-p (nucleus) filtering      as :func:`mlxrnn.models.decoding.next_token_distribution`
    y⟨t⟩ = categorical(z, key_t)               or argmax z when greedy

The key is split on the device each token (key, key_t = split(key)), so the sequence of draws
is a function of the seed alone: the same seed gives the same text on every run, compiled or
not. The ids, (B,) int32, stay on the device as the next call's input; the caller reads them
(``tolist``) once per token — for streaming, and to stop at <EOS> — and nothing else.

The draws come from MLX's generator, not NumPy's, so for the same seed MLX and NumPy sample
different (equally distributed) texts; greedy decoding is the same on both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from mlxrnn.models.decoding import SamplingOptions


def filter_logits(logits: mx.array, options: SamplingOptions, banned: mx.array | None) -> mx.array:
    """logits (B, V) → logits with −∞ wherever :func:`next_token_distribution` gives probability 0,
    the rest shifted and divided by the temperature: softmax of the result is that distribution."""
    z = logits.astype(mx.float32)
    if banned is not None:
        z = mx.where(banned, -mx.inf, z)
    # Shift the best allowed logit to 0 before dividing, so a tiny temperature cannot overflow.
    z = (z - mx.max(z, axis=-1, keepdims=True)) / options.temperature
    vocab = z.shape[-1]
    if options.top_k is not None and options.top_k < vocab:
        kth = mx.topk(z, options.top_k, axis=-1).min(axis=-1, keepdims=True)
        z = mx.where(z < kth, -mx.inf, z)
    if options.top_p is not None and options.top_p < 1.0:
        probs = mx.softmax(z, axis=-1)
        order = mx.argsort(-probs, axis=-1)
        sorted_probs = mx.take_along_axis(probs, order, axis=-1)
        # Keep a token if the mass before it is still short of p (the top token always stays).
        keep_sorted = (mx.cumsum(sorted_probs, axis=-1) - sorted_probs) < options.top_p
        keep = mx.take_along_axis(keep_sorted, mx.argsort(order, axis=-1), axis=-1)
        z = mx.where(keep, z, -mx.inf)
    return z


class TokenSampler:
    """Batch sampling from an embedding- or one-hot-input :class:`SequenceModel` on MLX.

    ``stream(context, seed)`` feeds ``context`` (B, T) ids, then yields the drawn ids of every
    step as a list of B ints. ``compiled=False`` runs the same per-token functions eagerly (the
    draws are identical for the same seed; compiling only removes per-op dispatch).
    """

    def __init__(self, model: Any, options: SamplingOptions, banned: Sequence[int] = (), compiled: bool = True):
        if model.xp.name != "mlx":
            raise ValueError("TokenSampler runs on the MLX backend")
        self.model, self.options = model, options.validate()
        vocab = model.config.output_size
        ban = np.zeros(vocab, dtype=bool)
        ban[list(banned)] = True
        self.banned = mx.array(ban) if ban.any() else None
        xp = model.xp
        if model.config.input_kind == "embedding":
            inputs = model.embedding.params["weight"]
        else:  # one-hot inputs: the projection of the identity is the table
            inputs = xp.from_numpy(np.eye(model.config.input_size))
        self.table = model.rnn.project_inputs(inputs)  # (V, G·H), once per sampler
        self.head_weight, self.head_bias = model._head_weight(), model.head.params.get("b")
        mx.eval(self.table, self.head_weight)
        wrap = mx.compile if compiled else (lambda fn: fn)
        self._draw, self._advance = wrap(self._draw_fn), wrap(self._advance_fn)

    def _draw_fn(self, logits: mx.array, key: mx.array) -> tuple[mx.array, mx.array]:
        key, draw_key = mx.random.split(key)
        z = filter_logits(logits, self.options, self.banned)
        if self.options.greedy:
            tokens = mx.argmax(z, axis=-1)
        else:
            tokens = mx.random.categorical(z, axis=-1, key=draw_key)
        return tokens.astype(mx.int32), key

    def _advance_fn(self, tokens: mx.array, state: Any, key: mx.array) -> tuple[mx.array, Any, mx.array]:
        h, state = self.model.rnn.step(x_proj=mx.take(self.table, tokens, axis=0), state=state)
        logits = mx.matmul(h, self.head_weight)
        if self.head_bias is not None:
            logits = logits + self.head_bias
        tokens, key = self._draw_fn(logits, key)
        return tokens, state, key

    def stream(self, context: np.ndarray, seed: int | None = None) -> Iterator[list[int]]:
        """Feed ``context`` (B, T) host ids (validated by the model), then yield B ids per token."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2**63))
        key = mx.random.key(seed)
        logits, state, _ = self.model.forward(context)
        tokens, key = self._draw(logits[:, -1, :], key)
        while True:
            yield tokens.tolist()  # the one read-back per token
            tokens, state, key = self._advance(tokens, state, key)
