"""Shared by the interop tests: which peer frameworks are installed, tolerances, and running our layer."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_TORCH = importable("torch")
HAS_MLX = importable("mlx") and importable("mlx.core")
HAS_KERAS = importable("keras") and importable("jax")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install torch, CPU build)")
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="MLX is not installed (pip install 'mlx[cpu]' on Linux)")
needs_keras = pytest.mark.skipif(
    not HAS_KERAS, reason="Keras 3 on JAX is not installed (pip install -r .ci/requirements-peers.txt)"
)



TOLERANCE = {"float64": 1e-5, "float32": 1e-4}
TORCH_MODES = ["RNN_TANH", "RNN_RELU", "GRU", "LSTM"]
D, H, B, T = 4, 6, 3, 7


def max_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)))


def run_ours(layer, x, initial_state=None, lengths=None):
    """Forward on any backend -> (outputs, [h] or [h, c]) as NumPy."""
    outputs, state, _ = layer.forward(x, initial_state=initial_state, lengths=lengths)
    parts = list(state) if isinstance(state, tuple) else [state]
    return layer.xp.to_numpy(outputs), [layer.xp.to_numpy(p) for p in parts]


