"""Loading a checkpoint: every file checked before any value is trusted.

Only ``json.loads`` and ``safetensors.numpy.load`` parse the files (no pickle); each file is
checked against the sha256 recorded at save time, dtypes against the format, weights for
NaN/Inf; every problem is one line of :class:`~mlxrnn.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint.format import (
    FORMAT_VERSION,
    LIBRARY,
    META_FILE,
    MODEL_FILE,
    OPTIMIZER_DTYPES,
    OPTIMIZER_FILE,
    SHA_RE,
    TENSOR_FILES,
    WEIGHT_DTYPES,
    Checkpoint,
    name_list,
    safetensors_numpy,
    short_repr,
)
from mlxrnn.io.checkpoint.pointers import resolve_checkpoint
from mlxrnn.io.files import read_regular_file

#: meta.json larger than this is refused unread (a word vocabulary of a million tokens is ~20 MB)
META_MAX_BYTES = 256 << 20


def _read_file(ckpt: Path, name: str, expected_bytes: int | None = None) -> bytes:
    """A checkpoint file's bytes: a regular file (a FIFO or a link to /dev/zero is refused, not
    read) of the size meta.json records for it (or, for meta.json, at most META_MAX_BYTES)."""

    def refuse(reason: str) -> CheckpointError:
        if reason.startswith("has "):  # a size other than the recorded one: the integrity check fails
            return CheckpointError(
                f"{name} in checkpoint {ckpt} is corrupted or modified since it was saved (it {reason}: size or "
                "sha256 mismatch); restore it from a backup or load another checkpoint"
            )
        return _corrupt(ckpt, f"{name} {reason}")

    try:
        return read_regular_file(ckpt / name, refuse, expected_bytes=expected_bytes,
                                 max_bytes=META_MAX_BYTES if expected_bytes is None else None)
    except FileNotFoundError:
        raise CheckpointError(
            f"checkpoint {ckpt} is incomplete: {name} is missing; restore it or load another checkpoint"
        ) from None
    except OSError as exc:
        raise CheckpointError(
            f"cannot read {name} in checkpoint {ckpt}: {exc.strerror or exc}; check permissions"
        ) from exc


def _corrupt(ckpt: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {ckpt} is corrupted: {what}; restore it from a backup or load another checkpoint"
    )


def _read_meta(ckpt: Path) -> dict[str, Any]:
    raw = _read_file(ckpt, META_FILE)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError/JSONDecodeError are ValueErrors
        raise _corrupt(ckpt, "meta.json is not valid JSON") from None
    if not isinstance(doc, dict):
        raise _corrupt(ckpt, f"meta.json holds a {type(doc).__name__}, not a JSON object")
    library = doc.get("library")
    if library != LIBRARY:
        who = short_repr(library) if "library" in doc else "an unknown program"
        raise CheckpointError(
            f"{ckpt} was written by another library ({who}), not mlxrnn; load it with the program that wrote it"
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _corrupt(ckpt, f"meta.json has an invalid format_version {short_repr(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {ckpt} was written by a newer mlxrnn (format {version}); upgrade "
            f"mlxrnn (this version reads format {FORMAT_VERSION})"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise _corrupt(ckpt, "meta.json does not list model.safetensors under 'files'")
    for name, entry in files.items():
        if name not in TENSOR_FILES:
            raise _corrupt(ckpt, f"meta.json lists an unexpected file {short_repr(name)}")
        size = entry.get("bytes") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            not isinstance(sha, str)
            or not SHA_RE.match(sha)
            or isinstance(size, bool)
            or not isinstance(size, int)
            or size < 0
        ):
            raise _corrupt(ckpt, f"meta.json has an invalid entry for {name}")
    if not isinstance(doc.get("meta"), dict):
        raise _corrupt(ckpt, "meta.json has no 'meta' object")
    return doc


def _parse_tensors(ckpt: Path, name: str, data: bytes) -> dict[str, np.ndarray]:
    try:
        tensors = safetensors_numpy().load(data)
        if not isinstance(tensors, dict):
            raise TypeError(f"parser returned {type(tensors).__name__}")
    except KeyError as exc:  # safetensors.numpy has no NumPy type for e.g. BF16 / F8
        raise _corrupt(ckpt, f"{name} holds a tensor of unsupported dtype {exc}") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    # SafetensorError, ValueError, ... and pyo3's PanicException, which is a BaseException.
    except BaseException as exc:  # noqa: BLE001
        detail = short_repr(" ".join(str(exc).split()), 120)
        raise _corrupt(ckpt, f"{name} is not a valid safetensors file ({detail})") from None
    result: dict[str, np.ndarray] = {}
    for key, arr in sorted(tensors.items()):
        if not isinstance(arr, np.ndarray):
            raise _corrupt(ckpt, f"{name} entry {short_repr(key)} is not an array")
        result[key] = arr if arr.flags.writeable else arr.copy()
    return result


def load_checkpoint(path: str | os.PathLike[str], tag: str = "last") -> Checkpoint:
    """Load and validate a checkpoint (a checkpoint directory or a run directory + tag).

    Raises CheckpointError (one line) when anything is missing, corrupted, tampered with
    (sha256 mismatch), of an unsupported dtype, non-finite, or from another library/version.
    Shapes are the caller's business: see :func:`check_weights`.
    """
    ckpt = resolve_checkpoint(path, tag)
    doc = _read_meta(ckpt)
    loaded: dict[str, dict[str, np.ndarray]] = {}
    for name in TENSOR_FILES:
        entry = doc["files"].get(name)
        if entry is None:
            loaded[name] = {}
            continue
        data = _read_file(ckpt, name, expected_bytes=entry["bytes"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"{name} in checkpoint {ckpt} is corrupted or modified since it was saved "
                "(sha256 mismatch); restore it from a backup or load another checkpoint"
            )
        loaded[name] = _parse_tensors(ckpt, name, data)

    for name, allowed in ((MODEL_FILE, WEIGHT_DTYPES), (OPTIMIZER_FILE, OPTIMIZER_DTYPES)):
        for key, arr in loaded[name].items():
            if arr.dtype not in allowed:
                kinds = "/".join(d.name for d in allowed)
                raise _corrupt(ckpt, f"tensor {key!r} in {name} has dtype {arr.dtype}, expected {kinds}")
    for key, arr in loaded[MODEL_FILE].items():
        if not np.isfinite(arr).all():
            raise CheckpointError(
                f"weight {key!r} in checkpoint {ckpt} contains NaN or Inf (the model had "
                "diverged); load an earlier checkpoint"
            )
    created = doc.get("created")
    return Checkpoint(
        path=ckpt,
        weights=loaded[MODEL_FILE],
        optimizer_tensors=loaded[OPTIMIZER_FILE],
        meta=doc["meta"],
        format_version=doc["format_version"],
        created=created if isinstance(created, str) else "",
    )


def check_weights(weights: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError unless ``weights`` has exactly the ``expected`` names and shapes."""
    missing = [name for name in expected if name not in weights]
    unexpected = sorted(name for name in weights if name not in expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {name_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {name_list(unexpected)}")
        raise CheckpointError(
            "checkpoint weights do not match the model: "
            + "; ".join(parts)
            + " - load it with the configuration it was saved with"
        )
    for name, shape in expected.items():
        value = weights[name]
        got = tuple(int(d) for d in getattr(value, "shape", np.shape(value)))
        want = tuple(int(d) for d in shape)
        if got != want:
            raise CheckpointError(
                f"weight {name!r} has shape {got}; the model expects {want} "
                "(was the checkpoint saved with a different configuration or vocabulary?)"
            )
