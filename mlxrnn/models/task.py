"""What every task model offers besides its math: ``evaluate``, ``fit``, ``save``, ``load``, ``summary``.

:class:`TaskModel` is mixed into :class:`~mlxrnn.models.sequence_model.SequenceModel` (and so the
tagger), :class:`~mlxrnn.models.classifier.SequenceClassifier`,
:class:`~mlxrnn.models.seq2seq.Seq2Seq` and :class:`~mlxrnn.models.generator.SequenceGenerator`.
A model supplies four small things: its checkpoint ``kind`` and config class, the arrays of its
batch whose axis 1 is padded time (:meth:`TaskModel.time_keys`), and :meth:`TaskModel.metric_sums`,
the summed loss and correct predictions of one batch with their counts, so that
:meth:`TaskModel.evaluate` averages exactly over a whole dataset (every counted token or example
weighs the same, however the batches fall):

    loss = Σ_batches loss_sum / Σ_batches count        accuracy = Σ correct / Σ count

``fit`` is the training loop of :mod:`mlxrnn.training.fit` and ``save``/``load`` the checkpoint
files of :mod:`mlxrnn.io.model_files`. Those layers sit above the models (they import them), so
they hand their functions down with :func:`provide` when they are imported, and the methods call
what was provided: this layer never imports a layer above it. ``import mlxrnn`` imports both
(and importing any ``mlxrnn.*`` module imports ``mlxrnn`` first), so every model has them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlxrnn.models.datasets import Dataset
from mlxrnn.nn.losses import binary_cross_entropy_with_logits, mean_squared_error, softmax_cross_entropy

_PROVIDED: dict[str, Callable[..., Any]] = {}


def provide(name: str, function: Callable[..., Any]) -> None:
    """Hand a layer above's implementation of ``fit``, ``save`` or ``load`` down to every model."""
    if name not in ("fit", "save_model", "load_model"):
        raise ValueError(f"nothing called {name!r} is provided to the models")
    _PROVIDED[name] = function


def _provided(name: str) -> Callable[..., Any]:
    if name not in _PROVIDED:  # only while mlxrnn itself is half imported
        raise RuntimeError(f"{name} is not available yet: import mlxrnn first")
    return _PROVIDED[name]

Sums = dict[str, tuple[float, float]]  #: metric -> (summed value, count)


class TaskModel:
    """The framework-style methods of a task model (see the module docstring)."""

    checkpoint_kind: ClassVar[str]  #: the "kind" stored in its checkpoints
    config_class: ClassVar[type]  #: rebuilt from the checkpoint's "config"
    pair_keys: ClassVar[tuple[str, str]] = ("inputs", "targets")  #: what an (x, y) pair stands for

    def saved_config(self) -> Any:
        """The config a checkpoint stores (the one the constructor takes)."""
        return self.config

    def time_keys(self) -> dict[str, tuple[str, ...]]:
        """lengths key -> the batch arrays whose axis 1 it measures (cut to the batch's longest)."""
        return {}

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        """One batch's summed loss (and accuracy where it means something), with counts."""
        raise NotImplementedError

    # --- evaluation -------------------------------------------------------------------------------
    def evaluate(self, data: Any, batch_size: int = 64) -> dict[str, float]:
        """Mean loss (and accuracy) over ``data``, in inference mode (no dropout).

        ``data`` is a dataset as ``fit`` takes it (:mod:`mlxrnn.models.datasets`): a dict of
        arrays with one row per example, an (inputs, targets) pair, or a list of batch dicts.
        Returns ``{"loss": ..., "accuracy": ...}``: the loss the model trains on (cross-entropy
        in nats, or MSE), averaged over every counted token or example; the accuracy of the most
        probable class (sigmoid heads: σ(z) > ½) over the same positions; none for MSE.
        """
        dataset = data if isinstance(data, Dataset) else Dataset(data, self.pair_keys, name="data")
        sums: dict[str, list[float]] = {}
        for batch, _ in dataset.batches(batch_size, time_keys=self.time_keys()):
            for name, (total, count) in self.metric_sums(batch).items():
                acc = sums.setdefault(name, [0.0, 0.0])
                acc[0] += float(total)
                acc[1] += float(count)
        return {name: total / count if count else math.nan for name, (total, count) in sums.items()}

    # --- training and files (implemented in the layers above, see the module docstring) ----------
    def fit(self, train: Any, validation: Any = None, *, epochs: int = 1, batch_size: int = 32,
            optimizer: Any = "adam", lr: float | None = None, clip_norm: float | None = 5.0,
            callbacks: Sequence[Any] = (), shuffle: bool = True, seed: int = 0,
            verbose: bool | int | None = None, validation_data: Any = None) -> Any:
        """Train on ``train`` for ``epochs`` passes; returns the :class:`~mlxrnn.training.fit.History`.

        See :func:`mlxrnn.training.fit.fit` for every argument; in short: ``train`` and
        ``validation`` are datasets as :meth:`evaluate` takes them, ``optimizer`` a name ("adam",
        "sgd", ...) or an :class:`~mlxrnn.nn.optim.Optimizer`, ``callbacks`` e.g.
        ``[EarlyStopping(patience=3), RestoreBestWeights()]``; a line per epoch is printed unless
        ``verbose=0``; ``validation_data=(x, y)`` is Keras's name for ``validation``.
        """
        return _provided("fit")(self, train, validation, epochs=epochs, batch_size=batch_size,
                                optimizer=optimizer, lr=lr, clip_norm=clip_norm, callbacks=callbacks, shuffle=shuffle,
                                seed=seed, verbose=verbose, validation_data=validation_data)

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the model to a new checkpoint directory (safetensors + JSON, atomic, no pickle);
        ``overwrite=True`` replaces a model saved there before, atomically (never other files)."""
        return _provided("save_model")(self, directory, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, backend: Any = None, dtype: str = "float32", tag: str = "best") -> Any:
        """A model saved by :meth:`save` (a checkpoint directory, or a run directory's ``tag``)."""
        return _provided("load_model")(path, backend=backend, dtype=dtype, tag=tag, expected=cls)

    # --- description ------------------------------------------------------------------------------
    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Print a table of the model's parts: layer, type, features in → out, parameters.

        ``print_fn`` receives each line (e.g. ``lines.append`` to keep them), as in Keras.
        """
        rows = [("layer", "type", "in → out", "parameters")]
        for name, child in self._children.items():
            sizes = child.io_sizes()
            rows.append((name, _type_name(child), "" if sizes is None else f"{sizes[0]} → {sizes[1]}",
                         f"{child.num_parameters():,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        settings = self.extra_repr()
        print_fn(f"{type(self).__name__}({settings})" + f" on {self.xp.name} {self.xp.dtype_name}")
        for row in rows:
            print_fn("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                                row[3].rjust(widths[3])]))
        total = self.num_parameters()
        size = total * np.dtype(self.xp.dtype_name).itemsize
        print_fn(f"total parameters: {total:,} ({_bytes(size)} as {self.xp.dtype_name})")


def _type_name(module: Any) -> str:
    """A layer's type for :meth:`TaskModel.summary`: ``LSTM ×2 bidirectional`` for a recurrent stack."""
    cell = getattr(module, "cell_name", None)
    if cell is None:
        return type(module).__name__
    depth = f" ×{module.num_layers}" if module.num_layers > 1 else ""
    return f"{cell.upper()}{depth}" + (" bidirectional" if module.bidirectional else "")


def _bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return f"{size:.1f} GiB"


# --- metric sums shared by the models ---------------------------------------------------------------
def _numpy(xp: Any, value: Any) -> np.ndarray:
    return np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else xp.to_numpy(value)


def class_metric_sums(xp: Any, logits: Any, targets: Any, weights: Any = None) -> Sums:
    """Softmax cross-entropy summed over counted positions, and argmax accuracy.

    logits (..., C), targets (...) ids, weights (...) 1 on counted positions (None: all; a
    target of −100 is never counted, as in :func:`~mlxrnn.nn.losses.softmax_cross_entropy`).
    """
    total, _ = softmax_cross_entropy(xp, logits, targets, weights=weights, reduction="sum", gradient=False)
    targets = _numpy(xp, targets)
    counted = (targets != -100).astype(np.float64)
    if weights is not None:
        counted = counted * _numpy(xp, weights)
    correct = (_numpy(xp, logits).argmax(axis=-1) == targets) * counted
    count = float(counted.sum())
    return {"loss": (xp.item(total), count), "accuracy": (float(correct.sum()), count)}


def binary_metric_sums(xp: Any, logits: Any, targets: Any, weights: Any = None) -> Sums:
    """Binary cross-entropy summed over counted positions × features, and σ(z) > ½ accuracy.

    logits and targets (..., F) with targets in [0, 1]; weights (...) masks whole positions.
    """
    total, _ = binary_cross_entropy_with_logits(xp, logits, targets, weights=weights, reduction="sum")
    z, t = _numpy(xp, logits), _numpy(xp, targets)
    w = np.ones(z.shape[:-1]) if weights is None else _numpy(xp, weights).astype(np.float64)
    correct = ((z > 0) == (t > 0.5)) * w[..., None]
    count = float(w.sum()) * z.shape[-1]
    return {"loss": (xp.item(total), count), "accuracy": (float(correct.sum()), count)}


def regression_metric_sums(xp: Any, outputs: Any, targets: Any, weights: Any = None) -> Sums:
    """Squared error summed over counted positions × features (the MSE's numerator and denominator)."""
    total, _ = mean_squared_error(xp, outputs, targets, weights=weights, reduction="sum")
    shape = tuple(outputs.shape)
    positions = float(np.prod(shape[:-1])) if weights is None else float(_numpy(xp, weights).sum())
    return {"loss": (xp.item(total), positions * shape[-1])}


#: the metric sums of each loss name (:data:`mlxrnn.nn.losses.LOSSES`)
METRIC_SUMS = {"cross_entropy": class_metric_sums, "binary_cross_entropy": binary_metric_sums,
               "mse": regression_metric_sums}
