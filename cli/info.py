"""``mlxrnn info``: versions, NumPy's BLAS (library, kernel, threads), usable backends, the device
MLX computes on, which backend ``auto`` picks and why, and which point-wise kernels the NumPy
backend's time loop runs (numba or plain NumPy)."""

from __future__ import annotations

import os
import platform
import sys

import click
import numpy as np

import mlxrnn
from mlxrnn.backend import auto_choice, mlx_installed
from mlxrnn.backend.blas import blas_report
from mlxrnn.backend.kernels import kernel_choice, numba_installed
from mlxrnn.errors import MLXRNNError

from .common import echo_json, handle_errors


def collect_info() -> dict:
    info = {
        "mlxrnn": mlxrnn.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "numpy": np.__version__,
        "mlx": None,
        "mlx_default_device": None,
        "mlx_device": None,
        "backends": ["numpy"],
        "env_MLXRNN_BACKEND": os.environ.get("MLXRNN_BACKEND"),
    }
    if mlx_installed():
        try:
            import mlx.core as mx

            info["mlx"] = getattr(mx, "__version__", "unknown")
            from mlxrnn.backend.mlx_backend import device_description

            info["mlx_default_device"] = str(mx.default_device())
            info["mlx_device"] = device_description()
            info["backends"].append("mlx")
        except Exception as error:  # installed but broken
            info["mlx"] = f"installed, fails to import: {error}"
    choice = auto_choice()
    info["auto"] = choice.name
    info["auto_reason"] = choice.reason
    info["numba"] = _version("numba") if numba_installed() else None
    info["env_MLXRNN_KERNELS"] = os.environ.get("MLXRNN_KERNELS")
    try:
        kernels = kernel_choice("float32")
        info["numpy_kernels"], info["numpy_kernels_reason"] = kernels.name, kernels.reason
    except MLXRNNError as error:  # e.g. MLXRNN_KERNELS=numba without numba: report it, do not fail
        info["numpy_kernels"], info["numpy_kernels_reason"] = None, str(error)
    info.update(blas_report())  # the BLAS under NumPy, its kernel and threads, a warning if pinned old
    return info


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@handle_errors
def info(as_json: bool) -> None:
    """Show versions, the usable backends, which one `auto` picks and why, and the NumPy kernels.

    \b
    Example:
      mlxrnn info
      mlxrnn info --json
    """
    data = collect_info()
    if as_json:
        echo_json(data)
        return
    click.echo(f"mlxrnn {data['mlxrnn']}  (Python {data['python']}, {data['platform']})")
    click.echo(f"numpy  {data['numpy']}")
    if data["blas"] is None:
        click.echo("numpy BLAS: cannot tell (pip install threadpoolctl, or mlxrnn[fast], to see it)")
    for line in data["blas"] or []:
        click.echo(f"numpy BLAS: {line}")
    if data["blas_warning"]:
        click.echo(data["blas_warning"])
    click.echo(f"mlx    {data['mlx'] or 'not installed (pip install mlxrnn[mlx])'}")
    if data["mlx_device"]:
        click.echo(f"mlx device: {data['mlx_device']}")
    click.echo(f"usable backends: {', '.join(data['backends'])}")
    click.echo(f"auto picks: {data['auto']} ({data['auto_reason']})")
    click.echo(f"numba  {data['numba'] or 'not installed (pip install mlxrnn[fast])'}")
    kernels = data["numpy_kernels"] or "unusable"
    click.echo(f"numpy backend kernels (float32): {kernels} ({data['numpy_kernels_reason']})")
    if data["env_MLXRNN_BACKEND"]:
        click.echo(f"MLXRNN_BACKEND={data['env_MLXRNN_BACKEND']} overrides auto", err=False)
    sys.stdout.flush()
