"""Durable writes: nothing a crash interrupts is ever mistaken for a checkpoint.

A checkpoint is written into a temporary sibling ``.tmp-<name>-<pid>-<rand>``, every file and
the directory are fsynced, and only then is it renamed into place (:func:`publish`); removals
rename first and delete after (:func:`remove_tree`). Temporary entries of dead processes are
swept by :func:`remove_stale_tmp`; this process's own are registered so a concurrent sweep in
another thread leaves them alone.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint.format import META_FILE, file_entries, meta_document, prepare_files
from mlxrnn.io.files import exchange_paths, os_error_advice

# Temporary paths this process is writing right now; every other `.tmp-*-<our pid>-*` entry is
# a leftover (e.g. from an earlier process that had the same pid, as happens in containers).
_active_tmp: set[str] = set()
_active_lock = threading.Lock()


def _fsync_fd(fd: int) -> None:
    if sys.platform == "darwin":  # plain fsync does not reach the platter on macOS
        try:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except (ImportError, AttributeError, OSError):
            pass
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
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


def write_durable(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        _fsync_fd(fh.fileno())


def ensure_dir(path: Path) -> None:
    if path.is_dir():
        return
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def tmp_name(name: str) -> str:
    return f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"


def register_tmp(path: Path) -> None:
    with _active_lock:
        _active_tmp.add(str(path))


def unregister_tmp(path: Path) -> None:
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


def write_error(target: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(f"could not write checkpoint {target}: {os_error_advice(exc)}")



def publish(directory: Path, blobs: dict[str, bytes], meta: dict[str, Any]) -> Path:
    """Write ``blobs`` + meta.json into a temp sibling of ``directory``, fsync, rename."""
    if os.path.lexists(directory):
        raise CheckpointError(
            f"checkpoint directory {directory} already exists and checkpoints are immutable; save to a new directory"
        )
    meta_bytes = meta_document(file_entries(blobs), meta)
    parent = directory.parent
    tmp = parent / tmp_name(directory.name)
    register_tmp(tmp)
    try:
        try:
            ensure_dir(parent)
            os.mkdir(tmp)
            for name, data in blobs.items():
                write_durable(tmp / name, data)
            write_durable(tmp / META_FILE, meta_bytes)
            fsync_dir(tmp)
            if os.path.lexists(directory):
                raise CheckpointError(
                    f"checkpoint directory {directory} already exists and checkpoints are "
                    "immutable; save to a new directory"
                )
            os.rename(tmp, directory)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(directory, exc) from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            fsync_dir(parent)
        except OSError as exc:
            raise write_error(directory, exc) from exc
    finally:
        unregister_tmp(tmp)
    return directory



def save_checkpoint(
    directory: str | os.PathLike[str],
    weights: Mapping[str, np.ndarray],
    meta: dict,
    optimizer_tensors: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Atomically write a new checkpoint directory; it must not exist yet. Returns its path.

    ``meta`` must be JSON-serialisable with string keys and finite floats (tuples come back as
    lists). ``optimizer.safetensors`` is written only when ``optimizer_tensors`` is not None.
    ``overwrite=True`` replaces a checkpoint directory already there (and nothing else, see
    :func:`replace_checkpoint`).
    """
    directory = Path(directory)
    blobs, clean_meta = prepare_files(weights, meta, optimizer_tensors)
    if overwrite and os.path.lexists(directory):
        return replace_checkpoint(directory, blobs, clean_meta)
    try:
        return publish(directory, blobs, clean_meta)
    except CheckpointError as error:
        if "already exists" in str(error):  # say how to replace it, as the run directory's --force does
            raise CheckpointError(f"{directory} already exists; pass overwrite=True to replace the model saved "
                                  "there, or save to a new directory") from None
        raise


def replace_checkpoint(directory: Path, blobs: dict[str, bytes], meta: dict[str, Any]) -> Path:
    """Replace the checkpoint directory ``directory`` by a new one, so that a reader (or a crash)
    sees the old model or the new one, never a mixture: the new one is written complete beside
    it, then the two are exchanged in one atomic ``renameat2`` (two renames where the system
    cannot), and only then is the old one deleted. A directory that is not a saved model (no
    meta.json) is refused untouched: ``overwrite`` must never delete someone's files."""
    if os.path.islink(directory) or not os.path.isfile(directory / META_FILE):
        raise CheckpointError(
            f"{directory} is not a saved model (it has no {META_FILE}), so overwrite=True leaves it alone; "
            "save to a new directory"
        )
    fresh = publish(directory.parent / tmp_name(f"new-{directory.name}"), blobs, meta)
    try:
        if exchange_paths(fresh, directory):
            old = fresh  # the exchange left the old model under the temporary name
        else:
            old = directory.parent / tmp_name(f"old-{directory.name}")
            os.rename(directory, old)
            try:
                os.rename(fresh, directory)
            except OSError:
                os.rename(old, directory)  # put the old model back: the save failed, nothing changed
                raise
        fsync_dir(directory.parent)
    except OSError as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        raise write_error(directory, exc) from exc
    remove_tree(old)
    return directory


def remove_tree(path: Path) -> None:
    """Remove a directory so that a crash half-way never leaves a plausible checkpoint."""
    graveyard = path.parent / tmp_name(f"del-{path.name}")
    register_tmp(graveyard)
    try:
        os.rename(path, graveyard)
        shutil.rmtree(graveyard, ignore_errors=True)
    finally:
        unregister_tmp(graveyard)


def remove_stale_tmp(directory: Path, pattern: re.Pattern[str]) -> None:
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


