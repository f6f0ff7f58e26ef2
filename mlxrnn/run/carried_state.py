"""The hidden state carried from one truncated-BPTT window to the next, in a checkpoint.

Training reads the corpus as B parallel streams; the state at the end of one window is the
initial state of the next. A checkpoint taken mid-epoch must keep it for an exact resume. It is
stored beside the optimizer's tensors as ``carry/0`` (the (B, H) state, or h of an LSTM's
(h, c) pair) and ``carry/1`` (c), so it needs no file of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CARRY_PREFIX = "carry/"


def carried_state_tensors(xp, state: Any) -> dict[str, np.ndarray]:
    """The carried recurrent state (an array, an (h, c) pair, or None) as "carry/k" tensors."""
    if state is None:
        return {}
    parts = state if isinstance(state, tuple) else (state,)
    return {f"{CARRY_PREFIX}{k}": xp.to_numpy(part) for k, part in enumerate(parts)}


def split_carried_state(xp, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
    """Inverse of :func:`carried_state_tensors`: (the other tensors, the state or None)."""
    rest = {k: v for k, v in tensors.items() if not k.startswith(CARRY_PREFIX)}
    parts = [xp.from_numpy(tensors[k]) for k in sorted(tensors) if k.startswith(CARRY_PREFIX)]
    if not parts:
        return rest, None
    return rest, (tuple(parts) if len(parts) > 1 else parts[0])
