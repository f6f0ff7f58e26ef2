"""Which point-wise kernels the NumPy backend runs, and why: compiled (numba) or plain NumPy.

``auto`` (the default; ``MLXRNN_KERNELS`` or ``NumpyBackend(kernels=...)`` override it) picks
the numba kernels when numba is installed (``pip install 'mlxrnn[fast]'``) and the dtype is
float32; otherwise the NumPy ones, which stay the reference. numba is detected without being
imported, and imported only when a NumPy backend first runs a kernel, so ``import mlxrnn``
stays NumPy-only. :func:`kernel_choice` returns the pick with a one-sentence reason, which
``mlxrnn info`` prints.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailable, ConfigError

KERNEL_NAMES = ("auto", "numpy", "numba")
FAST_INSTALL_HINT = "pip install 'mlxrnn[fast]'"


def numba_installed() -> bool:
    """Whether ``numba`` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class KernelChoice:
    name: str  #: "numba" or "numpy"
    reason: str  #: one sentence saying why
    load_seconds: float | None = None  #: time to import the numba kernels (not their compilation)


def _requested(requested: str | None) -> tuple[str, str]:
    if requested is not None:
        source = "requested"
    else:
        requested = os.environ.get("MLXRNN_KERNELS", "auto").strip().lower() or "auto"
        source = "MLXRNN_KERNELS" if requested != "auto" else "auto"
    if requested not in KERNEL_NAMES:
        label = "MLXRNN_KERNELS value" if source == "MLXRNN_KERNELS" else "kernels"
        raise ConfigError(f"unknown {label} {requested!r}: choose one of {', '.join(KERNEL_NAMES)}")
    return requested, source


def _load_numba() -> tuple[float | None, str | None]:
    """Import the numba kernels module; (seconds, None) or (None, why it failed)."""
    started = time.perf_counter()
    try:
        import mlxrnn.backend.numba_pointwise  # noqa: F401
    except Exception as error:  # installed but broken (e.g. a NumPy it does not support yet)
        return None, f"{type(error).__name__}: {error}"
    return time.perf_counter() - started, None


def kernel_choice(dtype: str = "float32", requested: str | None = None) -> KernelChoice:
    """The kernels a NumPy backend of ``dtype`` runs, and why (imports numba when it may pick it).

    Raises ConfigError for an unknown name and BackendUnavailable when numba is requested but
    cannot be used.
    """
    name, source = _requested(requested)
    asked = "MLXRNN_KERNELS" if source == "MLXRNN_KERNELS" else "the caller"
    if name == "numpy":
        return KernelChoice("numpy", f"{asked} asked for the plain NumPy kernels")
    if not numba_installed():
        if name == "numba":
            raise BackendUnavailable(f"numba kernels were requested but numba is not installed; {FAST_INSTALL_HINT}")
        return KernelChoice("numpy", f"numba is not installed ({FAST_INSTALL_HINT} for compiled kernels)")
    if name == "auto" and dtype != "float32":
        return KernelChoice("numpy", f"{dtype}: numba's exact scalar tanh is slower than NumPy's vectorised one")
    seconds, failure = _load_numba()
    if failure is not None:
        if name == "numba":
            raise BackendUnavailable(f"numba is installed but its kernels failed to load ({failure})")
        return KernelChoice("numpy", f"numba is installed but its kernels failed to load ({failure})")
    why = f"{asked} asked for them" if name == "numba" else "numba is installed: one compiled pass per time step"
    return KernelChoice("numba", why, seconds)


def make_kernels(choice: KernelChoice) -> Any:
    """The kernels object of ``choice`` (see mlxrnn/backend/pointwise.py for the methods)."""
    if choice.name == "numba":
        from .numba_pointwise import NumbaKernels

        return NumbaKernels()
    from .numpy_pointwise import NumpyKernels

    return NumpyKernels()
