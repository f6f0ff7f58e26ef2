"""``model.fit(...)``: train a task model for some epochs, with validation, callbacks and a history.

Every epoch shuffles the training examples, cuts them into batches of ``batch_size`` rows (the
padded time axes cut to each batch's longest sequence, :mod:`mlxrnn.models.datasets`) and
applies one :class:`~mlxrnn.training.trainer.Trainer` step per batch (forward, BPTT, clipping by
global norm, the optimizer's update). After each epoch the :class:`History` records

    loss      the mean of the epoch's batch losses, each weighted by its rows (as Keras reports it;
              the weights change during the epoch, so this is no single model's loss)
    accuracy  (models that predict classes) the training accuracy of the epoch's final weights,
              measured over every training example in inference mode, so it compares directly
              with val_accuracy (Keras's running mean over the epoch's batches would not); it
              costs one forward pass over the training data per epoch
    val_*     ``model.evaluate(validation)`` with the epoch's final weights: exact averages over
              every validation token or example (val_loss, val_accuracy)

Callbacks (:mod:`mlxrnn.training.callbacks`) see every epoch and batch; early stopping and
restoring the best weights are callbacks. Like Keras, ``fit`` prints a line per epoch by default
(on stderr; on a terminal a bar is redrawn while the epoch runs); ``verbose=0`` silences it.
A NaN/Inf training loss puts back the weights the epoch started from and raises
:class:`~mlxrnn.errors.TrainingDiverged`: a diverged step never leaves the model full of NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, TrainingDiverged
from mlxrnn.models.datasets import Dataset
from mlxrnn.models.task import provide
from mlxrnn.nn.module import check_positive_int
from mlxrnn.nn.optim import Optimizer, make_optimizer
from mlxrnn.training.callbacks import Callback, ProgressBar
from mlxrnn.training.trainer import Trainer


@dataclass
class History:
    """Per-epoch results of :func:`fit`, as Keras keeps them: ``history.history["val_loss"]``."""

    epochs: list[int] = field(default_factory=list)  #: the epochs run, from 1
    history: dict[str, list[float]] = field(default_factory=dict)  #: metric -> one value per epoch
    stop_reason: str = "finished"  #: "finished" or why a callback stopped training

    def __getitem__(self, metric: str) -> list[float]:
        return self.history[metric]

    def record(self, epoch: int, logs: dict[str, float]) -> None:
        """Append epoch ``epoch``'s logs (one value per metric)."""
        self.epochs.append(epoch)
        for name, value in logs.items():
            self.history.setdefault(name, []).append(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"epochs": [...], "loss": [...], "val_loss": [...], ..., "stop_reason": ...}."""
        return {"epochs": list(self.epochs), **{k: list(v) for k, v in self.history.items()},
                "stop_reason": self.stop_reason}


class FitLoop:
    """The state of a running :func:`fit`, as callbacks see it (see :mod:`mlxrnn.training.callbacks`)."""

    def __init__(self, model: Any, trainer: Trainer, epochs: int, batches_per_epoch: int, has_validation: bool):
        self.model, self.trainer, self.optimizer = model, trainer, trainer.optimizer
        self.epochs, self.batches_per_epoch = epochs, batches_per_epoch
        self.total_batches = epochs * batches_per_epoch
        self.has_validation = has_validation
        self.history = History()
        self.epoch = 0  #: the current epoch, from 1
        self.step = 0  #: batches done over all epochs
        self.stop_training = False  #: set by a callback: stop after this epoch
        self.stop_reason = ""


def fit(model: Any, train: Any, validation: Any = None, *, epochs: int = 1, batch_size: int = 32,
        optimizer: str | Optimizer = "adam", lr: float | None = None, clip_norm: float | None = 5.0,
        callbacks: Sequence[Any] = (), shuffle: bool = True, seed: int = 0, verbose: bool | int | None = None,
        validation_data: Any = None) -> History:
    """Train ``model`` on ``train`` for ``epochs`` passes; returns the :class:`History`.

    Args:
        model: a task model (SequenceModel, SequenceClassifier, SequenceTagger, Seq2Seq,
            SequenceGenerator); ``model.fit(...)`` calls this.
        train, validation: datasets: a dict of arrays with one row per example in the model's
            batch format, an (inputs, targets) pair, or a list of batch dicts
            (:mod:`mlxrnn.models.datasets`). Without validation no "val_*" is recorded.
        validation_data: Keras's name for ``validation`` (e.g. ``validation_data=(x_val, y_val)``).
        epochs: passes over ``train``; batch_size: rows per batch (the last batch may be smaller).
        optimizer: a name ("adam", "adamw", "sgd", "rmsprop") built with ``lr`` (default 1e-3),
            or an :class:`~mlxrnn.nn.optim.Optimizer` (its moments carry over between fits).
        clip_norm: rescale gradients whose global norm exceeds this (None: never).
        callbacks: e.g. ``[EarlyStopping(patience=3), RestoreBestWeights()]``.
        shuffle: a new order of the training examples every epoch (batch lists: of the batches).
        seed: seeds the shuffling and the dropout masks.
        verbose: a line per epoch on stderr (redrawn as a bar while the epoch runs when stderr is a
            terminal): None, 1 or True; 2: the epoch lines only, never redrawn; 0 or False: silent.
    Raises:
        ConfigError/ShapeError: bad data or settings (before the first step);
        TrainingDiverged: the loss became NaN or Inf (the epoch's starting weights are restored).
        KeyboardInterrupt (Ctrl-C) stops at once; the model keeps the weights of the last finished step.
    """
    if validation_data is not None:
        if validation is not None:
            raise ConfigError("give the validation set once: `validation` or `validation_data` (its Keras name)")
        validation = validation_data
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    train_data = Dataset(train, model.pair_keys, name="train")
    val_data = None if validation is None else Dataset(validation, model.pair_keys, name="validation")
    for data in (train_data, val_data):
        if data is not None:
            data.require(model.pair_keys)  # not a KeyError at the first step
    callbacks = _callbacks(callbacks)
    optimizer = _optimizer(optimizer, lr)
    trainer = Trainer(model, optimizer, clip_norm=clip_norm, rng=np.random.default_rng(seed + 1))
    shuffler = np.random.default_rng(seed)
    if (verbose is None or verbose) and not any(isinstance(callback, ProgressBar) for callback in callbacks):
        callbacks.append(ProgressBar(redraw=verbose != 2))
    loop = FitLoop(model, trainer, epochs, train_data.num_batches(batch_size), val_data is not None)
    time_keys = model.time_keys()
    measures_accuracy = None  # whether the model reports an accuracy: known after the first epoch
    try:
        _each(callbacks, "on_train_begin", loop)
        for epoch in range(1, epochs + 1):
            loop.epoch = epoch
            start_weights = model.numpy_parameters()  # put back if this epoch diverges
            _each(callbacks, "on_epoch_begin", loop, epoch)
            loss_sum = rows_sum = 0.0
            batches = train_data.batches(batch_size, shuffler if shuffle else None, time_keys)
            for index, (batch, rows) in enumerate(batches):
                _each(callbacks, "on_batch_begin", loop, index)
                loss = trainer.step(batch).loss
                if not math.isfinite(loss):
                    model.load_parameters(start_weights)
                    raise TrainingDiverged(
                        f"the training loss became {loss} at epoch {epoch}, batch {index + 1}; the model holds the "
                        f"weights epoch {epoch} started with; try a lower `lr` (now {optimizer.lr:g}) or "
                        f"`clip_norm` (now {clip_norm})"
                    )
                loss_sum, rows_sum = loss_sum + loss * rows, rows_sum + rows
                loop.step += 1
                _each(callbacks, "on_batch_end", loop, index, loss)
            logs = {"loss": loss_sum / rows_sum}
            if measures_accuracy is not False:  # a forward pass over the training data, once an epoch
                accuracy = model.evaluate(train_data, batch_size=batch_size).get("accuracy")
                measures_accuracy = accuracy is not None
                if measures_accuracy:
                    logs["accuracy"] = accuracy
            if val_data is not None:
                logs.update({f"val_{name}": value for name, value in
                             model.evaluate(val_data, batch_size=batch_size).items()})
            loop.history.record(epoch, logs)
            _each(callbacks, "on_epoch_end", loop, epoch, logs)
            if loop.stop_training:
                loop.history.stop_reason = loop.stop_reason or "stopped by a callback"
                break
    finally:
        _each(callbacks, "on_train_end", loop)
    return loop.history


_HOOKS = tuple(name for name in vars(Callback) if name.startswith("on_"))


def _callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list, each an object with at least one hook (``on_epoch_end``, ...)."""
    usage = "pass a list of callbacks, e.g. callbacks=[EarlyStopping(patience=3)]"
    if isinstance(callbacks, (str, bytes, Mapping)) or not isinstance(callbacks, Iterable):
        raise ConfigError(f"callbacks must be a list of callbacks, got {type(callbacks).__name__}; {usage}")
    callbacks = list(callbacks)
    for callback in callbacks:
        if not any(callable(getattr(callback, hook, None)) for hook in _HOOKS):
            raise ConfigError(
                f"callbacks holds a {type(callback).__name__}, which has none of the hooks {', '.join(_HOOKS)}; "
                f"{usage} (mlxrnn.training.callbacks, or a subclass of Callback)"
            )
    return callbacks


def _optimizer(optimizer: str | Optimizer, lr: float | None) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ConfigError("give the learning rate to the optimizer object or as lr=, not both")
        return optimizer
    if isinstance(optimizer, str):
        return make_optimizer(optimizer, 1e-3 if lr is None else lr)
    raise ConfigError(f"optimizer must be a name such as 'adam' or an mlxrnn Optimizer, got {type(optimizer).__name__}")


def _each(callbacks: list[Any], hook: str, *args: Any) -> None:
    for callback in callbacks:
        method = getattr(callback, hook, None)
        if method is not None:
            method(*args)


# Every task model's ``fit`` method calls this (mlxrnn/models/task.py: the models sit below training/).
provide("fit", fit)
