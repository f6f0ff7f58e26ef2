"""Sampling on MLX: the whole per-token path on the device, only the drawn ids come back.

Per token, one compiled call does what :mod:`mlxrnn.lm.sampling` does on the host for NumPy:

    x_proj = P[y⟨t−1⟩]                        a row of layer 0's projected table P (V, G·H)
    state_ℓ, x = cell_ℓ.step(x_proj, state_ℓ)  every layer, caches unused (never computed)
    z = h W_y + b_y                            logits (B, V)
    z[banned] = −∞;  z = (z − max z) / τ       <PAD> (and <UNK>, and <EOS> for characters) never drawn
    top-k, then top-p (nucleus) filtering      as :func:`mlxrnn.models.decoding.next_token_distribution`
    y⟨t⟩ = argmax(z + g),  g ~ Gumbel(0, 1)   an exact draw from softmax(z); argmax z when greedy

Keys: the seed's key is split on the device into chunks of :data:`KEY_CHUNK` per-token keys,
read back once per chunk; each token's key then enters the compiled call as a plain input. The
draws are a function of the seed alone — the same seed gives the same text on every run,
compiled or not — and a token costs no key arithmetic on the device. The ids, (B,) uint32, stay
on the device as the next call's input; the caller reads them (``tolist``) once per token — for
streaming, and to stop at <EOS> — and nothing else. The state is kept per layer, as the cells
take it, so no token pays for stacking it into the public (L, B, H) layout and back.

The draws come from MLX's generator, not NumPy's, so for the same seed MLX and NumPy sample
different (equally distributed) texts; greedy decoding is the same on both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.models.decoding import SamplingOptions


def filter_logits(logits: mx.array, options: SamplingOptions, banned: mx.array | None) -> mx.array:
    """logits (B, V) → logits with −∞ wherever :func:`next_token_distribution` gives probability 0,
    the rest divided by the temperature (after shifting the maximum to 0): softmax of the
    result is that distribution."""
    z = logits.astype(mx.float32)
    if banned is not None:
        z = mx.where(banned, -mx.inf, z)
    if options.temperature != 1.0:
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
        # Keep a token if the mass before it is still short of p. The most likely (allowed) token
        # always stays: a p that float32 rounds to 0 (1e-320) would otherwise keep none, and the
        # argmax of an all −∞ row is <PAD>.
        keep_sorted = (mx.cumsum(sorted_probs, axis=-1) - sorted_probs) < options.top_p
        keep_sorted = mx.logical_or(keep_sorted, mx.arange(vocab) == 0)
        keep = mx.take_along_axis(keep_sorted, mx.argsort(order, axis=-1), axis=-1)
        z = mx.where(keep, z, -mx.inf)
    return z


#: per-token keys split off at once (one read-back per this many tokens)
KEY_CHUNK = 64


class _TokenKeys:
    """Per-token keys from one seed: split on the device in chunks, handed out as leaf arrays."""

    def __init__(self, seed: int):
        self.key, self.chunk, self.used = mx.random.key(seed), np.zeros((0, 2), np.uint32), 0

    def next(self) -> mx.array:
        if self.used == len(self.chunk):
            keys = np.array(mx.random.split(self.key, KEY_CHUNK + 1))
            self.key, self.chunk, self.used = mx.array(keys[0]), keys[1:], 0
        self.used += 1
        return mx.array(self.chunk[self.used - 1])


class TokenSampler:
    """Batch sampling from an embedding- or one-hot-input unidirectional :class:`SequenceModel` on MLX.

    ``stream(context, seed)`` feeds ``context`` (B, T) ids, then yields the drawn ids of every
    step as a list of B ints. ``compiled=False`` runs the same per-token functions eagerly (the
    draws are identical for the same seed; compiling only removes per-op dispatch).
    """

    def __init__(self, model: Any, options: SamplingOptions, banned: Sequence[int] = (), compiled: bool = True):
        if model.xp.name != "mlx":
            raise ConfigError(f"TokenSampler runs on the MLX backend; this model is on {model.xp.name}")
        self.model, self.options = model, options.validate()
        vocab = model.config.output_size
        ban = np.zeros(vocab, dtype=bool)
        ban[list(banned)] = True
        self.banned = mx.array(ban) if ban.any() else None
        xp, rnn = model.xp, model.rnn
        rnn._check_steppable()  # a ConfigError for a bidirectional stack: it cannot run token by token
        if model.config.input_kind == "embedding":
            inputs = model.embedding.params["weight"]
        else:  # one-hot inputs: the projection of the identity is the table
            inputs = xp.from_numpy(np.eye(model.config.input_size))
        self.table = rnn.project_inputs(inputs)  # (V, G·H), once per sampler
        self.layer_params = [rnn._direction_params(layer, 0) for layer in range(rnn.num_layers)]
        self.head_weight, self.head_bias = model._head_weight(), model.head.params.get("b")
        mx.eval(self.table, self.head_weight)
        wrap = mx.compile if compiled else (lambda fn: fn)
        self._draw, self._advance = wrap(self._draw_fn), wrap(self._advance_fn)

    def _draw_fn(self, logits: mx.array, key: mx.array) -> mx.array:
        z = filter_logits(logits, self.options, self.banned)
        if not self.options.greedy:
            z = z + mx.random.gumbel(z.shape, key=key)  # Gumbel-max: an exact draw from softmax(z)
        return mx.argmax(z, axis=-1)  # (B,) uint32 ids

    def _advance_fn(self, tokens: mx.array, states: list, key: mx.array) -> tuple[mx.array, list]:
        xp, new_states = self.model.xp, []
        x_proj = mx.take(self.table, tokens, axis=0)  # layer 0: a row of the projected table
        for layer, (cell, params) in enumerate(zip(self.model.rnn.cells, self.layer_params)):
            if layer > 0:
                x_proj = mx.matmul(new_states[-1][0], params["W_x"]) + params["b"]
            new_states.append(cell.step(xp, params, x_proj, states[layer])[0])
        logits = mx.matmul(new_states[-1][0], self.head_weight)
        if self.head_bias is not None:
            logits = logits + self.head_bias
        return self._draw_fn(logits, key), new_states

    def stream(self, context: np.ndarray, seed: int | None = None) -> Iterator[list[int]]:
        """Feed ``context`` (B, T) host ids (validated by the model), then yield B ids per token."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2**63))
        keys = _TokenKeys(seed)
        logits, final_state, _ = self.model.forward(context)
        parts = final_state if isinstance(final_state, tuple) else (final_state,)
        states = [tuple(part[layer] for part in parts) for layer in range(self.model.rnn.num_layers)]
        tokens = self._draw(logits[:, -1, :], keys.next())
        while True:
            yield tokens.tolist()  # the one read-back per token
            tokens, states = self._advance(tokens, states, keys.next())
