"""The trainer: one training step for any model, on any backend, with the same code.

    loss, grads = model.loss_and_grads(batch)       forward with caches, then BPTT
    loss, grads = grad_transform(loss, grads)       optional: the data-parallel all-reduce
    grads      = clip(grads)                         by value and/or by global norm
    params     = optimizer.update(params, grads)
    xp.eval(...)                                     one synchronisation per step on MLX

A model only has to provide ``parameters()``, ``load_parameters(dict)`` and
``loss_and_grads(batch, training, rng) -> (loss, grads, aux)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.nn.clip import clip_grad_norm, clip_grad_value, global_norm
from mlxrnn.nn.optim import Optimizer


class TrainableModel(Protocol):
    xp: Any

    def parameters(self) -> dict[str, Any]: ...
    def load_parameters(self, flat: Mapping[str, Any], strict: bool = True) -> None: ...
    def loss_and_grads(
        self, batch: Mapping[str, Any], training: bool = True, rng: Any = None
    ) -> tuple[Any, dict, dict]: ...


@dataclass
class StepResult:
    loss: float  #: the batch loss before the update
    grad_norm: float  #: global gradient norm before clipping
    clipped: bool  #: whether norm clipping scaled the gradients down
    aux: dict  #: what the model returned besides loss and grads (e.g. "final_state")


def check_batch(batch: Any) -> None:
    """A batch is a mapping; its NumPy float arrays (dense inputs, regression or multi-label
    targets) must be finite. One pass over the batch: negligible next to forward and BPTT, and a
    single NaN would otherwise turn every weight into NaN at the first update."""
    if not isinstance(batch, Mapping):
        raise ConfigError(
            f"a batch must be a dict such as {{'inputs': ..., 'targets': ...}}, got {type(batch).__name__}"
        )
    for key, value in batch.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise DataError(
                f"batch[{key!r}] contains NaN or Inf (first at index {where}, value {value[where]}); "
                "clean or impute the data before training"
            )


class Trainer:
    """Applies ``optimizer`` to ``model`` one batch at a time, with optional clipping.

    Args:
        clip_norm: rescale gradients whose global L2 norm exceeds this (None: never).
        clip_value: clamp each gradient element to [−v, v] first (None: never).
        rng: NumPy generator for dropout masks (checkpoint its state to resume exactly).
        grad_transform: called as ``grad_transform(loss, grads) -> (loss, grads)`` before
            clipping; data-parallel training averages both over the processes there.
    """

    def __init__(
        self,
        model: TrainableModel,
        optimizer: Optimizer,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        rng: np.random.Generator | None = None,
        grad_transform: Callable[[Any, dict], tuple[Any, dict]] | None = None,
    ):
        for label, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"{label} must be a positive number or None, got {value!r}")
        self.model, self.optimizer = model, optimizer
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.grad_transform = grad_transform

    @property
    def xp(self):
        return self.model.xp

    def step(self, batch: Mapping[str, Any]) -> StepResult:
        xp = self.xp
        check_batch(batch)
        loss, grads, aux = self.model.loss_and_grads(batch, training=True, rng=self.rng)
        if self.grad_transform is not None:
            loss, grads = self.grad_transform(loss, grads)
        if self.clip_value is not None:
            grads = clip_grad_value(xp, grads, self.clip_value)
        if self.clip_norm is not None:
            grads, norm = clip_grad_norm(xp, grads, self.clip_norm)
        else:
            norm = global_norm(xp, grads)
        new_params = self.optimizer.update(xp, self.model.parameters(), grads)
        self.model.load_parameters(new_params)
        xp.eval(loss, norm, *new_params.values(), *self.optimizer.state_arrays())
        loss_value, norm_value = xp.item(loss), xp.item(norm)
        clipped = self.clip_norm is not None and math.isfinite(norm_value) and norm_value > self.clip_norm
        return StepResult(loss_value, norm_value, clipped, aux)
