"""The trainer: one training step for any model, on any backend, with the same code.

    loss, grads = model.loss_and_grads(batch)       forward with caches, then BPTT
    loss, grads = grad_transform(loss, grads)       optional: the data-parallel all-reduce
    grads      = clip(grads)                         by value and/or by global norm
    params     = optimizer.update(params, grads)
    xp.eval(...)                                     one synchronisation per step on MLX
    (undone if the loss or the gradient norm is not finite: StepResult.applied is then False)

A model only has to provide ``parameters()``, ``load_parameters(dict)`` and
``loss_and_grads(batch, training, rng) -> (loss, grads, aux)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.nn.checks import check_finite
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
    #: False when the loss or the gradient was not finite: the update was undone, the weights and
    #: the optimizer's moments are as before the step (one such update would make them all NaN)
    applied: bool = True


def check_batch(batch: Any, dtype: Any = None) -> None:
    """A batch is a mapping; its NumPy float arrays (dense inputs, regression or multi-label
    targets, masks) must be finite and, given the model's float ``dtype``, within its range. One
    pass over the batch: negligible next to forward and BPTT, and a single NaN (or a 1e300 cast to
    float32 inf) would otherwise turn every weight into NaN at the first update."""
    if not isinstance(batch, Mapping):
        raise ConfigError(
            f"a batch must be a dict such as {{'inputs': ..., 'targets': ...}}, got {type(batch).__name__}"
        )
    for key, value in batch.items():
        check_finite(value, f"batch[{key!r}]", "clean or impute the data before training", dtype)


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
        check_batch(batch, getattr(xp, "dtype_name", None))
        loss, grads, aux = self.model.loss_and_grads(batch, training=True, rng=self.rng)
        if self.grad_transform is not None:
            loss, grads = self.grad_transform(loss, grads)
        if self.clip_value is not None:
            grads = clip_grad_value(xp, grads, self.clip_value)
        if self.clip_norm is not None:
            grads, norm = clip_grad_norm(xp, grads, self.clip_norm)
        else:
            norm = global_norm(xp, grads)
        # Updates build new arrays (see mlxrnn.nn.optim), so keeping the old ones makes the step
        # undoable without a second device sync before it.
        params, moments, count = self.model.parameters(), dict(self.optimizer.state), self.optimizer.step_count
        new_params = self.optimizer.update(xp, params, grads)
        self.model.load_parameters(new_params)
        xp.eval(loss, norm, *new_params.values(), *self.optimizer.state_arrays())
        loss_value, norm_value = xp.item(loss), xp.item(norm)
        applied = math.isfinite(loss_value) and math.isfinite(norm_value)
        if not applied:  # a NaN/Inf update would overwrite every weight: keep the model as it was
            self.model.load_parameters(params)
            self.optimizer.state, self.optimizer.step_count = moments, count
        clipped = self.clip_norm is not None and math.isfinite(norm_value) and norm_value > self.clip_norm
        return StepResult(loss_value, norm_value, clipped, aux, applied)
