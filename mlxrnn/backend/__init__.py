"""Choosing an array backend: ``get_backend(name="auto", dtype="float32")``.

``auto`` (the default, overridable with the ``MLXRNN_BACKEND`` environment variable) picks MLX
when it is importable *and* has a GPU (Metal on Apple silicon, or CUDA); otherwise NumPy.
MLX's CPU-only Linux build is never auto-picked: its bundled reference BLAS is ~40x slower
than NumPy's OpenBLAS on a 1024x1024 sgemm on our development machine. :func:`auto_choice`
returns the pick together with the reason, which ``mlxrnn info`` prints.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import cache

from ..errors import BackendUnavailable, ConfigError
from .numpy_backend import NumpyBackend
from .protocol import Array, ArrayBackend

BACKEND_NAMES = ("auto", "numpy", "mlx")
DTYPE_NAMES = ("float32", "float64")
MLX_INSTALL_HINT = (
    "install it with: pip install 'mlxrnn[mlx]' (Apple silicon: pip install mlx; Linux: pip install 'mlx[cpu]')"
)

__all__ = [
    "Array",
    "ArrayBackend",
    "BACKEND_NAMES",
    "AutoChoice",
    "auto_choice",
    "get_backend",
    "mlx_installed",
]


def mlx_installed() -> bool:
    """Whether ``mlx`` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx.core") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class AutoChoice:
    name: str  #: the backend ``auto`` resolves to
    reason: str  #: one sentence saying why


def auto_choice() -> AutoChoice:
    """What ``get_backend("auto")`` picks on this machine, and why (imports MLX if installed)."""
    if not mlx_installed():
        return AutoChoice("numpy", "MLX is not installed")
    try:
        from .mlx_backend import _has_gpu
    except Exception as error:  # installed but broken: fall back, and say so
        return AutoChoice("numpy", f"MLX is installed but failed to import ({error})")
    if _has_gpu():
        return AutoChoice("mlx", "MLX is installed and has a GPU device (Metal or CUDA)")
    return AutoChoice(
        "numpy",
        "MLX is installed but has no GPU here; its CPU build's BLAS is much slower than NumPy's",
    )


def _resolve_name(name: str | None) -> str:
    source = "backend"
    if name is None or name == "auto":
        name = os.environ.get("MLXRNN_BACKEND", "auto").strip().lower() or "auto"
        source = "backend" if name == "auto" else "backend (from MLXRNN_BACKEND)"
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown {source} {name!r}: choose one of {', '.join(BACKEND_NAMES)}")
    return auto_choice().name if name == "auto" else name


@cache
def _make_backend(name: str, dtype: str) -> ArrayBackend:
    if name == "numpy":
        return NumpyBackend(dtype)
    if not mlx_installed():
        raise BackendUnavailable(f"the mlx backend was requested but MLX is not installed; {MLX_INSTALL_HINT}")
    try:
        from .mlx_backend import MLXBackend, _has_gpu
    except ImportError as error:  # installed but broken (e.g. a missing shared library)
        raise BackendUnavailable(
            f"MLX is installed but cannot be imported ({error}); reinstall it: {MLX_INSTALL_HINT}"
        ) from None

    if dtype == "float64":
        import mlx.core as mx

        if mx.default_device() != mx.cpu and _has_gpu():
            raise BackendUnavailable(
                "float64 is not supported on MLX's GPU; use dtype float32, or the numpy backend for float64"
            )
    return MLXBackend(dtype)


def get_backend(name: str | None = "auto", dtype: str = "float32") -> ArrayBackend:
    """Return the array backend ``name`` ("auto", "numpy" or "mlx") computing in ``dtype``.

    Backends are cached: the same (name, dtype) gives the same object.
    Raises :class:`ConfigError` for an unknown name or dtype and
    :class:`BackendUnavailable` when MLX is requested but cannot be used.
    """
    if isinstance(name, (NumpyBackend,)) or (name is not None and hasattr(name, "matmul")):
        return name  # already a backend
    if dtype not in DTYPE_NAMES:
        raise ConfigError(f"unknown dtype {dtype!r}: choose float32 or float64")
    return _make_backend(_resolve_name(name), dtype)
