"""Callbacks for :func:`mlxrnn.training.fit.fit`: hooks into the epoch loop, as Keras has them.

A callback is any object with some of these methods (:class:`Callback` has them all, doing
nothing); ``loop`` is the running :class:`~mlxrnn.training.fit.FitLoop` (its ``model``,
``optimizer``, ``history``, ``epochs``, ``batches_per_epoch``, ``step``, and ``stop_training``,
which a callback sets to end training after the current epoch):

    on_train_begin(loop)                  before the first epoch
    on_epoch_begin(loop, epoch)           epochs count from 1
    on_batch_begin(loop, batch)           batches count from 0 within the epoch
    on_batch_end(loop, batch, loss)       loss: that batch's training loss
    on_epoch_end(loop, epoch, logs)       logs: {"loss": ..., "val_loss": ..., "val_accuracy": ...}
    on_train_end(loop)                    always, also when training stops with an exception

Here: :class:`EarlyStopping`, :class:`RestoreBestWeights`, :class:`LearningRateSchedule` and
:class:`ProgressBar` (which ``fit`` adds by itself unless ``verbose=0``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.nn.module import check_positive_int
from mlxrnn.nn.schedules import Schedule, make_schedule


class Callback:
    """Base class: every hook, doing nothing (override the ones you need)."""

    def on_train_begin(self, loop: Any) -> None:
        """Before the first epoch."""

    def on_epoch_begin(self, loop: Any, epoch: int) -> None:
        """Before epoch ``epoch`` (from 1)."""

    def on_batch_begin(self, loop: Any, batch: int) -> None:
        """Before batch ``batch`` (from 0 in each epoch)."""

    def on_batch_end(self, loop: Any, batch: int, loss: float) -> None:
        """After batch ``batch``, with its training loss."""

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        """After epoch ``epoch``, with its logs (loss, accuracy, val_*); set ``loop.stop_training`` to stop."""

    def on_train_end(self, loop: Any) -> None:
        """After the last epoch, also when training stopped early or failed."""


class _Monitor(Callback):
    """Watches one entry of the epoch logs and remembers its best value."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else 1.0  # minimise sign·value
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_train_begin(self, loop: Any) -> None:
        self.best = self.best_epoch = None
        if self.monitor.startswith("val_") and not loop.has_validation:
            raise ConfigError(
                f"{type(self).__name__} watches {self.monitor!r}, which fit reports only with validation data; "
                f"pass validation=... or monitor='loss'"
            )

    def improved(self, epoch: int, logs: dict[str, float]) -> bool:
        """Record ``logs[monitor]``; True when it beats the best so far by more than min_delta."""
        if self.monitor not in logs:
            raise ConfigError(f"{type(self).__name__} watches {self.monitor!r}, but fit reports only "
                              f"{', '.join(logs)}")
        value = logs[self.monitor]
        if math.isfinite(value) and (self.best is None or self.sign * value < self.sign * self.best - self.min_delta):
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: an entry of the epoch logs ("val_loss", "val_accuracy", "loss", ...).
        patience: epochs without improvement to tolerate.
        min_delta: smaller changes do not count as improvement.
        mode: "min", "max", or "auto" (max for accuracies, min otherwise).
        restore_best_weights: also put back the weights of the best epoch at the end, as
            :class:`RestoreBestWeights` does (Keras's option of the same name).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False):
        super().__init__(monitor, mode, min_delta)
        self.patience = check_positive_int("patience", patience)
        self.restore = RestoreBestWeights(monitor, mode, min_delta) if restore_best_weights else None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, loop: Any) -> None:
        super().on_train_begin(loop)
        self.stopped_epoch = None
        if self.restore is not None:
            self.restore.on_train_begin(loop)

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.restore is not None:
            self.restore.on_epoch_end(loop, epoch, logs)
        if not self.improved(epoch, logs) and epoch - (self.best_epoch or 0) >= self.patience:
            self.stopped_epoch = epoch
            loop.stop_training = True
            loop.stop_reason = (f"early stopping: {self.monitor} did not improve for {self.patience} epoch(s) "
                                f"(best {self.best} at epoch {self.best_epoch})")

    def on_train_end(self, loop: Any) -> None:
        if self.restore is not None:
            self.restore.on_train_end(loop)


class RestoreBestWeights(_Monitor):
    """Keep a copy of the weights whenever ``monitor`` improves; put the best back when training ends.

    The copy is NumPy (one per improvement, the size of the model); when training ends for any
    reason, also an exception such as a diverged loss, the model holds the best epoch's weights.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.weights: dict[str, np.ndarray] | None = None

    def on_train_begin(self, loop: Any) -> None:
        super().on_train_begin(loop)
        self.weights = None

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.improved(epoch, logs):
            self.weights = loop.model.numpy_parameters()

    def on_train_end(self, loop: Any) -> None:
        if self.weights is not None:
            loop.model.load_parameters(self.weights)


class LearningRateSchedule(Callback):
    """Set the optimizer's learning rate before every batch.

    ``schedule``: "cosine" (from the initial rate to 0 over the whole fit), "plateau" (× ``decay``
    after every epoch whose ``val_loss`` did not improve; needs validation), "none", a
    :class:`~mlxrnn.nn.schedules.Schedule`, or a function ``f(fraction_done) -> factor`` giving
    lr = lr₀ · f(fraction of all batches done, in [0, 1]).
    """

    def __init__(self, schedule: str | Schedule | Callable[[float], float] = "cosine", decay: float = 0.5):
        self.spec, self.decay = schedule, decay
        self.schedule: Schedule | None = None
        self.factor: Callable[[float], float] | None = None
        self.base_lr = 0.0

    def on_train_begin(self, loop: Any) -> None:
        self.base_lr = loop.optimizer.lr
        if callable(self.spec) and not isinstance(self.spec, Schedule):
            self.factor = self.spec
        else:
            self.schedule = self.spec if isinstance(self.spec, Schedule) else make_schedule(
                self.spec, self.base_lr, decay=self.decay)
            if self.schedule.name == "plateau" and not loop.has_validation:
                raise ConfigError("the plateau schedule decays on val_loss; pass validation=... or use 'cosine'")

    def on_batch_begin(self, loop: Any, batch: int) -> None:
        fraction = loop.step / max(loop.total_batches, 1)
        if self.factor is not None:
            loop.optimizer.lr = self.base_lr * float(self.factor(fraction))
        else:
            self.schedule.before_step(loop.optimizer, fraction)

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        if self.schedule is not None and "val_loss" in logs:
            self.schedule.after_evaluation(loop.optimizer, logs["val_loss"])


class ProgressBar(Callback):
    """One line per epoch; on a terminal, redrawn while the epoch runs (at most 10 times a second).

    ``fit`` adds one by itself unless ``verbose=0``: in a script whose output goes to a file or a
    pipe it writes the epoch lines only, as Keras does.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24, redraw: bool = True):
        """``redraw=False``: the epoch lines only, even on a terminal (``fit(verbose=2)``)."""
        self.stream = stream or sys.stderr
        self.width = width
        self.is_tty = redraw and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = 0.0
        self._started = 0.0
        self._losses: list[float] = []
        self._open_line = False  #: a redrawn line not yet ended

    def on_epoch_begin(self, loop: Any, epoch: int) -> None:
        self._started, self._losses = time.perf_counter(), []

    def on_batch_end(self, loop: Any, batch: int, loss: float) -> None:
        self._losses.append(loss)
        now = time.perf_counter()
        if not self.is_tty or now - self._drawn < 0.1:
            return
        self._drawn = now
        done, total = batch + 1, loop.batches_per_epoch
        filled = int(self.width * done / max(total, 1))
        bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"
        self.stream.write(f"\r{self._prefix(loop)} {bar}  loss {np.mean(self._losses):.4f}\x1b[K")
        self.stream.flush()
        self._open_line = True

    def on_epoch_end(self, loop: Any, epoch: int, logs: dict[str, float]) -> None:
        metrics = "  ".join(f"{name} {value:.4f}" for name, value in logs.items())
        line = f"{self._prefix(loop)}  {metrics}  ({time.perf_counter() - self._started:.1f} s)"
        self.stream.write(("\r" + line + "\x1b[K" if self.is_tty else line) + "\n")
        self.stream.flush()
        self._open_line = False

    def on_train_end(self, loop: Any) -> None:
        if self._open_line:  # stopped mid-epoch (an exception): end the redrawn line
            self.stream.write("\n")
        if loop.stop_reason:
            self.stream.write(loop.stop_reason + "\n")
        self.stream.flush()

    @staticmethod
    def _prefix(loop: Any) -> str:
        return f"epoch {loop.epoch}/{loop.epochs}"
