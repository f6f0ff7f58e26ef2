"""Learning-rate schedules, as small objects beside the optimizers.

A schedule sets ``optimizer.lr`` (a plain attribute) at two moments of a run:

* :meth:`Schedule.before_step` — before every update, given the fraction of the run done
  (cosine follows it);
* :meth:`Schedule.after_evaluation` — after every scheduled validation loss (plateau decays on
  it). Every schedule counts the evaluations since the loss last improved (``bad_evals``), which
  early stopping reads.

Schedules:
    plateau:  lr ← lr · decay whenever validation does not improve by more than ``min_delta``
              (char-rnn; Zaremba et al.)
    cosine:   lr(f) = ½ · lr₀ · (1 + cos(π f)),  f ∈ [0, 1] the fraction of the run done
    none:     lr stays lr₀

:meth:`Schedule.state_dict` holds everything a schedule remembers (JSON scalars), so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlxrnn.errors import CheckpointError, ConfigError

#: an improvement smaller than this (in nats) does not count as one
MIN_DELTA = 1e-4


class Schedule:
    """Base: constant learning rate; tracks the best evaluation and the evaluations since."""

    name = "none"

    def __init__(self, base_lr: float, min_delta: float = MIN_DELTA):
        if not (isinstance(base_lr, (int, float)) and math.isfinite(base_lr) and base_lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {base_lr!r}")
        self.base_lr = float(base_lr)
        self.min_delta = float(min_delta)
        self.best: float | None = None  #: best evaluation loss so far (by more than min_delta)
        self.bad_evals = 0  #: evaluations since ``best`` last improved

    def before_step(self, optimizer: Any, fraction_done: float) -> None:
        """Set the learning rate of the next update; ``fraction_done`` ∈ [0, 1] (clamped)."""

    def after_evaluation(self, optimizer: Any, loss: float) -> bool:
        """Record a validation loss; True when it did not improve (the schedule may then act)."""
        if self.best is None or loss < self.best - self.min_delta:
            self.best, self.bad_evals = loss, 0
            return False
        self.bad_evals += 1
        self.on_plateau(optimizer)
        return True

    def on_plateau(self, optimizer: Any) -> None:
        """Called when an evaluation did not improve."""

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "base_lr": self.base_lr, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; anything malformed is one line of CheckpointError."""
        if not isinstance(state, Mapping) or state.get("name", self.name) != self.name:
            held = state.get("name") if isinstance(state, Mapping) else state
            raise CheckpointError(f"schedule state is for {held!r}, not {self.name!r}")
        missing = [key for key in ("base_lr", "best", "bad_evals") if key not in state]
        if missing:
            raise CheckpointError(f"schedule state lacks {', '.join(missing)}")
        base_lr, best, bad_evals = state["base_lr"], state["best"], state["bad_evals"]

        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not number(base_lr) or base_lr <= 0 or not (best is None or number(best)) or (
            isinstance(bad_evals, bool) or not isinstance(bad_evals, int) or bad_evals < 0
        ):
            raise CheckpointError(
                f"schedule state is malformed (base_lr {base_lr!r}, best {best!r}, bad_evals {bad_evals!r})"
            )
        self.base_lr = float(base_lr)
        self.best = None if best is None else float(best)
        self.bad_evals = bad_evals


class PlateauSchedule(Schedule):
    """Multiply the learning rate by ``decay`` after every evaluation that did not improve."""

    name = "plateau"

    def __init__(self, base_lr: float, decay: float = 0.5, min_delta: float = MIN_DELTA):
        super().__init__(base_lr, min_delta)
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"plateau decay must be in (0, 1], got {decay!r}")
        self.decay = float(decay)

    def on_plateau(self, optimizer: Any) -> None:
        optimizer.lr *= self.decay


class CosineSchedule(Schedule):
    """lr(f) = ½ lr₀ (1 + cos(π f)): from lr₀ at the start to 0 at the end of the run."""

    name = "cosine"

    def before_step(self, optimizer: Any, fraction_done: float) -> None:
        optimizer.lr = 0.5 * self.base_lr * (1.0 + math.cos(math.pi * min(max(fraction_done, 0.0), 1.0)))


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (PlateauSchedule, CosineSchedule, Schedule)}


def make_schedule(name: str, base_lr: float, decay: float = 0.5) -> Schedule:
    """The schedule called ``name`` ("plateau", "cosine" or "none") starting at ``base_lr``;
    ``decay`` is the plateau factor (the other schedules have none)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    return PlateauSchedule(base_lr, decay) if name == PlateauSchedule.name else SCHEDULES[name](base_lr)
