"""The trainer: one training step for any model, on any backend, with the same code.

    loss, grads = model.loss_and_grads(batch)       forward with caches, then BPTT
    loss, grads = grad_transform(loss, grads)       optional: the data-parallel all-reduce
    grads      = clip(grads)                         by value and/or by global norm
    params     = optimizer.update(params, grads)
    async_eval(...)                                  MLX: start the step, do not wait for it
    (NumPy: undone if the loss or the gradient norm is not finite; StepResult.applied is then False)

A model only has to provide ``parameters()``, ``load_parameters(dict)`` and
``loss_and_grads(batch, training, rng) -> (loss, grads, aux)``.

On MLX a :class:`~mlxrnn.models.sequence_model.SequenceModel` trains through the same step
compiled into one function (:mod:`mlxrnn.training.compiled`); ``compile=False`` keeps the
eager step above, for debugging. Either way the step only *starts* the device's work and
returns: :class:`StepResult` reads the loss and gradient norm back when they are first asked
for, so a loop that reads them only when it logs never waits for the device in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.nn.checks import check_finite
from mlxrnn.nn.clip import clip_gradients
from mlxrnn.nn.optim import Optimizer
from mlxrnn.training.compiled import CompiledStep, can_compile


class TrainableModel(Protocol):
    xp: Any

    def parameters(self) -> dict[str, Any]: ...
    def load_parameters(self, flat: Mapping[str, Any], strict: bool = True) -> None: ...
    def loss_and_grads(
        self, batch: Mapping[str, Any], training: bool = True, rng: Any = None
    ) -> tuple[Any, dict, dict]: ...


class StepResult:
    """What one step returns. ``loss`` (the batch loss before the update), ``grad_norm`` (the
    global gradient norm before clipping) and ``clipped`` (whether norm clipping scaled the
    gradients down) are read from the device the first time they are asked for — on MLX that
    waits for the step to finish. ``aux`` holds what the model returned besides loss and grads
    (e.g. "final_state"); ``loss_array`` and ``grad_norm_array`` are the unread 0-d arrays."""

    def __init__(self, xp: Any, loss: Any, grad_norm: Any, clip_norm: float | None, aux: dict):
        self.xp, self.loss_array, self.grad_norm_array = xp, loss, grad_norm
        self.clip_norm, self.aux = clip_norm, aux
        self._values: tuple[float, float] | None = None
        #: False when the step was undone because its loss or gradient norm was not finite (the
        #: weights and the optimizer's moments are as before it; one such update would make them
        #: all NaN). NumPy checks every step; on MLX the step is not waited for, so it stays True
        #: and the caller reading ``loss`` (the LM run's divergence check) stops the run instead.
        self.applied = True

    def _read(self) -> tuple[float, float]:
        if self._values is None:
            self._values = (self.xp.item(self.loss_array), self.xp.item(self.grad_norm_array))
        return self._values

    @property
    def loss(self) -> float:
        """The batch loss before the update (reading it waits for the step on MLX)."""
        return self._read()[0]

    @property
    def grad_norm(self) -> float:
        """The global gradient norm before clipping."""
        return self._read()[1]

    @property
    def clipped(self) -> bool:
        """Whether norm clipping scaled this step's gradients down."""
        norm = self.grad_norm
        return self.clip_norm is not None and math.isfinite(norm) and norm > self.clip_norm

    def __repr__(self) -> str:
        return f"StepResult(loss={self.loss:.6g}, grad_norm={self.grad_norm:.6g}, clipped={self.clipped})"


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
        compile: on MLX, train a SequenceModel through the compiled step
            (:mod:`mlxrnn.training.compiled`); False keeps the eager step. Elsewhere the
            eager step runs either way; :attr:`compiled` says which one is in use.
    """

    def __init__(
        self,
        model: TrainableModel,
        optimizer: Optimizer,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        rng: np.random.Generator | None = None,
        grad_transform: Callable[[Any, dict], tuple[Any, dict]] | None = None,
        compile: bool = True,
    ):
        for label, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(f"{label} must be a positive number or None, got {value!r}")
        if not isinstance(compile, bool):
            raise ConfigError(f"compile must be True or False, got {compile!r}")
        self.model, self.optimizer = model, optimizer
        self.clip_norm, self.clip_value = clip_norm, clip_value
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.grad_transform = grad_transform
        self._compiled = None
        self._undo: tuple | None = None  #: (params, moments, step count) before the last eager update
        if compile and can_compile(model, grad_transform)[0]:
            self._compiled = CompiledStep(model, optimizer, clip_norm, clip_value)

    @property
    def xp(self):
        """The model's backend."""
        return self.model.xp

    @property
    def compiled(self) -> bool:
        """Whether steps run through the compiled MLX step."""
        return self._compiled is not None

    def step(self, batch: Mapping[str, Any]) -> StepResult:
        """One update from ``batch``; returns before the device has finished (see :class:`StepResult`)."""
        loss, norm, aux = self.lazy_step(batch)
        start = getattr(self.xp, "async_eval", None)
        result = StepResult(self.xp, loss, norm, self.clip_norm, aux)
        if start is not None:  # MLX: queue the work and return at once
            state = aux.get("final_state")
            start(loss, norm, [] if state is None else state, self.model.parameters(), self.optimizer.state)
            return result
        if not (math.isfinite(result.loss) and math.isfinite(result.grad_norm)) and self._undo is not None:
            params, moments, count = self._undo  # a NaN/Inf update would overwrite every weight
            self.model.load_parameters(params)
            self.optimizer.state, self.optimizer.step_count = moments, count
            result.applied = False
        return result

    def lazy_step(self, batch: Mapping[str, Any]) -> tuple[Any, Any, dict]:
        """The update of :meth:`step`, built but not started: returns (loss, grad norm, aux) as
        unevaluated arrays, the model and the optimizer already holding their new (unevaluated)
        values. On MLX nothing has been computed yet — e.g. to count the step's graph; on NumPy
        everything has."""
        xp = self.xp
        check_batch(batch, getattr(xp, "dtype_name", None))
        if self._compiled is not None:
            loss, norm, final_state = self._compiled(batch, self.rng)
            return loss, norm, {"final_state": final_state}
        loss, grads, aux = self.model.loss_and_grads(batch, training=True, rng=self.rng)
        if self.grad_transform is not None:
            loss, grads = self.grad_transform(loss, grads)
        grads, norm = clip_gradients(xp, grads, self.clip_value, self.clip_norm)
        # Updates build new arrays (see mlxrnn.nn.optim), so keeping the old ones makes the step
        # undoable without a second device sync before it.
        params, moments, count = self.model.parameters(), dict(self.optimizer.state), self.optimizer.step_count
        new_params = self.optimizer.update(xp, params, grads)
        self.model.load_parameters(new_params)
        self._undo = (params, moments, count)  # what step() puts back if the update is not finite
        return loss, norm, aux
