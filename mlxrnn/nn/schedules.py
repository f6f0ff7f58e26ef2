"""Learning-rate schedules, as small objects beside the optimizers.

A schedule sets ``optimizer.lr`` (a plain attribute) at two moments of a run:

* :meth:`Schedule.before_step` — before every update, given the fraction of the run done
  (cosine follows it);
* :meth:`Schedule.after_evaluation` — after every scheduled validation loss (plateau decays on
  it). Every schedule counts the evaluations since the loss last improved (``bad_evals``), which
  early stopping reads.

Schedules:
    plateau:  lr ← max(lr · decay, min_lr) after every ``patience`` evaluations in a row that did
              not improve by more than ``min_delta`` (char-rnn; Zaremba et al.); stalled again
              at the floor, it stops the run (or continues there)
    cosine:   lr(f) = min_lr + ½ (lr₀ − min_lr)(1 + cos(π f)),  f ∈ [0, 1] the fraction of the run
              done, after an optional linear warm-up
    none:     lr stays lr₀

No schedule sets a rate below its floor ``min_lr``; ``min_lr`` = 0 (the classes' default) is no
floor, which is how runs saved before the floor existed keep their schedule.

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
    """Multiply the learning rate by ``decay`` after every ``patience`` evaluations in a row that
    did not improve, never below ``min_lr`` (0: no floor).

    Once the rate sits at the floor, the next ``patience`` evaluations without improvement set
    :attr:`exhausted` when ``at_floor`` is "stop" (the run then stops: lower rates are not
    allowed, and this one no longer helps), or are ignored with "continue". :attr:`last_action`
    says what the latest evaluation did: None, "decayed", "floor" (decayed onto the floor) or
    "exhausted". Both are derived from ``bad_evals`` and the optimizer's rate, so a resumed
    run needs no extra state.
    """

    name = "plateau"

    def __init__(self, base_lr: float, decay: float = 0.5, min_delta: float = MIN_DELTA, patience: int = 1,
                 min_lr: float = 0.0, at_floor: str = "continue"):
        super().__init__(base_lr, min_delta)
        if not 0.0 < decay <= 1.0:
            raise ConfigError(f"plateau decay must be in (0, 1], got {decay!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"plateau patience must be an integer >= 1, got {patience!r}")
        if at_floor not in AT_FLOOR:
            raise ConfigError(f"at_floor must be one of {', '.join(AT_FLOOR)}, got {at_floor!r}")
        self.decay, self.patience, self.at_floor = float(decay), patience, at_floor
        self.min_lr = _check_floor(min_lr, self.base_lr)
        self.exhausted = False  #: stalled at the floor with at_floor "stop": the run should end
        self.last_action: str | None = None

    def after_evaluation(self, optimizer: Any, loss: float) -> bool:
        self.last_action = None
        return super().after_evaluation(optimizer, loss)

    def on_plateau(self, optimizer: Any) -> None:
        if self.bad_evals % self.patience:
            return  # not yet `patience` evaluations since the last decay
        if self.min_lr > 0 and optimizer.lr <= self.min_lr * (1 + 1e-9):
            if self.at_floor == "stop":
                self.exhausted, self.last_action = True, "exhausted"
            return
        lr = optimizer.lr * self.decay
        if lr <= self.min_lr:
            optimizer.lr, self.last_action = self.min_lr, "floor"
        else:
            optimizer.lr, self.last_action = lr, "decayed"


class CosineSchedule(Schedule):
    """Optional linear warm-up over the first ``warmup`` fraction w of the run, then half a cosine
    from lr₀ down to the floor ``min_lr`` at the end of the run:

        f < w:   lr(f) = m + (lr₀ − m) · f / w
        f ≥ w:   lr(f) = m + ½ (lr₀ − m) (1 + cos(π (f − w) / (1 − w)))        m = min_lr
    """

    name = "cosine"

    def __init__(self, base_lr: float, min_delta: float = MIN_DELTA, min_lr: float = 0.0, warmup: float = 0.0):
        super().__init__(base_lr, min_delta)
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0.0 <= warmup < 1.0:
            raise ConfigError(f"cosine warmup must be a fraction of the run in [0, 1), got {warmup!r}")
        self.min_lr, self.warmup = _check_floor(min_lr, self.base_lr), float(warmup)

    def before_step(self, optimizer: Any, fraction_done: float) -> None:
        f, w, floor = min(max(fraction_done, 0.0), 1.0), self.warmup, self.min_lr
        if f < w:
            optimizer.lr = floor + (self.base_lr - floor) * f / w
        else:
            optimizer.lr = floor + 0.5 * (self.base_lr - floor) * (1.0 + math.cos(math.pi * (f - w) / (1.0 - w)))


def _check_floor(min_lr: Any, base_lr: float) -> float:
    if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or not 0.0 <= min_lr <= base_lr:
        raise ConfigError(f"min_lr must be a number in [0, the learning rate {base_lr:g}], got {min_lr!r}")
    return float(min_lr)


#: what plateau does when validation stalls again at the floor
AT_FLOOR = ("stop", "continue")
SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (PlateauSchedule, CosineSchedule, Schedule)}


def make_schedule(name: str, base_lr: float, decay: float = 0.5, patience: int = 1, min_lr: float = 0.0,
                  at_floor: str = "continue", warmup: float = 0.0) -> Schedule:
    """The schedule called ``name`` ("plateau", "cosine" or "none") starting at ``base_lr``.

    ``decay``, ``patience`` and ``at_floor`` are plateau's, ``warmup`` is cosine's, ``min_lr``
    bounds both; the defaults reproduce the schedules of runs saved before these settings existed.
    """
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    if name == PlateauSchedule.name:
        return PlateauSchedule(base_lr, decay, patience=patience, min_lr=min_lr, at_floor=at_floor)
    if name == CosineSchedule.name:
        return CosineSchedule(base_lr, min_lr=min_lr, warmup=warmup)
    return Schedule(base_lr)
