"""The machine a benchmark runs on: its facts (CPU, BLAS library, kernel and threads, versions, MLX device), its matrix
multiply speed as a yardstick (sgemm GFLOP/s), and waiting until it is quiet before timing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlxrnn.backend.blas import blas_report
from mlxrnn.errors import MLXRNNError


def time_calls(fn: Callable[[], None], warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` (already synchronising) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def sgemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    """NumPy's float32 matmul rate on a size² product: the machine-peak yardstick (median, GFLOP/s)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)
    seconds = time_calls(lambda: np.matmul(a, b, out=out), warmup=2, repeats=repeats)
    return 2.0 * size**3 / statistics.median(seconds) / 1e9


def machine_info() -> dict:
    """CPU, cores, OS, library versions and current load: what a result needs to be read."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
    }
    for dist in ("mlxrnn", "numpy", "mlx", "torch", "numba"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        info["numpy_blas"] = None
    # what the build says above; what runs (kernel, threads) and whether the environment pins it:
    info.update(blas_report())
    info["thread_env"] = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                     "MLXRNN_MALLOC", "MLXRNN_KERNELS") if k in os.environ}
    try:  # which point-wise kernels the ``numpy`` rows ran, and why
        from mlxrnn.backend.kernels import kernel_choice

        choice = kernel_choice("float32")
        info["numpy_kernels"] = f"{choice.name} ({choice.reason})"
    except MLXRNNError as error:
        info["numpy_kernels"] = f"unusable ({error})"
    info["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    info["mlx_device"] = mlx_device()
    return info


def mlx_device() -> str | None:
    """The device MLX computes on here (e.g. "gpu: Apple M2 Pro (Metal)"), None without MLX."""
    from mlxrnn.backend import mlx_installed

    if not mlx_installed():
        return None
    try:
        from mlxrnn.backend.mlx_backend import device_description

        return device_description()
    except Exception as error:  # installed but broken: say so rather than fail the report
        return f"unavailable ({error})"


def _cpu_model() -> str:
    try:
        if sys.platform == "darwin":
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def wait_until_quiet(max_busy: float, timeout: float = 600.0, window: float = 2.0) -> bool:
    """Wait until all processes together keep the CPUs at most ``max_busy`` busy over a
    ``window``; False on timeout (or where /proc/stat is missing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = busy_cpu_seconds()
        if before is None:
            return False
        time.sleep(window)
        if (busy_cpu_seconds() - before) / (window * (os.cpu_count() or 1)) <= max_busy:
            return True
    return False
