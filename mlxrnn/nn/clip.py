"""Gradient clipping, the standard remedy for exploding gradients in RNNs.

``clip_grad_norm`` rescales all gradients together when their global L2 norm
‖g‖ = sqrt(Σ_p Σ g_p²) exceeds ``max_norm`` (Pascanu et al., 2013); it returns the norm
*before* clipping so it can be logged. ``clip_grad_value`` clamps each element to [−v, v].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlxrnn.errors import ConfigError


def global_norm(xp, grads: Mapping[str, Any]) -> Any:
    """sqrt(Σ over every gradient element of g²), as a 0-d backend array."""
    total = None
    for g in grads.values():
        s = xp.sum(g * g)
        total = s if total is None else total + s
    return xp.sqrt(total) if total is not None else xp.zeros(())


def clip_grad_norm(xp, grads: Mapping[str, Any], max_norm: float) -> tuple[dict, Any]:
    """Scale gradients by min(1, max_norm / ‖g‖). Returns (clipped grads, ‖g‖ before clipping)."""
    if not max_norm > 0:
        raise ConfigError(f"clip norm must be > 0, got {max_norm!r}")
    norm = global_norm(xp, grads)
    # Computed without a Python branch so it stays lazy on MLX (no sync per step).
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    return {name: g * scale for name, g in grads.items()}, norm


def clip_grad_value(xp, grads: Mapping[str, Any], max_value: float) -> dict:
    """Clamp every gradient element to [−max_value, max_value]."""
    if not max_value > 0:
        raise ConfigError(f"clip value must be > 0, got {max_value!r}")
    return {name: xp.clip(g, -max_value, max_value) for name, g in grads.items()}


def clip_gradients(xp, grads: Mapping[str, Any], clip_value: float | None, clip_norm: float | None) -> tuple[dict, Any]:
    """The trainer's clipping: by value (if set), then by global norm (if set).

    Returns (grads, norm) with ``norm`` the global norm before norm clipping (after value
    clipping), a 0-d backend array either way.
    """
    if clip_value is not None:
        grads = clip_grad_value(xp, grads, clip_value)
    if clip_norm is not None:
        return clip_grad_norm(xp, grads, clip_norm)
    return grads, global_norm(xp, grads)
