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


#: the modules whose arrays the backends use as they are (NumPy's, and MLX's on the MLX backend)
_OWN_ARRAYS = ("numpy", "mlx")


def check_layer_input(x: Any, name: str) -> Any:
    """``x`` as a layer takes it: a NumPy array or the backend's own array as it is, a (nested)
    list of numbers as a NumPy array, as the models take them. Another library's array (a torch
    tensor, a JAX array) is refused in one line that says how to convert it: reading it through
    NumPy would copy it silently, or fail deep inside the layer on a GPU tensor."""
    if isinstance(x, (list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError:  # rows of different lengths
            raise ShapeError(f"{name} is a ragged list (rows of different lengths); pad it first "
                             "(mlxrnn.pad_sequences) and pass `lengths`") from None
        if array.dtype.kind not in "biuf":
            raise ShapeError(f"{name} must hold numbers, got a list of {array.dtype} values")
        return array
    if type(x).__module__.split(".")[0] not in _OWN_ARRAYS:
        kind = f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"
        raise ShapeError(f"{name} is a {kind}; pass a NumPy array (tensor.numpy(), or .detach().cpu().numpy() "
                         "for a tensor on a GPU) or a list")
    return x
