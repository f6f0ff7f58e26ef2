"""Layers without a time axis: the embedding lookup and the affine map, and the token-id checks.

    Embedding:  ids (...) int -> weight[ids] (..., E)          dweight = Σ rows of dL/dy per id
    Linear:     y = x W + b, x (..., D_in) -> (..., D_out)      dW = xᵀ dy, db = Σ dy, dx = dy Wᵀ
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.checks import check_layer_input, shape_error
from mlxrnn.nn.module import Module, check_positive_int


class Embedding(Module):
    """A lookup table: ids (...) int -> vectors (..., E). weight (V, E) ~ N(0, 1) as in PyTorch, or
    U(−r, r) with ``init_range=r`` (word language models: :mod:`mlxrnn.lm.initialisation`)."""

    def __init__(
        self, num_embeddings: int, embedding_dim: int, seed: int = 0, backend: Any = None, dtype: str = "float32",
        init_range: float | None = None,
    ):
        super().__init__(backend, dtype)
        self.num_embeddings = check_positive_int("num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        shape = (self.num_embeddings, self.embedding_dim)
        self._set_numpy_params({"weight": initial_table(np.random.default_rng(seed), shape, init_range)})

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"

    def io_sizes(self) -> tuple[int, int]:
        return self.num_embeddings, self.embedding_dim

    def forward(self, ids: Any) -> tuple[Any, Any]:
        """ids (...) int → (vectors (..., E), the ids for :meth:`backward`); ``embedding(ids)`` is the vectors."""
        ids = check_token_ids(self.xp, ids, self.num_embeddings)
        return self.xp.take(self.params["weight"], ids, axis=0), ids

    def backward(self, d_out: Any, ids: Any) -> dict:
        """The gradient of the table, rows of ``d_out`` (B, T, E) added up at the ``ids`` they came from."""
        flat = self.xp.reshape(d_out, (-1, self.embedding_dim))
        return {"weight": self.xp.scatter_add_rows(self.num_embeddings, self.xp.reshape(ids, (-1,)), flat)}


def check_init_range(init_range: float | None, name: str = "init_range") -> float | None:
    """None, or a finite radius r > 0 of a U(−r, r) initialisation (``name`` for the error)."""
    if init_range is None:
        return None
    if isinstance(init_range, bool) or not isinstance(init_range, (int, float)) or not 0 < init_range < np.inf:
        raise ConfigError(f"{name} must be a finite number > 0 (or None for the default), got {init_range!r}")
    return float(init_range)


def initial_table(rng: np.random.Generator, shape: tuple[int, int], init_range: float | None) -> np.ndarray:
    """An embedding table (V, E): N(0, 1) (PyTorch's nn.Embedding), or U(−r, r) for ``init_range`` r."""
    radius = check_init_range(init_range)
    return rng.standard_normal(shape) if radius is None else rng.uniform(-radius, radius, size=shape)


class Linear(Module):
    """y = x W + b with x (..., D_in), W (D_in, D_out), b (D_out,); W ~ U(±1/√D_in), b = 0."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        seed: int = 0,
        backend: Any = None,
        dtype: str = "float32",
    ):
        super().__init__(backend, dtype)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        arrays = {"W": rng.uniform(-bound, bound, size=(self.in_features, self.out_features))}
        if bias:
            arrays["b"] = np.zeros(self.out_features)
        self._set_numpy_params(arrays)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if "b" in self.params else ", bias=False")

    def io_sizes(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def forward(self, x: Any) -> tuple[Any, Any]:
        """x (..., D_in) → (y (..., D_out), x for :meth:`backward`); ``linear(x)`` is y."""
        given = x
        x = check_layer_input(x, "x")  # a list becomes an array, as models take it; other libraries' refused
        if x is not given:
            x = self.xp.from_numpy(x)
        if x.shape[-1] != self.in_features:
            raise shape_error("x", f"(..., {self.in_features})", x.shape)
        y = self.xp.matmul(x, self.params["W"])
        if "b" in self.params:
            y = y + self.params["b"]
        return y, x

    def backward(self, d_y: Any, x: Any) -> tuple[Any, dict]:
        """(d_x, {"W": dW, "b": db}) from d_y, given the ``x`` :meth:`forward` returned."""
        xp = self.xp
        x2 = xp.reshape(x, (-1, self.in_features))
        d2 = xp.reshape(d_y, (-1, self.out_features))
        grads = {"W": xp.matmul(xp.permute_dims(x2, (1, 0)), d2)}
        if "b" in self.params:
            grads["b"] = xp.sum(d2, axis=0)
        d_x = xp.matmul(d_y, xp.permute_dims(self.params["W"], (1, 0)))
        return d_x, grads


def check_token_ids(xp: Any, ids: Any, vocab_size: int) -> Any:
    """Validate integer ids against [0, vocab_size) on the host; return backend ids.

    Host ids (NumPy, lists) are checked value by value. Backend arrays are checked by dtype
    only and passed through: reading them back would synchronise the device on every call (and
    is impossible inside ``mx.compile``), so ids that reach the device must have been validated
    on the host first, as :class:`mlxrnn.Trainer` and the models do with the NumPy batches they
    receive.
    """
    if not isinstance(ids, (np.ndarray, list, tuple)):
        check_layer_input(ids, "token ids")  # a torch tensor's dtype says int too: refuse it here, in one line
        if "int" not in str(ids.dtype):  # dtype metadata (int32, mlx.core.uint8, ...): no device read
            raise ShapeError(f"token ids must be integers; got dtype {ids.dtype}")
        return ids
    ids_np = np.asarray(ids)
    if ids_np.dtype.kind not in "iu":
        raise ShapeError(f"token ids must be integers; got dtype {ids_np.dtype}")
    if ids_np.size and (ids_np.min() < 0 or ids_np.max() >= vocab_size):
        bad = int(ids_np.max()) if ids_np.max() >= vocab_size else int(ids_np.min())
        raise ConfigError(
            f"token id {bad} is out of range for a vocabulary of {vocab_size} (valid ids: 0..{vocab_size - 1})"
        )
    return xp.from_numpy(ids_np.astype(np.int32))


def one_hot(xp: Any, ids: Any, num_classes: int) -> Any:
    """ids (...) in [0, num_classes) -> (..., num_classes) one-hot vectors in the backend's float dtype.

    ``ids`` may be NumPy, a list or backend ints; out-of-range ids are a ConfigError.
    """
    check_positive_int("num_classes", num_classes)
    return xp.one_hot(check_token_ids(xp, ids, num_classes), num_classes)
