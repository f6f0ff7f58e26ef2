"""Models on disk: any mlxrnn model in the checkpoint format language models use.

    DIR/model.safetensors   the parameters, by their names in ``model.parameters()``
    DIR/meta.json           {"meta": {"kind": "classifier", "config": {...the config's to_dict()...}}, ...}

:func:`save_model` writes a new directory atomically with
:func:`~mlxrnn.io.checkpoint.save_checkpoint` (a temporary sibling, fsynced, renamed into place;
an existing directory is replaced only with ``overwrite=True``, and only if it holds a saved
model), so a crash never leaves half a model, and nothing is pickled. :func:`load` reads any of
them back: a task model by its kind (:data:`MODEL_KINDS`), or a language model (run directory or
checkpoint), whose loader :mod:`mlxrnn.lm.model` registers here with :func:`register_loader`,
since the language model lives in a layer above this one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlxrnn.backend import get_backend
from mlxrnn.errors import CheckpointError, ConfigError, MLXRNNError
from mlxrnn.io.checkpoint import Checkpoint, check_weights, load_checkpoint, save_checkpoint
from mlxrnn.models.classifier import SequenceClassifier
from mlxrnn.models.generator import SequenceGenerator
from mlxrnn.models.seq2seq import Seq2Seq
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.models.tagger import SequenceTagger
from mlxrnn.models.task import provide

#: checkpoint "kind" -> the model class that reads it (its ``config_class`` rebuilds the config)
MODEL_KINDS: dict[str, type] = {
    cls.checkpoint_kind: cls for cls in (SequenceModel, SequenceClassifier, SequenceTagger, Seq2Seq, SequenceGenerator)
}
#: other kinds (the language model): kind -> loader(checkpoint, backend object) -> model
LOADERS: dict[str, Callable[[Checkpoint, Any], Any]] = {}


def register_loader(kind: str, loader: Callable[[Checkpoint, Any], Any]) -> None:
    """Let :func:`load` open checkpoints of ``kind`` with ``loader(checkpoint, backend)``."""
    LOADERS[kind] = loader


def save_model(model: Any, directory: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write ``model`` (one of :data:`MODEL_KINDS`) to the new directory ``directory``; returns it.
    ``overwrite=True`` replaces a model saved there before, atomically (and never anything else)."""
    kind = getattr(model, "checkpoint_kind", None)
    if kind not in MODEL_KINDS:
        raise CheckpointError(f"cannot save a {type(model).__name__}: save one of "
                              f"{', '.join(cls.__name__ for cls in MODEL_KINDS.values())}")
    meta = {"kind": kind, "config": model.saved_config().to_dict()}
    return save_checkpoint(directory, model.numpy_parameters(), meta, overwrite=overwrite)


def load(path: str | os.PathLike[str], backend: Any = None, dtype: str = "float32", tag: str = "best") -> Any:
    """Any saved mlxrnn model: a task model written by ``save``, or a trained language model.

    Args:
        path: a checkpoint directory, or a run directory (its ``tag`` checkpoint: "best" or "last").
        backend: "auto", "numpy", "mlx" or a backend object; dtype: "float32" or "float64".
    Returns:
        the model (e.g. a :class:`~mlxrnn.models.classifier.SequenceClassifier`), or a
        :class:`~mlxrnn.lm.model.LanguageModel` with ``sample``/``score``/``evaluate``.
    Raises:
        CheckpointError: (one line) missing, damaged, tampered with, or not an mlxrnn model.
    """
    checkpoint = load_checkpoint(_checked_path(path), tag=tag)
    kind = _kind(checkpoint)
    xp = get_backend(backend, dtype)
    if kind in LOADERS:
        return LOADERS[kind](checkpoint, xp)
    return _task_model(checkpoint, MODEL_KINDS.get(kind) if isinstance(kind, str) else None, xp)


def load_model(path: str | os.PathLike[str], backend: Any = None, dtype: str = "float32", tag: str = "best",
               expected: type | None = None) -> Any:
    """:func:`load`, refusing anything but an ``expected`` (e.g. ``SequenceTagger.load`` reads only taggers)."""
    checkpoint = load_checkpoint(_checked_path(path), tag=tag)
    kind = _kind(checkpoint)
    model_class = MODEL_KINDS.get(kind)
    if expected is not None and model_class is not None and not issubclass(model_class, expected):
        raise CheckpointError(
            f"{checkpoint.path} holds a {model_class.__name__}, not a {expected.__name__}; load it with "
            f"{model_class.__name__}.load or mlxrnn.load"
        )
    if expected is not None and model_class is None and kind in LOADERS:
        raise CheckpointError(f"{checkpoint.path} holds a {kind}, not a {expected.__name__}; load it with mlxrnn.load")
    return _task_model(checkpoint, model_class, get_backend(backend, dtype))


def _checked_path(path: Any) -> str | os.PathLike[str]:
    """``path`` if it can name a directory, else a ConfigError saying what to pass."""
    if isinstance(path, str) or (isinstance(path, os.PathLike) and isinstance(os.fspath(path), str)):
        return path
    raise ConfigError(
        f"the path of a saved model must be a str or pathlib.Path (a checkpoint or run directory), got "
        f"{type(path).__name__} {path!r:.40}"
    )


def _kind(checkpoint: Checkpoint) -> str:
    """The checkpoint's model kind (a string: anything else is damage, said in one line)."""
    kind = checkpoint.meta.get("kind")
    if not isinstance(kind, str):
        raise CheckpointError(
            f"{checkpoint.path} has no model kind a string can name ({type(kind).__name__} {kind!r:.40}); the "
            "checkpoint was modified or damaged - load another one"
        )
    return kind


def _task_model(checkpoint: Checkpoint, model_class: type | None, xp: Any) -> Any:
    kind = checkpoint.meta.get("kind")
    if model_class is None:
        known = ", ".join([*MODEL_KINDS, *LOADERS])
        raise CheckpointError(
            f"{checkpoint.path} holds a model of kind {kind!r}, which this mlxrnn cannot load (it loads {known}); "
            "load it with the program that wrote it"
        )
    try:
        config = model_class.config_class.from_dict(checkpoint.meta.get("config"))
        model = model_class(config, backend=xp)
    except (MLXRNNError, TypeError, ValueError, MemoryError) as error:
        raise CheckpointError(
            f"checkpoint metadata is invalid: its {kind} config cannot be built ({' '.join(str(error).split())}); "
            "the checkpoint was modified or damaged - load another one"
        ) from None
    check_weights(checkpoint.weights, model.parameter_shapes())
    model.load_parameters(checkpoint.weights)
    return model


# The models' save/load methods call these (mlxrnn/models/task.py: the models sit below io/).
provide("save_model", save_model)
provide("load_model", load_model)
