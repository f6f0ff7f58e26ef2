"""The NumPy implementation of :class:`~mlxrnn.backend.protocol.ArrayBackend`.

NumPy 2 already speaks most of the array API, so this class mostly forwards. It runs
anywhere, and it is the float64 backend the finite-difference gradient checks use.

Its layout methods (see the protocol and mlxrnn/nn/layers.py) matter for speed: ``time_loop``
is a variant whose 2-D products come back batch-fastest (column-major), and ``batch_fastest`` /
``row_major`` put an array in a layout once. What each trick saved, measured, and how to measure
it again: benchmarks/results/numpy_layout.md (``python benchmarks/numpy_layout.py``). Its ``kernels`` (the cells'
point-wise work) run in place on NumPy, or compiled with numba when installed (kernels.py).
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .kernels import KernelChoice, kernel_choice, make_kernels

_heap_configured = False


def keep_freed_heap_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    Backpropagation through time keeps every step's activations until the backward pass
    (about 16 MB for the reference LSTM: B 32, T 64, H 256) and then frees them all. With
    glibc's default thresholds that memory goes back to the OS after each training step and the
    next step takes it again, page by page, which made training measurably slower (figures:
    benchmarks/results/numpy_layout.md). Raising the trim and mmap thresholds (what
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` do) keeps it in the heap. Peak
    memory is unchanged; the process just holds on to its peak between steps.

    This changes malloc for the whole process, so a library must not do it unasked: it happens
    only when ``MLXRNN_MALLOC=tuned`` is set, which the ``mlxrnn`` command does for itself
    (``MLXRNN_MALLOC=default`` there leaves malloc alone). Called once by the first
    NumpyBackend; a no-op (returning False) outside Linux/glibc.
    """
    global _heap_configured
    if _heap_configured or not sys.platform.startswith("linux") or os.environ.get("MLXRNN_MALLOC") != "tuned":
        return _heap_configured
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    _heap_configured = bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
    return _heap_configured


class NumpyBackend:
    name = "numpy"

    def __init__(self, dtype: str = "float32", kernels: str | None = None):
        self.dtype_name = dtype
        self.dtype = np.dtype(dtype)
        self._kernel_request = kernels
        self._kernels: Any = None
        self.kernel_choice: KernelChoice | None = None  # set when the kernels are first used
        #: the backend of the recurrent time loop (see :class:`BatchFastestNumpyBackend`)
        loop_backend = self if isinstance(self, BatchFastestNumpyBackend) else BatchFastestNumpyBackend(dtype, kernels)
        self.time_loop = loop_backend
        keep_freed_heap_memory()

    def __repr__(self) -> str:
        return f"NumpyBackend(dtype={self.dtype_name})"

    @property
    def kernels(self) -> Any:
        """The cells' point-wise kernels (mlxrnn/backend/pointwise.py): numba's or NumPy's, chosen on
        first use by :func:`mlxrnn.backend.kernels.kernel_choice` (``kernels=`` / ``MLXRNN_KERNELS``)."""
        if self._kernels is None:
            self.kernel_choice = kernel_choice(self.dtype_name, self._kernel_request)
            self._kernels = make_kernels(self.kernel_choice)
        return self._kernels

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
    maximum = staticmethod(np.maximum)
    minimum = staticmethod(np.minimum)
    clip = staticmethod(np.clip)
    where = staticmethod(np.where)
    isfinite = staticmethod(np.isfinite)

    @staticmethod
    def sigmoid(a: np.ndarray) -> np.ndarray:
        # tanh form: one transcendental, no overflow for large |a| (exp(-a) would overflow);
        # in place on one temporary, so the four passes allocate one array, not four.
        out = np.multiply(a, 0.5)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5
        return out

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
        # Sort the rows by index and sum each run with reduceat: much faster than np.add.at's
        # unbuffered loop (benchmarks/results/numpy_layout.md).
        indices = np.asarray(indices).reshape(-1)
        values = values.reshape(-1, values.shape[-1])
        out = np.zeros((num_rows, values.shape[-1]), dtype=values.dtype)
        if indices.size == 0:
            return out
        order = np.argsort(indices, kind="stable")
        sorted_ids = indices[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
        out[sorted_ids[starts]] = np.add.reduceat(values[order], starts, axis=0)
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

    # memory layout (see the protocol; ``time_loop`` is set in __init__)
    @staticmethod
    def batch_fastest(a: np.ndarray) -> np.ndarray:
        """``a`` (..., B, F) with every (B, F) matrix column-major (B fastest, then F) and contiguous:
        ``a`` itself if it already is, else a copy. Element-wise ops on such matrices run as
        one flat loop; a strided or row-major operand makes NumPy loop B elements at a time.
        """
        if a.ndim < 2 or np.swapaxes(a, -1, -2).flags.c_contiguous:
            return a
        return copy_in_layout(a, (*range(a.ndim - 2), a.ndim - 1, a.ndim - 2))

    @staticmethod
    def take_batch_fastest(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``table[ids]`` for a (V, F) table and (T, B) ids, as (T, B, F) with every [t] batch-fastest.

        Gathered as (F, T, B) by one ``take`` along the table's columns, then moved to time-major
        by one copy of contiguous B-long rows: half the time of gathering rows and transposing
        each (B, F) block (8.6 -> 4.2 ms at the reference shape, 2048 ids x 1024 features).
        """
        by_feature = np.take(np.ascontiguousarray(table.T), ids, axis=1)  # (F, T, B)
        out = np.empty((ids.shape[0], table.shape[1], ids.shape[1]), dtype=table.dtype)  # (T, F, B)
        np.copyto(out, by_feature.transpose(1, 0, 2))
        return out.transpose(0, 2, 1)

    @staticmethod
    def stack_batch_major(steps: Sequence[np.ndarray]) -> np.ndarray:
        """T arrays (B, F) -> (T, B, F), stored as a row-major (B, T, F) array.

        For a layer's final outputs, which leave as (B, T, F): copying each step into place is
        ~6x cheaper than joining them time-major and transposing the whole (T, B, F) later.
        """
        batch, features = steps[0].shape
        out = np.empty((batch, len(steps), features), dtype=steps[0].dtype)
        for t, step in enumerate(steps):
            out[:, t] = step
        return out.transpose(1, 0, 2)

    @staticmethod
    def row_major(a: np.ndarray) -> np.ndarray:
        """``a`` C-contiguous (what BLAS-backed batched matmuls and free reshapes want)."""
        return a if a.flags.c_contiguous else copy_in_layout(a, tuple(range(a.ndim)))


def copy_in_layout(a: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """A copy of ``a`` (same shape and values) whose axes lie in memory in ``order``, slowest first.

    NumPy copies with its inner loop along the destination's fastest axis. When the source's
    stride along that axis is a multiple of 2 KiB, successive reads share a handful of L1 cache
    sets and evict each other, a few times slower than an ordinary copy (e.g. a (64, 32, 1024)
    float32 transpose; benchmarks/results/numpy_layout.md). Such copies first go through a copy
    in the source's own order with its fastest axis padded, which breaks the power-of-two stride.
    """
    inner = order[-1]
    if a.shape[inner] > 1 and a.strides[inner] % 2048 == 0:
        source_order = sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis]))
        for pad in (16, 8, 4, 1):
            shape = [a.shape[axis] + (pad if axis == source_order[-1] else 0) for axis in source_order]
            buffer = np.empty(shape, a.dtype)[tuple(slice(0, a.shape[axis]) for axis in source_order)]
            padded = buffer.transpose(np.argsort(source_order))
            if padded.strides[inner] % 2048:
                padded[...] = a
                a = padded
                break
    out = np.empty([a.shape[axis] for axis in order], a.dtype).transpose(np.argsort(order))
    out[...] = a
    return out


class BatchFastestNumpyBackend(NumpyBackend):
    """NumPy for the recurrent time loop: 2-D products come back batch-fastest (column-major).

    OpenBLAS computes the time loop's products, a batch of states (B, H) times a weight
    (H, G·H) and the backward's (B, G·H) times (G·H, H), faster into a column-major result than
    into a row-major one (figures: benchmarks/results/numpy_layout.md). Writing a @ b as
    (bᵀ aᵀ)ᵀ gives that result layout with no copy; element-wise NumPy ops then keep it, so a
    whole time loop runs in it. Values are the same as ``np.matmul``'s.
    """

    @staticmethod
    def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim == 2 and b.ndim == 2:
            return np.matmul(b.T, a.T).T
        return np.matmul(a, b)
