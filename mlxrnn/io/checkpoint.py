"""Safe, portable, crash-safe checkpoints: safetensors for arrays, JSON for everything else.

A checkpoint is an immutable directory::

    model.safetensors       weights: flat name -> float32/float64 array
    optimizer.safetensors   optimizer tensors (float32/float64/int32/int64); only written when
                            the caller passes ``optimizer_tensors``
    meta.json               {"library": "mlxrnn", "format_version": 1, "created": ISO-8601 UTC,
                             "files": {file name: {"sha256": hex, "bytes": size}},
                             "meta": caller's JSON object (config, vocabulary, step, RNG, ...)}

A *run directory* keeps checkpoints as ``checkpoints/step-00000123/`` plus pointer files
``last.json`` / ``best.json`` (any ``<tag>.json``) holding ``{"checkpoint": "checkpoints/..."}``.

Crash safety (SIGKILL or power loss at any instant never damages the latest good checkpoint):
a checkpoint is written into a temporary sibling ``.tmp-<name>-<pid>-<rand>``, every file and
the directory are fsynced, and only then is it renamed into place; pointers are replaced with
``os.replace`` of an fsynced temporary file. Readers therefore see either the old or the new
checkpoint, never a partial one. Leftover ``.tmp-*`` entries of dead processes are removed by
the next :func:`save_run_checkpoint`. One process at a time may write to a given run directory.

Loading never executes code: only ``json.loads`` and ``safetensors.numpy.load`` parse the
files (no pickle), every file is checked against the sha256 recorded at save time, and every
problem is reported as a one-line :class:`~mlxrnn.errors.CheckpointError`.

This module deals in NumPy arrays only; callers convert from/to their backend.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import sys
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "LIBRARY",
    "Checkpoint",
    "check_weights",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_run_checkpoint",
]

FORMAT_VERSION = 1
LIBRARY = "mlxrnn"

def _safetensors():
    """The safetensors NumPy API, imported on first use so ``import mlxrnn`` loads NumPy only."""
    import safetensors.numpy

    return safetensors.numpy


MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
META_FILE = "meta.json"
CHECKPOINTS_SUBDIR = "checkpoints"

_TENSOR_FILES = (MODEL_FILE, OPTIMIZER_FILE)
_WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_OPTIMIZER_DTYPES = _WEIGHT_DTYPES + (np.dtype(np.int32), np.dtype(np.int64))
_POINTER_MAX_BYTES = 64 * 1024

_STEP_DIR_RE = re.compile(r"^step-(\d{8,})(?:-(\d+))?$")
_TMP_RE = re.compile(r"^\.tmp-.+-(\d+)-[0-9a-f]{8}$")
_POINTER_TMP_RE = re.compile(r"^\.tmp-[^/]+\.json-(\d+)-[0-9a-f]{8}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")

# Temporary paths this process is writing right now; every other `.tmp-*-<our pid>-*` entry is
# a leftover (e.g. from an earlier process that had the same pid, as happens in containers).
_active_tmp: set[str] = set()
_active_lock = threading.Lock()


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint."""

    path: Path
    weights: dict[str, np.ndarray]
    optimizer_tensors: dict[str, np.ndarray]
    meta: dict[str, Any]
    format_version: int
    created: str = field(default="")


# --------------------------------------------------------------------------------------------
# small helpers


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


def _fsync_fd(fd: int) -> None:
    if sys.platform == "darwin":  # plain fsync does not reach the platter on macOS
        try:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except (ImportError, AttributeError, OSError):
            pass
    os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened/fsynced on Windows
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems do not support fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        _fsync_fd(fh.fileno())


def _ensure_dir(path: Path) -> None:
    if path.is_dir():
        return
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync_dir(created.parent)


def _tmp_name(name: str) -> str:
    return f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"


def _register(path: Path) -> None:
    with _active_lock:
        _active_tmp.add(str(path))


def _unregister(path: Path) -> None:
    with _active_lock:
        _active_tmp.discard(str(path))


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: exists but belongs to someone else
        return True
    return True


def _write_error(target: Path, exc: OSError) -> CheckpointError:
    reason = exc.strerror or str(exc)
    return CheckpointError(f"could not write checkpoint {target}: {reason}; check free disk space and permissions")


# --------------------------------------------------------------------------------------------
# serialisation


def _serialise(tensors: Mapping[str, np.ndarray], kind: str, allowed: tuple[np.dtype, ...], finite: bool) -> bytes:
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"{kind}s must be a mapping of name -> NumPy array, not {type(tensors).__name__}")
    prepared: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise CheckpointError(
                f"invalid {kind} name {_short(name)}: names must be non-empty strings other than '__metadata__'"
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
        return _safetensors().save(prepared)
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
                    f"{where} has key {_short(key)} of type {type(key).__name__}; JSON object "
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


def _file_entries(blobs: Mapping[str, bytes]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in blobs.items()}


def _meta_document(entries: dict[str, dict[str, Any]], meta: dict[str, Any]) -> bytes:
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


def _publish(directory: Path, blobs: dict[str, bytes], meta: dict[str, Any]) -> Path:
    """Write ``blobs`` + meta.json into a temp sibling of ``directory``, fsync, rename."""
    if os.path.lexists(directory):
        raise CheckpointError(
            f"checkpoint directory {directory} already exists and checkpoints are immutable; save to a new directory"
        )
    meta_bytes = _meta_document(_file_entries(blobs), meta)
    parent = directory.parent
    tmp = parent / _tmp_name(directory.name)
    _register(tmp)
    try:
        try:
            _ensure_dir(parent)
            os.mkdir(tmp)
            for name, data in blobs.items():
                _write_durable(tmp / name, data)
            _write_durable(tmp / META_FILE, meta_bytes)
            _fsync_dir(tmp)
            if os.path.lexists(directory):
                raise CheckpointError(
                    f"checkpoint directory {directory} already exists and checkpoints are "
                    "immutable; save to a new directory"
                )
            os.rename(tmp, directory)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(directory, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            _fsync_dir(parent)
        except OSError as exc:
            raise _write_error(directory, exc) from exc
    finally:
        _unregister(tmp)
    return directory


def _prepare(
    weights: Mapping[str, np.ndarray],
    meta: dict,
    optimizer_tensors: Mapping[str, np.ndarray] | None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    clean_meta = _validate_meta(meta)
    blobs = {MODEL_FILE: _serialise(weights, "weight", _WEIGHT_DTYPES, finite=True)}
    if optimizer_tensors is not None:
        blobs[OPTIMIZER_FILE] = _serialise(optimizer_tensors, "optimizer tensor", _OPTIMIZER_DTYPES, finite=False)
    return blobs, clean_meta


def save_checkpoint(
    directory: str | os.PathLike[str],
    weights: Mapping[str, np.ndarray],
    meta: dict,
    optimizer_tensors: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Atomically write a new checkpoint directory; it must not exist yet. Returns its path.

    ``meta`` must be JSON-serialisable with string keys and finite floats (tuples come back as
    lists). ``optimizer.safetensors`` is written only when ``optimizer_tensors`` is not None.
    """
    directory = Path(directory)
    blobs, clean_meta = _prepare(weights, meta, optimizer_tensors)
    return _publish(directory, blobs, clean_meta)


# --------------------------------------------------------------------------------------------
# run directories


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise CheckpointError(
            f"invalid checkpoint tag {_short(tag)}: use letters, digits, '_', '-' or '.' (e.g. 'last' or 'best')"
        )
    return tag


def _write_pointer(run: Path, tag: str, target: Path) -> None:
    rel = target.relative_to(run).as_posix()
    data = (json.dumps({"checkpoint": rel}) + "\n").encode("utf-8")
    tmp = run / _tmp_name(f"{tag}.json")
    _register(tmp)
    try:
        try:
            _write_durable(tmp, data)
            os.replace(tmp, run / f"{tag}.json")
            _fsync_dir(run)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _write_error(run / f"{tag}.json", exc) from exc
    finally:
        _unregister(tmp)


def _pointer_target(pointer: Path) -> str:
    """Return the validated relative target of a pointer file, or raise CheckpointError."""
    try:
        with open(pointer, "rb") as fh:
            raw = fh.read(_POINTER_MAX_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {pointer}: {exc.strerror or exc}; check permissions") from exc
    try:
        if len(raw) > _POINTER_MAX_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        doc = None
    target = doc.get("checkpoint") if isinstance(doc, dict) else None
    if not isinstance(target, str):
        raise CheckpointError(
            f"{pointer} is not a valid checkpoint pointer (expected "
            '{"checkpoint": "checkpoints/step-..."}); fix or delete it'
        )
    pure = PurePosixPath(target)
    parts = [p for p in pure.parts if p != "."]
    if not parts or pure.is_absolute() or ".." in parts or "\\" in target or ":" in target:
        raise CheckpointError(
            f"{pointer} points to {_short(target)}, outside its run directory; it must name a "
            "checkpoint under checkpoints/"
        )
    return "/".join(parts)


def _referenced_step_dirs(run: Path, tags: Iterable[str]) -> set[str] | None:
    """Names of checkpoints/ entries some pointer refers to; None when unsure (then keep all)."""
    referenced: set[str] = set()
    known = {"last", "best", *tags}
    for pointer in run.glob("*.json"):
        try:
            if pointer.stat().st_size > _POINTER_MAX_BYTES:
                continue
            rel = _pointer_target(pointer)
        except (OSError, CheckpointError):
            if pointer.stem in known:
                return None
            continue  # some other JSON file in the run directory (config, metrics, ...)
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] == CHECKPOINTS_SUBDIR:
            referenced.add(parts[1])
    return referenced


def _remove_tree(path: Path) -> None:
    """Remove a directory so that a crash half-way never leaves a plausible checkpoint."""
    graveyard = path.parent / _tmp_name(f"del-{path.name}")
    _register(graveyard)
    try:
        os.rename(path, graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
    finally:
        _unregister(graveyard)


def _remove_stale_tmp(directory: Path, pattern: re.Pattern[str]) -> None:
    own = os.getpid()
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = int(match.group(1))
        with _active_lock:
            active = str(entry) in _active_tmp
        if active or (pid != own and _pid_alive(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                pass


def _prune(run: Path, tags: Iterable[str]) -> None:
    ckdir = run / CHECKPOINTS_SUBDIR
    try:
        referenced = _referenced_step_dirs(run, tags)
        if referenced is not None:
            for entry in ckdir.iterdir():
                if (
                    _STEP_DIR_RE.match(entry.name)
                    and entry.name not in referenced
                    and entry.is_dir()
                    and not entry.is_symlink()
                ):
                    _remove_tree(entry)
        _remove_stale_tmp(ckdir, _TMP_RE)  # checkpoints/ belongs to this module entirely
        _remove_stale_tmp(run, _POINTER_TMP_RE)  # the run dir is shared: only our pointers
    except OSError as exc:  # the checkpoint itself is safely saved; pruning is best effort
        warnings.warn(f"could not prune old checkpoints in {run}: {exc}", stacklevel=3)


def _same_tensors(directory: Path, entries: dict[str, dict[str, Any]]) -> bool:
    try:
        with open(directory / META_FILE, "rb") as fh:
            doc = json.loads(fh.read().decode("utf-8"))
        files = doc["files"]
        return {n: files[n]["sha256"] for n in files} == {n: e["sha256"] for n, e in entries.items()}
    except (OSError, ValueError, RecursionError, LookupError, TypeError, AttributeError):
        return False  # unreadable or foreign: certainly not the same checkpoint


def save_run_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    weights: Mapping[str, np.ndarray],
    meta: dict,
    optimizer_tensors: Mapping[str, np.ndarray] | None = None,
    tags: Iterable[str] = ("last",),
) -> Path:
    """Save ``run_dir/checkpoints/step-<step>``, point each tag's ``<tag>.json`` at it, prune.

    If that step directory already exists with identical tensors (e.g. the same step saved
    again with ``tags=("best",)``) it is reused as is, including its meta. If it exists with
    different tensors (training resumed from an earlier checkpoint) the new checkpoint goes to
    ``step-<step>-1`` (``-2``, ...) because published checkpoints are never rewritten. Step
    directories no pointer refers to and leftovers of crashed saves are deleted afterwards.
    """
    run = Path(run_dir)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, not {_short(step)}")
    step = int(step)
    tag_list = [tags] if isinstance(tags, str) else list(tags)
    if not tag_list:
        raise CheckpointError("tags is empty: name at least one pointer, e.g. tags=('last',)")
    tag_list = [_check_tag(t) for t in tag_list]

    blobs, clean_meta = _prepare(weights, meta, optimizer_tensors)
    entries = _file_entries(blobs)
    ckdir = run / CHECKPOINTS_SUBDIR
    try:
        _ensure_dir(ckdir)
    except OSError as exc:
        raise _write_error(ckdir, exc) from exc

    base = f"step-{step:08d}"
    for k in itertools.count():
        target = ckdir / (base if k == 0 else f"{base}-{k}")
        if not os.path.lexists(target):
            _publish(target, blobs, clean_meta)
            break
        if target.is_dir() and _same_tensors(target, entries):
            break
    for tag in tag_list:
        _write_pointer(run, tag, target)
    _prune(run, tag_list)
    return target


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Published step directories of a run, oldest step first (pruned runs keep few)."""
    ckdir = Path(run_dir) / CHECKPOINTS_SUBDIR
    if not ckdir.is_dir():
        return []
    found = []
    for entry in ckdir.iterdir():
        match = _STEP_DIR_RE.match(entry.name)
        if match and (entry / META_FILE).is_file():
            found.append((int(match.group(1)), int(match.group(2) or 0), entry))
    return [path for _, _, path in sorted(found)]


# --------------------------------------------------------------------------------------------
# loading


def resolve_checkpoint(path: str | os.PathLike[str], tag: str = "last") -> Path:
    """Return the checkpoint directory for a checkpoint dir or a run dir (via ``<tag>.json``).

    For a run directory without ``best.json``, tag "best" falls back to ``last.json``.
    """
    tag = _check_tag(tag)
    p = Path(path)
    if p.is_file() and p.name in (META_FILE, *_TENSOR_FILES):
        p = p.parent  # a file inside a checkpoint directory
    if (p / META_FILE).is_file():
        return p
    if p.is_dir():
        pointer = p / f"{tag}.json"
        if not pointer.exists() and tag == "best":
            pointer = p / "last.json"
        if pointer.exists():
            rel = _pointer_target(pointer)
            target = p / rel
            if not (target / META_FILE).is_file():
                raise CheckpointError(
                    f"{pointer} points to {rel}, which is missing or not a checkpoint; the run "
                    "directory was modified by hand - restore it or load a checkpoint directly"
                )
            return target
        if tag not in ("last", "best") and (p / "last.json").exists():
            raise CheckpointError(
                f"run directory {p} has no {tag!r} checkpoint ({tag}.json is missing); use tag 'last' or 'best'"
            )
    raise CheckpointError(
        f"no checkpoint at {p}: expected a run directory with last.json or a checkpoint directory with meta.json"
    )


def _read_file(ckpt: Path, name: str) -> bytes:
    try:
        with open(ckpt / name, "rb") as fh:
            return fh.read()
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
        who = _short(library) if "library" in doc else "an unknown program"
        raise CheckpointError(
            f"{ckpt} was written by another library ({who}), not mlxrnn; load it with the program that wrote it"
        )
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _corrupt(ckpt, f"meta.json has an invalid format_version {_short(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {ckpt} was written by a newer mlxrnn (format {version}); upgrade "
            f"mlxrnn (this version reads format {FORMAT_VERSION})"
        )
    files = doc.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise _corrupt(ckpt, "meta.json does not list model.safetensors under 'files'")
    for name, entry in files.items():
        if name not in _TENSOR_FILES:
            raise _corrupt(ckpt, f"meta.json lists an unexpected file {_short(name)}")
        size = entry.get("bytes") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            not isinstance(sha, str)
            or not _SHA_RE.match(sha)
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
        tensors = _safetensors().load(data)
        if not isinstance(tensors, dict):
            raise TypeError(f"parser returned {type(tensors).__name__}")
    except KeyError as exc:  # safetensors.numpy has no NumPy type for e.g. BF16 / F8
        raise _corrupt(ckpt, f"{name} holds a tensor of unsupported dtype {exc}") from None
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError):
        raise
    # SafetensorError, ValueError, ... and pyo3's PanicException, which is a BaseException.
    except BaseException as exc:  # noqa: BLE001
        detail = _short(" ".join(str(exc).split()), 120)
        raise _corrupt(ckpt, f"{name} is not a valid safetensors file ({detail})") from None
    result: dict[str, np.ndarray] = {}
    for key, arr in sorted(tensors.items()):
        if not isinstance(arr, np.ndarray):
            raise _corrupt(ckpt, f"{name} entry {_short(key)} is not an array")
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
    for name in _TENSOR_FILES:
        entry = doc["files"].get(name)
        if entry is None:
            loaded[name] = {}
            continue
        data = _read_file(ckpt, name)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"{name} in checkpoint {ckpt} is corrupted or modified since it was saved "
                "(sha256 mismatch); restore it from a backup or load another checkpoint"
            )
        loaded[name] = _parse_tensors(ckpt, name, data)

    for name, allowed in ((MODEL_FILE, _WEIGHT_DTYPES), (OPTIMIZER_FILE, _OPTIMIZER_DTYPES)):
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
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
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
