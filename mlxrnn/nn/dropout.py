"""Inverted dropout masks, drawn in NumPy from the caller's generator.

    y = x ⊙ m,   m = keep / (1 − p),   keep ~ Bernoulli(1 − p)        dL/dx = dL/dy ⊙ m

so E[y] = x and evaluation (no mask) needs no rescaling. Two ways to draw m for a (B, T, F)
activation:

* standard: a fresh mask for every time step, drawn as (T, B, F) (Zaremba et al., 2014);
* locked (variational, Gal & Ghahramani, 2016): one mask per sequence, drawn as (1, B, F) and
  broadcast over the T steps, so a unit is either dropped for the whole window or kept.

Masks are drawn time-major with the batch on axis 1: a data-parallel run draws the masks of the
global batch and keeps its own rows (:class:`mlxrnn.training.distributed.ShardedDropoutRNG`),
and the trainer's generator is saved in checkpoints, so a resumed run draws the same masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def dropout_mask(rng: Any, p: float, steps: int, batch: int, features: int, locked: bool = False) -> np.ndarray:
    """The scaled keep-mask m: (1 if ``locked`` else ``steps``, ``batch``, ``features``) float64.

    ``rng`` is a NumPy Generator (or anything with its ``random(size=...)``); ``p`` ∈ (0, 1).
    """
    keep = rng.random(size=(1 if locked else steps, batch, features)) >= p
    return keep / (1.0 - p)
