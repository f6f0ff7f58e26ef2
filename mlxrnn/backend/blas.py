"""The BLAS library under NumPy: which one, which kernel (CPU architecture) it runs, its threads.

The NumPy backend's speed is mostly its matrix products, so a speed number means little without
the kernel that computed it. OpenBLAS picks its kernel for the CPU at load time, unless the
environment pins one: ``OPENBLAS_CORETYPE=Haswell`` (set on some machines for old OpenBLAS
builds) makes a current OpenBLAS run its AVX2 kernel on an AVX-512 CPU, about half the sgemm
rate, while PyTorch (oneDNN) ignores the variable. :func:`kernel_warning` says so in one line.

The facts come from ``threadpoolctl`` (``pip install 'mlxrnn[fast]'``), imported only when
asked; without it the report says it cannot tell, and nothing else changes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass

#: the instruction-set levels a BLAS kernel or a CPU can use, oldest first
ISA_LEVELS = ("SSE", "AVX", "AVX2", "AVX-512")

#: OpenBLAS's kernel (``architecture``) names by the newest vector instructions they use; names
#: not listed (Prescott, Nehalem, Core2, Atom, Opteron, ...) are SSE kernels
_OPENBLAS_KERNEL_LEVEL = {
    "sandybridge": 1, "bulldozer": 1, "piledriver": 1,
    "haswell": 2, "zen": 2, "excavator": 2, "steamroller": 2,
    "skylakex": 3, "cooperlake": 3, "sapphirerapids": 3,
}

#: the variables that pin OpenBLAS's kernel (``OPENBLAS_CORETYPE``) or hint its cache size
PIN_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class BlasLibrary:
    """One BLAS library loaded in this process, as threadpoolctl sees it."""

    name: str  #: threadpoolctl's internal_api: "openblas", "mkl", "blis", ...
    version: str | None
    architecture: str | None  #: the kernel it runs (OpenBLAS, BLIS); None where the library does not say
    threads: int
    path: str

    def describe(self) -> str:
        """e.g. "OpenBLAS 0.3.31, kernel SkylakeX (AVX-512), 2 threads"."""
        label = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(self.name, self.name)
        text = f"{label} {self.version or '(version unknown)'}"
        if self.architecture:
            level = kernel_level(self.name, self.architecture)
            text += f", kernel {self.architecture}" + (f" ({ISA_LEVELS[level]})" if level is not None else "")
        return f"{text}, {self.threads} thread{'s' if self.threads != 1 else ''}"


def threadpoolctl_installed() -> bool:
    """Whether ``threadpoolctl`` can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec("threadpoolctl") is not None
    except (ImportError, ValueError):
        return False


def blas_libraries() -> list[BlasLibrary] | None:
    """The BLAS libraries loaded in this process (NumPy's first), or None without threadpoolctl."""
    if not threadpoolctl_installed():
        return None
    import numpy  # noqa: F401  (loads NumPy's BLAS, so threadpoolctl finds it)
    from threadpoolctl import threadpool_info

    return libraries_from_info(threadpool_info())


def libraries_from_info(info: list[Mapping]) -> list[BlasLibrary]:
    """:class:`BlasLibrary` rows from threadpoolctl's ``threadpool_info()`` dicts (BLAS ones only)."""
    return [BlasLibrary(str(row.get("internal_api")), row.get("version"), row.get("architecture"),
                        int(row.get("num_threads") or 1), str(row.get("filepath", "")))
            for row in info if row.get("user_api") == "blas"]


def kernel_level(library: str, architecture: str | None) -> int | None:
    """The index in :data:`ISA_LEVELS` of an OpenBLAS kernel name; None for other libraries or no name."""
    if library != "openblas" or not architecture:
        return None
    return _OPENBLAS_KERNEL_LEVEL.get(architecture.lower(), 0)


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux x86), or None where they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_level(flags: set[str] | None) -> int | None:
    """The newest :data:`ISA_LEVELS` entry the CPU supports (from its flags), None when unknown."""
    if not flags:
        return None
    if "avx512f" in flags:
        return 3
    if "avx2" in flags and "fma" in flags:
        return 2
    return 1 if "avx" in flags else 0


def kernel_warning(libraries: list[BlasLibrary] | None, environ: Mapping[str, str] | None = None,
                   flags: set[str] | None = None) -> str | None:
    """One line when a BLAS runs an older kernel than the CPU supports, naming the cause when the
    environment pins it; None when all is well or it cannot be told (no threadpoolctl, not x86)."""
    environ = os.environ if environ is None else environ
    level = cpu_level(cpu_flags() if flags is None else flags)
    for library in libraries or []:
        running = kernel_level(library.name, library.architecture)
        if level is None or running is None or running >= level:
            continue
        pinned = environ.get("OPENBLAS_CORETYPE")
        cause = (f"OPENBLAS_CORETYPE={pinned} in the environment pins it"
                 if pinned else "this OpenBLAS build has no newer kernel for it")
        return (f"warning: OpenBLAS runs its {library.architecture} kernel ({ISA_LEVELS[running]}) on a CPU with "
                f"{ISA_LEVELS[level]}: {cause}; matrix products may run at half speed or less"
                + (" (unset it to time the real kernel)" if pinned else ""))
    return None


def blas_report() -> dict:
    """What ``mlxrnn info`` and the bench header print: {"blas": [descriptions] or None,
    "blas_warning": one line or None, "blas_pinned": the pin variables set in the environment}."""
    libraries = blas_libraries()
    return {
        "blas": None if libraries is None else [library.describe() for library in libraries],
        "blas_warning": kernel_warning(libraries),
        "blas_pinned": {name: os.environ[name] for name in PIN_VARIABLES if name in os.environ},
    }
