"""Resuming a run: the training part of a checkpoint, checked whole before anything is restored.

A checkpoint written by :meth:`~mlxrnn.run.loop.LanguageModelRun.save` holds, beside the model::

    meta["training"] = {
        "options":       {field: value} of TrainOptions
        "optimizer":     {"name", "step_count", "lr", "hyper"}        (moments: optimizer.safetensors)
        "schedule":      {"name", "base_lr", "best", "bad_evals"}     (absent before schedules kept state)
        "rng":           the dropout generator's bit_generator.state
        "state":         RunState.to_dict()                            (carried state: "carry/k" tensors)
        "corpus_sha256": sha256 hex of the corpus text
        "world_size":    processes that trained it
    }

:func:`check_training_meta` checks the keys and their types; an unknown key (what a newer mlxrnn
would write) is named, never crashed on. The parts are then restored by their owners, each
refusing bad values in one line (:meth:`Optimizer.load_state_dict` checks the moments against the
parameters' shapes, so a wrong one fails here and not at the first Adam step);
:func:`schedule_state`, :func:`restore_rng` and :func:`restored_state` cover the rest. :func:`resume_corpus` finds
the corpus: the CORPUS given again (accepted when its hash matches), else the saved path.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError, DataError
from mlxrnn.run.data import load_corpus, load_split_files
from mlxrnn.run.options import TrainOptions
from mlxrnn.run.state import LEGACY_SCHEDULE_KEYS, RunState, legacy_schedule_state

#: every key of meta["training"] and its JSON type
TRAINING_KEYS: dict[str, type] = {
    "options": dict, "optimizer": dict, "schedule": dict, "rng": dict, "state": dict, "corpus_sha256": str,
    "world_size": int, "split_files_sha256": dict,
}
#: the keys every checkpoint of a run has (schedule: only since schedules keep their own state)
REQUIRED_KEYS = ("options", "optimizer", "rng", "state", "corpus_sha256")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def damaged(run_dir: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"the checkpoint of {run_dir} cannot be resumed: {what}; it was modified or damaged - restore it or "
        "start a new run"
    )


def check_training_meta(meta: dict, run_dir: Path) -> dict[str, Any]:
    """The validated ``meta["training"]`` of a run's checkpoint (see the module docstring)."""
    saved = meta.get("training")
    if not isinstance(saved, dict) or "options" not in saved:
        raise DataError(f"{run_dir} was not written by `mlxrnn train`; cannot resume it")
    unknown = sorted(set(saved) - set(TRAINING_KEYS))
    if unknown:
        raise CheckpointError(
            f"the checkpoint of {run_dir} holds training state this mlxrnn does not know ({', '.join(unknown)}); "
            "it was written by a newer mlxrnn - upgrade mlxrnn to resume it, or start a new run"
        )
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise damaged(run_dir, f"its training state lacks {', '.join(missing)}")
    for key, kind in TRAINING_KEYS.items():
        value = saved.get(key)
        if key in saved and (not isinstance(value, kind) or isinstance(value, bool)):
            raise damaged(run_dir, f"its training state's {key!r} is {type(value).__name__}, not {kind.__name__}")
    if not _SHA256.match(saved["corpus_sha256"]):
        raise damaged(run_dir, "its corpus_sha256 is not a sha256")
    if saved.get("world_size", 1) < 1:
        raise damaged(run_dir, f"its world_size is {saved['world_size']}")
    known = {spec.name for spec in dataclasses.fields(TrainOptions)}
    unknown = sorted(set(saved["options"]) - known)
    if unknown:
        raise CheckpointError(
            f"the checkpoint of {run_dir} has options this mlxrnn does not know ({', '.join(unknown)}); it was "
            "written by a newer mlxrnn - upgrade mlxrnn to resume it, or start a new run"
        )
    return saved


def saved_options(saved: dict[str, Any], run_dir: Path) -> TrainOptions:
    """The options the run was started with, each checked (a bad one is damage, not a usage error)."""
    try:
        return TrainOptions.from_saved(saved["options"]).validate()
    except (ConfigError, TypeError) as error:
        raise damaged(run_dir, f"its saved option {error}") from None


def restore_rng(generator: np.random.Generator, state: dict, run_dir: Path) -> None:
    """Put the saved dropout stream back (a malformed state is refused, not half-applied)."""
    before = generator.bit_generator.state
    try:
        generator.bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        generator.bit_generator.state = before
        raise damaged(run_dir, f"its random-number state is malformed ({error})") from None


def schedule_state(saved: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The schedule's saved memory (inside the run state in runs saved before schedules kept it)."""
    if "schedule" in saved:
        return saved["schedule"]
    if not set(LEGACY_SCHEDULE_KEYS) <= set(saved["state"]):
        raise damaged(run_dir, "its training state lacks schedule")
    return legacy_schedule_state(saved["state"])


def restored_state(state: dict, carry: Any, windows: int, count: int, shape: tuple[int, ...],
                   run_dir: Path) -> RunState:
    """The saved RunState, checked: its window inside an epoch of ``windows``, and its carried
    hidden state None or ``count`` arrays of ``shape`` (L·D, every process's rows, H)."""
    restored = RunState.from_dict(state)
    if restored.window >= windows:
        raise damaged(run_dir, f"its position (window {restored.window}) is past the end of an epoch")
    if carry is not None:
        parts = carry if isinstance(carry, tuple) else (carry,)
        shapes = [tuple(int(d) for d in part.shape) for part in parts]
        if len(parts) != count or any(got != shape for got in shapes):
            raise damaged(run_dir, f"its carried state has shapes {shapes}; the model carries {count} of {shape}")
    return restored


def resume_corpus(options: TrainOptions, given: str | None, saved_sha: str) -> tuple[TrainOptions, str, str]:
    """(options naming the corpus to use, its text, its sha256) for a resumed run.

    ``given`` is the CORPUS passed again (None: use the saved path). A given corpus is accepted
    when its text hashes to ``saved_sha`` wherever it now lives, and then recorded (absolute) for
    later resumes; otherwise it is refused in one line.
    """
    if given is not None:
        options = dataclasses.replace(options, corpus=os.path.abspath(given))
    saved_path = options.corpus
    try:
        text, sha = load_corpus(options)
    except DataError:
        if given is None and saved_path is not None and not os.path.exists(saved_path):
            raise DataError(
                f"the corpus this run was trained on, {saved_path}, is missing; pass its new path as CORPUS "
                "(it is accepted if its text is the same)"
            ) from None
        raise
    if sha != saved_sha:
        if given is not None:
            raise DataError(
                f"the corpus {given} is not the text this run was trained on (its sha256 differs); pass the "
                "original corpus, or start a new run"
            )
        raise DataError(
            f"the corpus {saved_path or 'tiny-shakespeare'} changed since this run started; "
            "resume with the original text or start a new run"
        )
    return options, text, sha


def resume_split_files(options: TrainOptions, changes: dict, saved_shas: dict) -> tuple[TrainOptions, dict]:
    """(options naming the `valid` and `test` files to use, {name: (text, sha256)}) for a resumed run.

    Like CORPUS, a `valid` or `test` file given again may live at another path (recorded absolute
    for later resumes) when its text hashes to the saved sha256; a run that had none takes none.
    """
    given = {name: os.path.abspath(getattr(options, name)) for name in ("valid", "test")
             if name in changes and getattr(options, name)}
    options = dataclasses.replace(options, **given)
    files = {}
    for name in ("valid", "test"):
        path = getattr(options, name)
        if not path:
            continue
        if name not in saved_shas:
            raise DataError(f"this run was trained without a `{name}` file; leave `{name}` out to resume it, or "
                            "start a new run")
        if not os.path.exists(path):
            raise DataError(f"the `{name}` file this run was trained with, {path}, is missing; pass its new path "
                            f"as `{name}` (it is accepted if its text is the same)")
        files[name] = load_split_files(dataclasses.replace(options, **{"valid": None, "test": None, name: path}))[name]
        if files[name][1] != saved_shas[name]:
            what = "is not the text this run was trained with" if name in given else "changed since this run started"
            raise DataError(f"the `{name}` file {path} {what} (its sha256 differs); pass the original file, or "
                            "start a new run")
    return options, files


#: how an unset budget reads in a log line ("`epochs` no epoch limit → 2", never Python's None)
_NO_LIMIT = {"epochs": "no epoch limit", "steps": "no step limit", "minutes": "no time limit"}


def shown_value(name: str, value: Any) -> str:
    """A setting's value as a log line shows it: 2.0 as 2, None as "no epoch limit" (budgets) or
    "none", text as it is typed (a path, a schedule name) and anything else as Python writes it."""
    if value is None:
        return _NO_LIMIT.get(name, "none")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return repr(value)
