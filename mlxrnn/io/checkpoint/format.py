"""What a checkpoint holds and how it is serialised (the format; see :mod:`mlxrnn.io.checkpoint`).

Tensors become safetensors bytes (float32/float64 weights, finite; optimizer tensors may also
be int32/int64); everything else goes into ``meta.json`` as JSON, checked to be portable
(string keys, finite floats, no objects) before anything is written. The names of the files
and of the entries of a run directory are defined here, once, for every module that reads them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError

FORMAT_VERSION = 1
LIBRARY = "mlxrnn"


def safetensors_numpy():
    """The safetensors NumPy API, imported on first use so ``import mlxrnn`` loads NumPy only."""
    import safetensors.numpy

    return safetensors.numpy


MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "meta.json"
CHECKPOINTS_SUBDIR = "checkpoints"

TENSOR_FILES = (MODEL_FILE, OPTIMIZER_FILE)
WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
OPTIMIZER_DTYPES = WEIGHT_DTYPES + (np.dtype(np.int32), np.dtype(np.int64))
POINTER_MAX_BYTES = 64 * 1024

#: names inside a run directory: published step directories, temporary checkpoint/removal
#: directories of a (possibly dead) writer whose pid is group 1, temporary pointer files
STEP_DIR_RE = re.compile(r"^step-(\d{8,})(?:-(\d+))?$")
TMP_RE = re.compile(r"^\.tmp-.+-(\d+)-[0-9a-f]{8}$")
POINTER_TMP_RE = re.compile(r"^\.tmp-[^/]+\.json-(\d+)-[0-9a-f]{8}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")

@dataclass
class Checkpoint:
    """A loaded, validated checkpoint."""

    path: Path
    weights: dict[str, np.ndarray]
    optimizer_tensors: dict[str, np.ndarray]
    meta: dict[str, Any]
    format_version: int
    created: str = field(default="")


# --- small helpers ---------------------------------------------------------------------------
def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


# --- serialisation ---------------------------------------------------------------------------
def serialise(tensors: Mapping[str, np.ndarray], kind: str, allowed: tuple[np.dtype, ...], finite: bool) -> bytes:
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{kind}s must be a mapping of name -> NumPy array, not {type(tensors).__name__}")
    prepared: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CheckpointError(
                f"invalid {kind} name {short_repr(name)}: names must be non-empty strings other than '__metadata__'"
            )
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{kind} {name!r} is a {type(value).__name__}, not a NumPy array; "
                "convert it with np.asarray(...) before saving"
            )
        if value.dtype.newbyteorder("=") not in allowed:
            kinds = "/".join(d.name for d in allowed)
            raise CheckpointError(
                f"{kind} {name!r} has dtype {value.dtype}; checkpoints store {kind}s as {kinds} "
                "- convert it with .astype(np.float32) before saving"
            )
        if finite and not np.isfinite(value).all():
            raise CheckpointError(
                f"refusing to save: {kind} {name!r} contains NaN or Inf (training diverged); "
                "lower the learning rate or resume from an earlier checkpoint"
            )
        # Little-endian and C-contiguous (np.ascontiguousarray would turn 0-d into 1-d).
        prepared[name] = value.astype(value.dtype.newbyteorder("<"), order="C", copy=False)
    try:
        return safetensors_numpy().save(prepared)
    except Exception as exc:  # pragma: no cover - defensive: safetensors rejected the input
        raise CheckpointError(f"could not serialise {kind}s: {exc}") from exc


def _check_json_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"{where} is {value!r}, which JSON cannot store portably; use None instead")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(
                    f"{where} has key {short_repr(key)} of type {type(key).__name__}; JSON object "
                    "keys must be strings (store e.g. a vocabulary as a list)"
                )
            _check_json_value(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    hint = " (convert NumPy values with .item() or .tolist())" if "numpy" in type(value).__module__ else ""
    raise CheckpointError(
        f"{where} is a {type(value).__name__}, which is not JSON-serialisable; "
        f"store only dict/list/str/int/float/bool/None{hint}"
    )


def _validate_meta(meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CheckpointError(f"meta must be a dict, not {type(meta).__name__}")
    try:
        _check_json_value(meta, "meta")
    except RecursionError:
        raise CheckpointError("meta is nested too deeply to store as JSON; flatten it") from None
    return dict(meta)


def file_entries(blobs: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in blobs.items()}


def meta_document(entries: dict[str, dict[str, Any]], meta: dict[str, Any]) -> bytes:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    document = {
        "library": LIBRARY,
        "format_version": FORMAT_VERSION,
        "created": created.replace("+00:00", "Z"),
        "files": entries,
        "meta": meta,
    }
    text = json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from text decoded with surrogateescape
        raise CheckpointError(
            f"meta holds a string with an unpaired surrogate ({exc.object[exc.start]!r}), which UTF-8 cannot "
            "store; clean the text (e.g. decode it with errors='replace') before saving"
        ) from None


def prepare_files(
    weights: Mapping[str, np.ndarray],
    meta: dict,
    optimizer_tensors: Mapping[str, np.ndarray] | None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    clean_meta = _validate_meta(meta)
    blobs = {MODEL_FILE: serialise(weights, "weight", WEIGHT_DTYPES, finite=True)}
    if optimizer_tensors is not None:
        blobs[OPTIMIZER_FILE] = serialise(optimizer_tensors, "optimizer tensor", OPTIMIZER_DTYPES, finite=False)
    return blobs, clean_meta


