"""Figures: training curves, gradient flow through time, benchmark ratios, the quality curve.

matplotlib is an optional extra (``pip install 'mlxrnn[plot]'``) and is imported only when a
figure is drawn, by :func:`require_matplotlib`: ``import mlxrnn`` and even ``import mlxrnn.plot``
never load it. Without it, drawing raises :class:`~mlxrnn.errors.MissingExtra` with the one
line that says how to install it; the CLI then prints its text summary instead.

Every figure is written by :func:`save_figure`: PNG, SVG or PDF by the file's suffix, through a
temporary file renamed into place, so a failed draw never leaves half a picture behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlxrnn.errors import ConfigError, DataError, MissingExtra

#: the suffixes --out accepts (matplotlib writes each without extra software)
FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "drawing figures needs matplotlib, an optional extra: pip install 'mlxrnn[plot]'"


def require_matplotlib() -> Any:
    """Import matplotlib with its file-only Agg backend and return ``matplotlib.pyplot``.

    Raises MissingExtra (one line, with the install command) when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise MissingExtra(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: never needs a display, works over ssh and in CI
    import matplotlib.pyplot as plt

    return plt


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path after checking its suffix and folder, before anything is computed."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"--out must end in {', '.join(FORMATS)} (the figure's format); got {str(path)!r}")
    if path.is_dir():
        raise ConfigError(f"--out {path} is a directory; give a file name such as {path / 'figure.png'}")
    if not path.parent.is_dir():
        raise DataError(f"the folder of --out {path} does not exist; create it first")
    return path


def save_figure(figure: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``figure`` to ``path`` (format from the suffix) atomically, close it, return the path."""
    path = check_output_path(path)
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}{path.suffix}")
    try:
        # No timestamps or software versions in the file: regenerated figures differ only when
        # their content does.
        metadata = {"Software": None} if path.suffix.lower() == ".png" else {"Date": None}
        figure.savefig(temporary, dpi=dpi, metadata=metadata)
        os.replace(temporary, path)
    except OSError as error:
        raise DataError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        figure.clear()
        require_matplotlib().close(figure)
        if temporary.exists():
            temporary.unlink()
    return path
