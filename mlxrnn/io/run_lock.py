"""One training process per run directory: an exclusive ``flock`` on the directory itself.

Two ``mlxrnn train --resume --out RUN`` at once would overwrite and prune each other's
checkpoints and interleave one metrics log. The process that trains a run holds an exclusive
advisory lock on the run directory's own file descriptor (no lock file is added to the run);
the operating system drops it when the process exits for any reason, even ``kill -9``, so a
crash never leaves a stale lock. A second process is refused at once, in one line.

Where ``fcntl.flock`` does not exist (Windows) there is no lock; one process at a time remains
the user's responsibility there, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlxrnn.errors import DataError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def busy_error(path: Path) -> DataError:
    return DataError(
        f"run directory {path} is in use by another mlxrnn process (it is training there now); wait for it "
        "to finish or stop it, or choose another `run_dir`"
    )


class RunLock:
    """An exclusive lock on a directory, held until :meth:`release` or the end of the process."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.fd: int | None = None
        if fcntl is None:
            return
        for _ in range(3):  # the path may be renamed over between open and flock: lock what it names now
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise busy_error(self.path) from None
            except OSError:  # a file system without flock: run unlocked rather than not at all
                os.close(fd)
                return
            try:
                current, held = os.stat(self.path), os.fstat(fd)
            except OSError:
                current = held = None
            if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                self.fd = fd
                return
            os.close(fd)
        raise busy_error(self.path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __del__(self) -> None:
        self.release()
