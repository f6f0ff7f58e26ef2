"""Reading and writing the small files of a run safely: one way in, one way out.

Writing (every file mlxrnn writes outside a checkpoint's tensors: options, pointers' JSON
peers, the metrics log, benchmark reports):

* :func:`write_file_atomically` writes a temporary sibling, fsyncs it and renames it over the
  target, so a full disk, a size limit or a crash leaves the old file (or none), never a 0-byte
  or half-written one;
* :func:`append_line` appends one line to a log;
* :func:`check_writable` fails *before* a long computation whose result goes to a file;
* every ``OSError`` becomes one :class:`~mlxrnn.errors.WriteError` line that names the file,
  the reason and what to do (:func:`os_error_advice`).

Reading (:func:`read_regular_file`): the file is opened without blocking and checked with
``fstat`` *before* any byte is read, so a symlink to ``/dev/zero`` or a FIFO nobody writes to is
refused in one line instead of reading forever or hanging, and a file larger than it should be
(a recorded size, or a cap) is refused without loading it.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from mlxrnn.errors import MLXRNNError, WriteError

_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is exhausted; free some space",
    errno.EFBIG: "the file would exceed the file-size limit (see `ulimit -f`); raise the limit",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "permission denied; check the permissions",
    errno.EPERM: "operation not permitted; check the permissions",
    errno.ENOENT: "the directory does not exist; create it first",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
}


def os_error_advice(error: OSError) -> str:
    """What went wrong and what to do about it, for an OSError of a write (one phrase)."""
    return _ADVICE.get(error.errno, error.strerror or str(error))


def write_error(path: str | os.PathLike[str], error: OSError, what: str = "") -> WriteError:
    """The one-line WriteError for a failed write of ``path`` (``what`` says what it is)."""
    label = f"{what} {path}" if what else str(path)
    return WriteError(f"cannot write {label}: {os_error_advice(error)}")


def temporary_name(name: str) -> str:
    """``.tmp-<name>-<pid>-<8 hex>``: the name of a file being written (a leftover of a dead
    writer is recognised by it, as the checkpoint writer's are)."""
    return f".tmp-{name}-{os.getpid()}-{secrets.token_hex(4)}"


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as error:  # e.g. a pipe or a file system without fsync: nothing to make durable
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise


def write_file_atomically(path: str | os.PathLike[str], data: bytes | str, what: str = "") -> None:
    """Replace ``path`` by ``data`` all at once (a temporary sibling, fsync, rename).

    Raises WriteError (one line) when it cannot be written; the previous file, if any, is then
    left exactly as it was and no temporary file remains.
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(temporary_name(path.name))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as error:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise write_error(path, error, what) from None


def append_line(path: str | os.PathLike[str], line: str, what: str = "") -> None:
    """Append ``line`` and a newline to ``path`` (created if missing) in one write."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError as error:
        raise write_error(path, error, what) from None


def check_writable(path: str | os.PathLike[str], what: str = "") -> None:
    """Fail now, in one line, if ``path`` could not be written later: its directory must exist
    and accept a new file, and the path must not be a directory. Nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {what + ' ' if what else ''}{path}: it is a directory; name a file")
    probe = path.with_name(temporary_name(path.name))
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        os.unlink(probe)
    except OSError as error:
        raise write_error(path, error, what) from None


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_regular_file(
    path: str | os.PathLike[str],
    error: Callable[[str], MLXRNNError],
    *,
    max_bytes: int | None = None,
    expected_bytes: int | None = None,
) -> bytes:
    """The bytes of ``path``, a regular file, checked before reading.

    The file is opened with O_NONBLOCK (opening a FIFO never waits for a writer) and ``fstat``
    must say it is a regular file of at most ``max_bytes`` and, when given, exactly
    ``expected_bytes`` bytes. ``error(reason)`` builds the exception for a refusal (the reason
    says what the file is, e.g. "is a pipe (FIFO), not a regular file"); a missing file raises
    FileNotFoundError and an unreadable one OSError, for the caller to word.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"is {_kind(info.st_mode)}, not a regular file")
        size = info.st_size
        if expected_bytes is not None and size != expected_bytes:
            raise error(f"has {size:,} bytes but {expected_bytes:,} were recorded when it was saved")
        if max_bytes is not None and size > max_bytes:
            raise error(f"has {size:,} bytes, more than the {max_bytes:,} such a file can have")
        chunks, remaining = [], size + 1  # one byte more: a file that grew meanwhile is noticed
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) != size:
            raise error(f"changed while it was read ({len(data):,} bytes, {size:,} expected)")
        return data
    finally:
        os.close(fd)


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two directory entries in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the system or the file system cannot do it;
    raises OSError when it could but failed.
    """
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc, or glibc older than 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # e.g. a file system that cannot exchange: the caller renames twice instead
    raise OSError(code, os.strerror(code), str(second))
