"""Checks of user-supplied NumPy values, shared by layers, models, losses and the trainer.

A single NaN in an input, a mask or an initial state makes every output NaN, and a value beyond
the range of the backend's float dtype (1e300 in float32) becomes inf when cast, after which one
update turns every weight into NaN. Both are refused with the index of the first bad value.
Backend arrays (e.g. MLX) are not inspected here: reading them back would cost a device sync
per call; NumPy arrays are checked in one vectorised pass, negligible next to the recurrence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.errors import DataError, ShapeError


def _index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_finite(values: Any, what: str, advice: str, dtype: Any = None) -> None:
    """Raise DataError if a NumPy float array holds NaN/Inf or, given ``dtype`` (the backend's
    float type), a value beyond its range. ``what`` names the array ("dense inputs",
    "batch['targets']"); ``advice`` ends the message. Other values pass unchecked."""
    if not isinstance(values, np.ndarray) or values.dtype.kind != "f" or values.size == 0:
        return
    finite = np.isfinite(values)
    if not finite.all():
        where = _index(~finite)
        verb = "contain" if what.endswith("s") else "contains"
        raise DataError(f"{what} {verb} NaN or Inf (first at index {where}, value {values[where]}); {advice}")
    if dtype is None:
        return
    info = np.finfo(np.dtype(dtype))
    if np.finfo(values.dtype).max > info.max:
        beyond = np.abs(values) > info.max
        if beyond.any():
            where = _index(beyond)
            verb = "hold" if what.endswith("s") else "holds"
            raise DataError(
                f"{what} {verb} {values[where]:.3g} (first at index {where}), beyond the {np.dtype(dtype).name} "
                f"range (±{info.max:.3g}) the model computes in; rescale the data"
            )


def shape_error(name: str, expected: str, got: Any) -> ShapeError:
    """The one wording of a wrong shape: "<name> must have shape <expected>; got (…)"."""
    return ShapeError(f"{name} must have shape {expected}; got {tuple(got)}")
