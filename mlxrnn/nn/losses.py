"""Losses, each returning the loss and its gradient with respect to the model's outputs.

Every function has the signature
    loss_fn(xp, outputs, targets, weights=None, reduction="mean") -> (loss, d_outputs)
``weights`` (same leading shape as ``targets``) is 1 on counted positions and 0 on padding;
"mean" divides by the number of counted positions (times features for MSE), "sum" does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.checks import check_finite

REDUCTIONS = ("mean", "sum")


def _is_host(value: Any) -> bool:
    return isinstance(value, (np.ndarray, list, tuple))


def _prepare_weights(xp, weights: Any, shape: tuple) -> Any:
    if weights is None:
        return None
    if not _is_host(weights):  # a backend array: shape from metadata, values never read back
        if tuple(weights.shape) != tuple(shape):
            raise ShapeError(f"weights must have shape {tuple(shape)} (the targets' shape); got {tuple(weights.shape)}")
        return xp.astype(weights, xp.dtype)
    w = np.asarray(weights)
    if tuple(w.shape) != tuple(shape):
        raise ShapeError(f"weights must have shape {tuple(shape)} (the targets' shape); got {tuple(w.shape)}")
    check_finite(w, "the loss weights (mask)", "they are 1 on counted positions and 0 on padding")
    return xp.from_numpy(w.astype(np.float64))


def _normaliser(xp, weights: Any, count: int, reduction: str) -> Any:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if reduction == "sum":
        return 1.0
    total = xp.sum(weights) if weights is not None else float(count)
    return xp.maximum(total, 1.0) if weights is not None else total  # an all-padding batch gives 0, not NaN


def check_class_targets(targets: Any, shape: tuple, num_classes: int, ignore_index: int = -100) -> np.ndarray:
    """Host targets (...) → NumPy ids, checked: shape ``shape``, integers in [0, num_classes) or
    ``ignore_index``. The one place cross-entropy targets are validated."""
    targets_np = np.asarray(targets)
    if tuple(targets_np.shape) != tuple(shape):
        raise ShapeError(
            f"targets must have shape {tuple(shape)} (logits without the class axis); got {targets_np.shape}"
        )
    if targets_np.dtype.kind not in "iu":
        raise ShapeError(f"cross-entropy targets must be integer class ids; got dtype {targets_np.dtype}")
    valid = targets_np != ignore_index
    if np.any((targets_np[valid] < 0) | (targets_np[valid] >= num_classes)):
        raise ConfigError(
            f"cross-entropy targets must lie in [0, {num_classes}) or equal ignore_index={ignore_index}"
        )
    return targets_np


def softmax_cross_entropy(xp, logits, targets, weights=None, reduction="mean", ignore_index: int = -100,
                          gradient: bool = True):
    """L = −Σ w log softmax(z)[y] with z = logits (..., V), y = targets (...) int.

    Positions whose target equals ``ignore_index`` count as weight 0 (padding). Stable for large
    logits: log softmax(z) = (z − max z) − log Σ exp(z − max z). Gradient: w (softmax(z) − onehot(y)),
    or None with ``gradient=False`` (evaluation: the (..., V) gradient is not built at all).

    Host targets (NumPy) are validated here; backend targets are taken as validated (see
    :func:`check_class_targets`) and never read back, so the loss adds no device synchronisation.
    """
    vocab = int(logits.shape[-1])
    if not _is_host(targets):
        loss, d_logits = _device_cross_entropy(xp, logits, targets, weights, reduction, ignore_index)
        return loss, (d_logits if gradient else None)
    targets_np = check_class_targets(targets, tuple(logits.shape[:-1]), vocab, ignore_index)
    valid = targets_np != ignore_index
    w_np = (
        valid.astype(np.float64)
        if weights is None
        else valid
        * np.asarray(weights if isinstance(weights, (np.ndarray, list)) else xp.to_numpy(weights), dtype=np.float64)
    )
    w = None if (weights is None and valid.all()) else _prepare_weights(xp, w_np, targets_np.shape)
    if isinstance(logits, np.ndarray):
        return _numpy_cross_entropy(xp, logits, np.where(valid, targets_np, 0), w, reduction, gradient)
    safe_targets = xp.from_numpy(np.where(valid, targets_np, 0).astype(np.int32))
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    log_norm = xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    log_probs = shifted - log_norm
    picked = xp.take_along_axis(log_probs, safe_targets[..., None], axis=-1)[..., 0]
    denominator = _normaliser(xp, w, int(targets_np.size), reduction)
    losses = -picked if w is None else -picked * w
    loss = xp.sum(losses) / denominator
    if not gradient:
        return loss, None
    d_logits = xp.exp(log_probs) - xp.one_hot(safe_targets, vocab)
    if w is not None:
        d_logits = d_logits * w[..., None]
    return loss, d_logits / denominator


def _numpy_cross_entropy(xp, logits: np.ndarray, targets: np.ndarray, w: np.ndarray | None, reduction: str,
                         gradient: bool) -> tuple:
    """:func:`softmax_cross_entropy` on NumPy in four passes over the (N, V) logits, exp once.

    The generic path takes ~10 (max, shift, exp, sum, log-probabilities, exp again, a one-hot
    of the same size, subtract, scale): for a word model's head (700 × 10k) that was as long as
    the head's GEMMs. Here the shifted logits become the gradient in place:
        s = z − max z;  picked = s[y] − log Σ eˢ  (the log-probability of the target)
        dL/dz = (w / n) (eˢ / Σ eˢ − onehot(y)),  n the normaliser.
    Same formulas and normaliser as the generic path; results agree to float rounding
    (tests/test_layers.py).
    """
    vocab = logits.shape[-1]
    rows = logits.reshape(-1, vocab)
    ids = targets.reshape(-1).astype(np.intp)
    index = np.arange(rows.shape[0])
    shifted = np.subtract(rows, rows.max(axis=1, keepdims=True))  # (N, V), ours to overwrite
    picked = shifted[index, ids]
    np.exp(shifted, out=shifted)
    totals = shifted.sum(axis=1)
    losses = np.log(totals) - picked  # −log softmax(z)[y], (N,)
    weight = None if w is None else np.asarray(w, dtype=logits.dtype).reshape(-1)
    denominator = _normaliser(xp, weight, rows.shape[0], reduction)
    loss = np.asarray((losses.sum() if weight is None else (losses * weight).sum()) / denominator, dtype=logits.dtype)
    if not gradient:
        return loss, None
    scale = np.asarray(1.0 / denominator if weight is None else weight / denominator, dtype=logits.dtype)
    row_scale = scale / totals  # (N,) or a scalar over (N,)
    shifted *= row_scale[:, None]  # w softmax(z) / n
    shifted[index, ids] -= scale  # − w onehot(y) / n
    return loss, shifted.reshape(logits.shape)


def _device_cross_entropy(xp, logits, targets, weights, reduction, ignore_index):
    """:func:`softmax_cross_entropy` for backend targets: the ``ignore_index`` weights are built on
    the device. With every target valid and no weights, w = 1 everywhere and Σ w = the count, so
    the numbers are those of the host path exactly."""
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(
            f"targets must have shape {tuple(logits.shape[:-1])} (logits without the class axis); "
            f"got {tuple(targets.shape)}"
        )
    valid = targets != ignore_index
    w = xp.astype(valid, xp.dtype)
    if weights is not None:
        w = w * _prepare_weights(xp, weights, tuple(targets.shape))
    safe_targets = xp.where(valid, targets, 0)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    picked = xp.take_along_axis(log_probs, safe_targets[..., None], axis=-1)[..., 0]
    denominator = _normaliser(xp, w, 0, reduction)
    loss = xp.sum(-picked * w) / denominator
    d_logits = (xp.exp(log_probs) - xp.one_hot(safe_targets, int(logits.shape[-1]))) * w[..., None]
    return loss, d_logits / denominator


def check_probability_targets(targets: Any) -> np.ndarray:
    """Host targets of a binary cross-entropy as float64, refused unless every value is in [0, 1]."""
    values = np.asarray(targets, dtype=np.float64)
    if values.size and not (values.min() >= 0.0 and values.max() <= 1.0):  # NaN fails too
        raise ConfigError(
            f"binary cross-entropy targets must lie in [0, 1] (probabilities); got values from {values.min():g} "
            f"to {values.max():g}"
        )
    return values


def binary_cross_entropy_with_logits(xp, logits, targets, weights=None, reduction="mean"):
    """L = −Σ w [y log σ(z) + (1 − y) log(1 − σ(z))], computed as max(z, 0) − z y + log(1 + e^−|z|).

    ``logits`` and ``targets`` (..., F), targets in [0, 1] (others are refused); ``weights`` (...) masks whole
    positions. "mean" divides by (counted positions × F). Gradient: w (σ(z) − y).
    """
    if isinstance(targets, (np.ndarray, list)):  # backend arrays are not read back (a device sync)
        check_probability_targets(targets)
    targets = _as_float_targets(xp, targets, logits.shape)
    losses = xp.maximum(logits, 0.0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    return _elementwise_reduce(xp, losses, xp.sigmoid(logits) - targets, weights, reduction)


def _as_float_targets(xp, targets, shape):
    if _is_host(targets):
        targets = xp.from_numpy(np.asarray(targets, dtype=np.float64))
    if tuple(targets.shape) != tuple(shape):
        raise ShapeError(f"targets must have the outputs' shape {tuple(shape)}; got {tuple(targets.shape)}")
    return targets


def _elementwise_reduce(xp, losses, d_outputs, weights, reduction):
    """Reduce per-element losses (..., F) with optional per-position weights (...)."""
    shape = tuple(losses.shape)
    features = shape[-1] if shape else 1
    if weights is None:
        denominator = _normaliser(xp, None, int(np.prod(shape)), reduction)
    else:
        w = _prepare_weights(xp, weights, shape[:-1])[..., None]
        losses, d_outputs = losses * w, d_outputs * w
        denominator = _normaliser(xp, w, 0, reduction) * (features if reduction == "mean" else 1)
    return xp.sum(losses) / denominator, d_outputs / denominator


def mean_squared_error(xp, outputs, targets, weights=None, reduction="mean"):
    """L = Σ w (ŷ − y)² over outputs (..., F); ``weights`` (...) masks whole positions.

    "mean" divides by (counted positions × F). Gradient: 2 w (ŷ − y).
    """
    diff = outputs - _as_float_targets(xp, targets, outputs.shape)
    return _elementwise_reduce(xp, diff * diff, 2.0 * diff, weights, reduction)


LOSSES = {
    "cross_entropy": softmax_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy_with_logits,
    "mse": mean_squared_error,
}


def get_loss(name: str):
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[name]
