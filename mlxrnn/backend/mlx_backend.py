"""The MLX implementation of :class:`~mlxrnn.backend.protocol.ArrayBackend`.

Imported only when the MLX backend is asked for, so ``import mlxrnn`` never loads MLX.
MLX is lazy: arrays are computed when :meth:`eval` (or a conversion) forces them, so the
trainer calls ``eval`` once per step rather than after every operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from .pointwise import PlainKernels


def _has_gpu() -> bool:
    """True when MLX can run on a GPU here (Metal on Apple silicon, or CUDA)."""
    for name in ("metal", "cuda"):
        module = getattr(mx, name, None)
        try:
            if module is not None and module.is_available():
                return True
        except Exception:  # an older MLX without the query: treat as absent
            pass
    return False


def device_description() -> str:
    """The device MLX computes on by default, as people name it: "gpu: Apple M2 Pro (Metal)",
    "gpu: NVIDIA A100 (CUDA)" or "cpu: Intel(R) Xeon(R) Processor"."""
    device = mx.default_device()
    kind = "gpu" if device.type == mx.DeviceType.gpu else "cpu"
    name = None
    try:
        name = mx.device_info(device).get("device_name")
    except Exception:  # an MLX without device_info(device): Metal's own query, else no name
        try:
            name = mx.metal.device_info().get("device_name") if kind == "gpu" else None
        except Exception:
            name = None
    api = ""
    if kind == "gpu":
        api = " (Metal)" if getattr(mx, "metal", None) is not None and mx.metal.is_available() else " (CUDA)"
    return f"{kind}: {name}{api}" if name else f"{kind}{api}"


class MLXBackend:
    name = "mlx"

    def __init__(self, dtype: str = "float32"):
        self.dtype_name = dtype
        self.dtype = getattr(mx, dtype)
        # MLX 0.32's float64 sigmoid and exp are only float32-accurate on the CPU (errors of
        # 2e-8 and 6e-7 measured against NumPy), while its tanh is exact; in float64 we build
        # sigmoid from tanh, as the NumPy backend does.
        self.sigmoid = mx.sigmoid if dtype == "float32" else (lambda a: 0.5 * (1.0 + mx.tanh(0.5 * a)))
        #: the cells' point-wise kernels: the plain reference, which MLX's graph compiler may fuse
        self.kernels = PlainKernels(self)

    def __repr__(self) -> str:
        return f"MLXBackend(dtype={self.dtype_name}, device={mx.default_device()})"

    # creation and conversion
    def asarray(self, data: Any, dtype: Any = None) -> mx.array:
        return mx.array(data, dtype=dtype) if dtype is not None else mx.array(data)

    def zeros(self, shape: Sequence[int], dtype: Any = None) -> mx.array:
        return mx.zeros(tuple(shape), dtype=self.dtype if dtype is None else dtype)

    def ones(self, shape: Sequence[int], dtype: Any = None) -> mx.array:
        return mx.ones(tuple(shape), dtype=self.dtype if dtype is None else dtype)

    def zeros_like(self, a: mx.array) -> mx.array:
        return mx.zeros_like(a)

    def from_numpy(self, a: np.ndarray, dtype: Any = None) -> mx.array:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            return mx.array(a.astype(self.dtype_name, copy=False), dtype=self.dtype)
        if a.dtype == np.bool_:
            return mx.array(a)
        # MLX has no int64 on every device; token ids fit in int32.
        return mx.array(a.astype(np.int32, copy=False))

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.array(a)

    def astype(self, a: mx.array, dtype: Any) -> mx.array:
        return a.astype(dtype)

    # element-wise
    tanh = staticmethod(mx.tanh)
    exp = staticmethod(mx.exp)
    log = staticmethod(mx.log)
    log1p = staticmethod(mx.log1p)
    sqrt = staticmethod(mx.sqrt)
    abs = staticmethod(mx.abs)
    maximum = staticmethod(mx.maximum)
    minimum = staticmethod(mx.minimum)
    where = staticmethod(mx.where)
    isfinite = staticmethod(mx.isfinite)

    @staticmethod
    def clip(a, lo, hi):
        return mx.clip(a, lo, hi)

    # linear algebra, shapes and reductions
    matmul = staticmethod(mx.matmul)

    @staticmethod
    def reshape(a, shape):
        return mx.reshape(a, tuple(shape))

    @staticmethod
    def permute_dims(a, axes):
        return mx.transpose(a, tuple(axes))

    @staticmethod
    def flip(a, axis):
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, -1)
        return a[tuple(index)]

    @staticmethod
    def concat(arrays, axis=0):
        return mx.concatenate(list(arrays), axis=axis)

    @staticmethod
    def stack(arrays, axis=0):
        return mx.stack(list(arrays), axis=axis)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        return mx.sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(a, axis=None, keepdims=False):
        return mx.max(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def take(a, indices, axis=0):
        return mx.take(a, indices, axis=axis)

    @staticmethod
    def take_along_axis(a, indices, axis):
        return mx.take_along_axis(a, indices, axis=axis)

    def scatter_add_rows(self, num_rows, indices, values):
        flat = values.reshape(-1, values.shape[-1])
        return mx.zeros((num_rows, flat.shape[-1]), dtype=flat.dtype).at[indices.reshape(-1)].add(flat)

    def one_hot(self, indices, num_classes):
        return (indices[..., None] == mx.arange(num_classes)).astype(self.dtype)

    # execution
    def eval(self, *arrays: Any) -> None:
        mx.eval(*arrays)

    def async_eval(self, *arrays: Any) -> None:
        """Start computing ``arrays`` (arrays or trees of them) and return at once: the host
        goes on (e.g. preparing the next batch) while the device works."""
        mx.async_eval(*arrays)

    def item(self, a: Any) -> float:
        return float(a.item()) if isinstance(a, mx.array) else float(a)

    # memory layout: MLX arrays have none the user controls, so the loop runs on this backend as is
    @property
    def time_loop(self) -> MLXBackend:
        return self

    @staticmethod
    def batch_fastest(a: mx.array) -> mx.array:
        return a

    @staticmethod
    def row_major(a: mx.array) -> mx.array:
        return a
