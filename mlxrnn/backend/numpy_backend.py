"""The NumPy implementation of :class:`~mlxrnn.backend.protocol.ArrayBackend`.

NumPy 2 already speaks most of the array API, so this class mostly forwards. It runs
anywhere, and it is the float64 backend the finite-difference gradient checks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class NumpyBackend:
    name = "numpy"

    def __init__(self, dtype: str = "float32"):
        self.dtype_name = dtype
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"NumpyBackend(dtype={self.dtype_name})"

    # creation and conversion
    def asarray(self, data: Any, dtype: Any = None) -> np.ndarray:
        return np.asarray(data, dtype=dtype)

    def zeros(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=self.dtype if dtype is None else dtype)

    def ones(self, shape: Sequence[int], dtype: Any = None) -> np.ndarray:
        return np.ones(shape, dtype=self.dtype if dtype is None else dtype)

    def zeros_like(self, a: np.ndarray) -> np.ndarray:
        return np.zeros_like(a)

    def from_numpy(self, a: np.ndarray, dtype: Any = None) -> np.ndarray:
        a = np.asarray(a)
        if dtype is None and a.dtype.kind == "f":
            dtype = self.dtype
        return np.array(a, dtype=dtype, copy=True)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a)

    def astype(self, a: np.ndarray, dtype: Any) -> np.ndarray:
        return a.astype(dtype)

    # element-wise
    tanh = staticmethod(np.tanh)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    square = staticmethod(np.square)
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    clip = staticmethod(np.clip)
    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)

    @staticmethod
    def sigmoid(a: np.ndarray) -> np.ndarray:
        # tanh form: one transcendental, no overflow for large |a| (exp(-a) would overflow).
        return 0.5 * (1.0 + np.tanh(0.5 * a))

    # linear algebra, shapes and reductions
    matmul = staticmethod(np.matmul)
    reshape = staticmethod(np.reshape)
    permute_dims = staticmethod(np.transpose)
    flip = staticmethod(np.flip)
    take = staticmethod(np.take)
    take_along_axis = staticmethod(np.take_along_axis)

    @staticmethod
    def concat(arrays: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def stack(arrays: Sequence[np.ndarray], axis: int = 0) -> np.ndarray:
        return np.stack(arrays, axis=axis)

    @staticmethod
    def sum(a, axis=None, keepdims=False):
        return np.sum(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(a, axis=None, keepdims=False):
        return np.max(a, axis=axis, keepdims=keepdims)

    def scatter_add_rows(self, num_rows: int, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.zeros((num_rows, values.shape[-1]), dtype=values.dtype)
        np.add.at(out, np.asarray(indices).reshape(-1), values.reshape(-1, values.shape[-1]))
        return out

    def one_hot(self, indices: np.ndarray, num_classes: int) -> np.ndarray:
        indices = np.asarray(indices)
        out = np.zeros(indices.shape + (num_classes,), dtype=self.dtype)
        np.put_along_axis(out, indices[..., None].astype(np.intp), 1.0, axis=-1)
        return out

    # execution
    def eval(self, *arrays: Any) -> None:
        return None

    def item(self, a: Any) -> float:
        return float(a)

    def value_and_grad(self, fn):
        return None  # NumPy has no autodiff; finite differences are the oracle there.
