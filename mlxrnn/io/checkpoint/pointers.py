"""Run directories: ``checkpoints/step-N`` plus ``<tag>.json`` pointers, and pruning.

A pointer file holds ``{"checkpoint": "checkpoints/step-00000123"}`` and is replaced with
``os.replace`` of an fsynced temporary file, so readers see the old or the new target, never a
partial one. After a save, step directories no pointer refers to, and leftovers of crashed
saves, are deleted. One process at a time may write to a given run directory.
"""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint.durable import (
    ensure_dir,
    fsync_dir,
    publish,
    register_tmp,
    remove_stale_tmp,
    remove_tree,
    tmp_name,
    unregister_tmp,
    write_durable,
    write_error,
)
from mlxrnn.io.checkpoint.format import (
    CHECKPOINTS_SUBDIR,
    META_FILE,
    POINTER_MAX_BYTES,
    POINTER_TMP_RE,
    STEP_DIR_RE,
    TAG_RE,
    TENSOR_FILES,
    TMP_RE,
    file_entries,
    prepare_files,
    short_repr,
)
from mlxrnn.io.files import read_regular_file


def check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not TAG_RE.match(tag):
        raise CheckpointError(
            f"invalid checkpoint tag {short_repr(tag)}: use letters, digits, '_', '-' or '.' (e.g. 'last' or 'best')"
        )
    return tag


def _write_pointer(run: Path, tag: str, target: Path) -> None:
    rel = target.relative_to(run).as_posix()
    data = (json.dumps({"checkpoint": rel}) + "\n").encode("utf-8")
    tmp = run / tmp_name(f"{tag}.json")
    register_tmp(tmp)
    try:
        try:
            write_durable(tmp, data)
            os.replace(tmp, run / f"{tag}.json")
            fsync_dir(run)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise write_error(run / f"{tag}.json", exc) from exc
    finally:
        unregister_tmp(tmp)


def pointer_target(pointer: Path) -> str:
    """Return the validated relative target of a pointer file, or raise CheckpointError."""
    def refuse(reason: str) -> CheckpointError:  # a FIFO, a device, a huge file: refused unread
        return CheckpointError(f"{pointer} {reason}; it is not a valid checkpoint pointer - fix or delete it")

    try:
        raw = read_regular_file(pointer, refuse, max_bytes=POINTER_MAX_BYTES)
    except OSError as exc:
        raise CheckpointError(f"cannot read {pointer}: {exc.strerror or exc}; check permissions") from exc
    try:
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
            f"{pointer} points to {short_repr(target)}, outside its run directory; it must name a "
            "checkpoint under checkpoints/"
        )
    return "/".join(parts)


def _referenced_step_dirs(run: Path, tags: Iterable[str]) -> set[str] | None:
    """Names of checkpoints/ entries some pointer refers to; None when unsure (then keep all)."""
    referenced: set[str] = set()
    known = {"last", "best", *tags}
    for pointer in run.glob("*.json"):
        try:
            if not pointer.is_file() or pointer.stat().st_size > POINTER_MAX_BYTES:
                if pointer.stem in known:
                    return None  # a pointer we cannot read may name any step: keep them all
                continue
            rel = pointer_target(pointer)
        except (OSError, CheckpointError):
            if pointer.stem in known:
                return None
            continue  # some other JSON file in the run directory (config, metrics, ...)
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] == CHECKPOINTS_SUBDIR:
            referenced.add(parts[1])
    return referenced



def _prune(run: Path, tags: Iterable[str]) -> None:
    ckdir = run / CHECKPOINTS_SUBDIR
    try:
        referenced = _referenced_step_dirs(run, tags)
        if referenced is not None:
            for entry in ckdir.iterdir():
                if (
                    STEP_DIR_RE.match(entry.name)
                    and entry.name not in referenced
                    and entry.is_dir()
                    and not entry.is_symlink()
                ):
                    remove_tree(entry)
        remove_stale_tmp(ckdir, TMP_RE)  # checkpoints/ belongs to this module entirely
        remove_stale_tmp(run, POINTER_TMP_RE)  # the run dir is shared: only our pointers
    except OSError as exc:  # the checkpoint itself is safely saved; pruning is best effort
        warnings.warn(f"could not prune old checkpoints in {run}: {exc}", stacklevel=3)


def _same_tensors(directory: Path, entries: dict[str, dict[str, Any]]) -> bool:
    try:
        doc = json.loads(read_regular_file(directory / META_FILE, CheckpointError, max_bytes=256 << 20))
        files = doc["files"]
        return {n: files[n]["sha256"] for n in files} == {n: e["sha256"] for n, e in entries.items()}
    except (OSError, CheckpointError, ValueError, RecursionError, LookupError, TypeError, AttributeError):
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
        raise CheckpointError(f"step must be a non-negative integer, not {short_repr(step)}")
    step = int(step)
    tag_list = [tags] if isinstance(tags, str) else list(tags)
    if not tag_list:
        raise CheckpointError("tags is empty: name at least one pointer, e.g. tags=('last',)")
    tag_list = [check_tag(t) for t in tag_list]

    blobs, clean_meta = prepare_files(weights, meta, optimizer_tensors)
    entries = file_entries(blobs)
    ckdir = run / CHECKPOINTS_SUBDIR
    try:
        ensure_dir(ckdir)
    except OSError as exc:
        raise write_error(ckdir, exc) from exc

    base = f"step-{step:08d}"
    for k in itertools.count():
        target = ckdir / (base if k == 0 else f"{base}-{k}")
        if not os.path.lexists(target):
            publish(target, blobs, clean_meta)
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
        match = STEP_DIR_RE.match(entry.name)
        if match and (entry / META_FILE).is_file():
            found.append((int(match.group(1)), int(match.group(2) or 0), entry))
    return [path for _, _, path in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike[str], tag: str = "last") -> Path:
    """Return the checkpoint directory for a checkpoint dir or a run dir (via ``<tag>.json``).

    For a run directory without ``best.json``, tag "best" falls back to ``last.json``.
    """
    tag = check_tag(tag)
    p = Path(path)
    if p.is_file() and p.name in (META_FILE, *TENSOR_FILES):
        p = p.parent  # a file inside a checkpoint directory
    if (p / META_FILE).exists():  # not is_file(): a meta.json that is a FIFO is refused by the loader, unread
        return p
    if p.is_dir():
        pointer = p / f"{tag}.json"
        if not pointer.exists() and tag == "best":
            pointer = p / "last.json"
        if pointer.exists():
            rel = pointer_target(pointer)
            target = p / rel
            if not (target / META_FILE).exists():
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


