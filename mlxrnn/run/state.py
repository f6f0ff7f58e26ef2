"""What a training run knows about its own progress, and what it reports.

:class:`RunState` is everything a run's loop changes that a checkpoint must keep so a resumed
run continues exactly (the other parts of a checkpoint belong to their owners: the weights to the
model, the moments to the optimizer, the learning-rate memory to the schedule, the dropout
stream to the trainer's RNG). :class:`Progress` is what the progress callback sees after every
step; :class:`RunSummary` is what :meth:`LanguageModelRun.train` returns.
"""

from __future__ import annotations

import functools
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mlxrnn.errors import CheckpointError
from mlxrnn.lm.evaluation import perplexity

#: the stop decisions a run records: early stopping (`patience`), or stalled at the learning-rate floor
#: with `at_min_lr` stop; each with the settings whose change on resuming lets the run train on
STOP_DECISIONS = {"patience": ("patience",), "min_lr": ("at_min_lr", "min_lr", "lr", "schedule")}

#: keys of a state saved before the schedule kept its own state: theirs under the schedule's names
LEGACY_SCHEDULE_KEYS = {"sched_best": "best", "bad_evals": "bad_evals", "base_lr": "base_lr"}


@dataclass
class RunState:
    """A run's position and memory, saved in every checkpoint (``meta["training"]["state"]``).

    ``carry`` is saved too, but as tensors beside the optimizer's (see
    :mod:`mlxrnn.run.carried_state`); every other field is a JSON scalar.
    """

    step: int = 0  #: updates done
    epoch: int = 0  #: full passes over the training split done
    window: int = 0  #: the next window of the current epoch
    initial_loss: float | None = None  #: the first finite loss: the divergence reference
    elapsed: float = 0.0  #: seconds of training over every session of the run
    tokens: int = 0  #: training tokens seen (every process's)
    best_val: float | None = None  #: the best validation loss so far
    last_val: float | None = None  #: the latest validation loss
    clipped_since_record: int = 0  #: steps that clipped since the last "train" record
    steps_since_record: int = 0  #: steps since the last "train" record
    #: why the run decided to stop, one of :data:`STOP_DECISIONS` (None: it has not), so that a
    #: resumed run does not train past a decision its last checkpoint was written with
    stopped: str | None = None
    carry: Any = field(default=None, repr=False)  #: (B, H) state, (h, c) pair or None: the next window's start

    def to_dict(self) -> dict[str, Any]:
        """The JSON part: every field but ``carry`` (scalars, so no copy is needed); ``stopped``
        only once set, so the checkpoints of runs that did not stop read as before."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)
                if spec.name != "carry" and not (spec.name == "stopped" and self.stopped is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """A saved state; fields missing from older checkpoints take their defaults."""
        known = {spec.name for spec in fields(cls)} - {"carry"}
        unknown = sorted(set(data) - known - set(LEGACY_SCHEDULE_KEYS))
        if unknown:
            raise CheckpointError(
                f"the run's saved state has fields this mlxrnn does not know ({', '.join(unknown)}); "
                "resume it with the mlxrnn version that wrote it"
            )
        for name, value in data.items():
            if name in known and not _fits(_field_types()[name], value):
                raise CheckpointError(
                    f"the run's saved state has {name} = {value!r:.40}, not a {_field_types()[name]}; the checkpoint "
                    "was modified or damaged"
                )
        return cls(**{name: value for name, value in data.items() if name in known})


def schedule_log_line(schedule: Any, lr: float, options: Any) -> str | None:
    """The log line of a schedule that just changed the rate or gave up, else None (names fields)."""
    action, stalls = getattr(schedule, "last_action", None), schedule.bad_evals
    stalled = f"validation loss did not improve in {stalls} evaluation{'s' if stalls > 1 else ''}"
    if action == "decayed":
        return f"{stalled}: learning rate → {lr:.3g}"
    if action == "floor":
        then = "the run stops" if options.at_min_lr == "stop" else "training continues at it"
        return (f"{stalled}: learning rate → {lr:.3g}, its floor `min_lr`; {then} if validation stalls "
                f"{options.decay_patience} more evaluation(s)")
    if action == "exhausted":
        return (f"validation loss did not improve in {options.decay_patience} evaluation(s) at the learning-rate "
                f"floor `min_lr` ({lr:.3g}): stopping (`at_min_lr` continue would keep training at it)")
    return None


@functools.cache
def _field_types() -> dict[str, str]:
    return {name: str(hint) for name, hint in typing.get_type_hints(RunState).items()}


def _fits(hint: str, value: Any) -> bool:
    """Whether a saved value fits its RunState field: counters are integers >= 0, losses and
    times finite numbers (or None where the field allows it)."""
    if value is None:
        return "None" in hint
    if isinstance(value, bool):
        return False
    if hint.startswith("str"):  # the stop decision
        return value in STOP_DECISIONS
    if hint.startswith("<class 'int'>"):
        return isinstance(value, int) and value >= 0
    return isinstance(value, (int, float)) and math.isfinite(value)


def legacy_schedule_state(state: dict[str, Any]) -> dict[str, Any]:
    """The schedule's state from a run state saved before schedules kept their own."""
    return {new: state[old] for old, new in LEGACY_SCHEDULE_KEYS.items()}


@dataclass
class Progress:
    """What the progress callback receives after every step (and at evaluations)."""

    step: int
    total_steps: int | None
    epoch: int
    loss: float
    tokens_per_second: float
    elapsed: float
    eta_seconds: float | None
    lr: float
    val_loss: float | None = None
    event: str = "train"
    level: str | None = None  #: the model's level ("char" or "word"): how a loss is best read


@dataclass
class RunSummary:
    """What a finished (or stopped) run reports; attributes carry the keys of ``mlxrnn train --json``."""

    run_dir: str
    steps: int
    epochs_completed: float
    best_val_loss: float | None  #: nats per token
    last_val_loss: float | None
    elapsed_seconds: float
    tokens_per_second: float
    stopped_because: str
    level: str
    test_loss: float | None = None  #: the `test` file's loss under the best checkpoint, if one was given
    tokenizer: str | None = None  #: the tokenizer kind: losses and perplexities are per its tokens

    @property
    def best_val_perplexity(self) -> float | None:
        """exp(best validation loss), per token of the run's tokenizer."""
        return None if self.best_val_loss is None else perplexity(self.best_val_loss)

    @property
    def best_val_bpc(self) -> float | None:
        """Bits per character of the best validation loss (character models only, else None)."""
        return None if self.level != "char" or self.best_val_loss is None else self.best_val_loss / math.log(2)

    def to_dict(self) -> dict:
        """The summary as ``mlxrnn train --json`` prints it (with perplexities, and bits/char for characters)."""
        data = asdict(self)
        for name, loss in (("best_val", self.best_val_loss), ("test", self.test_loss)):
            if loss is None:
                continue
            data[f"{name}_perplexity"] = perplexity(loss)
            if self.level == "char":
                data[f"{name}_bpc"] = loss / math.log(2)
        return data
