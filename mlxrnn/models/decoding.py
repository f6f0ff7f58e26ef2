"""Decoding primitives shared by every generating model: the next-token distribution and draws.

``next_token_distribution`` turns logits (B, V) into probabilities after temperature, banned
ids, top-k and top-p; ``draw_tokens`` picks one id per row. They know no model and no text, so
the language model's sampler and the sequence generator use the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mlxrnn.errors import ConfigError

#: num_samples × vocabulary size above this would need gigabytes per sampling step
MAX_BATCH_PROBABILITIES = 2**27


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    allow_unk: bool = False

    def validate(self) -> SamplingOptions:
        """Check the controls (ConfigError naming the field); returns the options."""
        if not (
            isinstance(self.temperature, (int, float)) and self.temperature > 0 and math.isfinite(self.temperature)
        ):
            raise ConfigError(f"--temperature must be > 0, got {self.temperature!r} (use --greedy for argmax)")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"--top-k must be a positive integer, got {self.top_k!r}")
        if self.top_p is not None and not (
            isinstance(self.top_p, (int, float)) and not isinstance(self.top_p, bool) and 0.0 < self.top_p <= 1.0
        ):
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p!r}")
        return self


def next_token_distribution(logits: np.ndarray, options: SamplingOptions, banned: Sequence[int] = ()) -> np.ndarray:
    """logits (B, V) → probabilities (B, V) after temperature, banned ids, top-k and top-p."""
    z = np.array(logits, dtype=np.float64)  # a copy: the caller's logits stay untouched
    z[:, list(banned)] = -np.inf
    # Shift the best allowed logit to 0 *before* dividing, so a tiny temperature sends the others
    # to -inf (greedy in the limit) instead of overflowing to inf - inf = NaN.
    z -= z.max(axis=1, keepdims=True)
    with np.errstate(over="ignore", under="ignore"):
        z /= options.temperature
    if options.top_k is not None and options.top_k < z.shape[1]:
        kth = np.partition(z, -options.top_k, axis=1)[:, -options.top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    z = z - z.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    if options.top_p is not None and options.top_p < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        # Keep a token if the mass before it is still short of p (so the top token always stays).
        keep_sorted = (np.cumsum(sorted_probs, axis=1) - sorted_probs) < options.top_p
        keep_sorted[:, 0] = True  # the most likely token, whatever p is (as on MLX)
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def draw_tokens(probs: np.ndarray, rng: np.random.Generator, greedy: bool = False) -> np.ndarray:
    """One token id per row of probs (B, V): argmax when greedy, else an inverse-CDF draw."""
    if greedy:
        return probs.argmax(axis=1)
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative <= u).sum(axis=1), probs.shape[1] - 1)


