"""Owning a run directory: what a training run writes there, and how a run is replaced safely.

A run directory holds exactly :data:`RUN_FILES`: the ``checkpoints/`` of :mod:`mlxrnn.io.checkpoint`,
its ``last.json``/``best.json`` pointers, the options and the JSON-lines metrics log. Starting a
new run in a directory that has one needs ``force``, and even then only entries recognisably
written by a run are replaced (a thesis someone kept there is not).

Replacing never costs the old run: :meth:`RunDirectory.start` builds the new run in a hidden
sibling (``.NAME.replacing-<pid>-<hex>``) and :meth:`RunDirectory.commit` swaps it into place once
its first checkpoint is safely written (one atomic ``renameat2`` exchange on Linux, else two
renames); only then is the old run deleted. A failure before that (a bad setting, a full disk, a
read-only directory, a divergence, Ctrl-C) removes the sibling and leaves the old run as it was;
a process killed between the two renames leaves the old run in ``.NAME.replaced-<pid>-<hex>``,
which the next start or resume puts back. An *interrupted* replacement (Ctrl-C, SIGTERM) that has
no checkpoint yet is not swapped in either: :meth:`RunDirectory.set_aside` saves it beside the old
run as ``NAME.new`` (``NAME.new-2``, ... if taken), a run of its own that ``resume`` continues.

The path is made absolute first, so a run replaced from inside itself (``--out .``) keeps
writing to the new run after the swap, not to the deleted directory the process started in.

Training holds an exclusive lock on the directory (:mod:`mlxrnn.io.run_lock`), so a second
process is refused instead of overwriting the first one's checkpoints and log. Every write goes
through :mod:`mlxrnn.io.files` (one line of WriteError on failure, no 0-byte file).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

from mlxrnn.errors import ConfigError, DataError, WriteError
from mlxrnn.io.checkpoint.durable import fsync_dir
from mlxrnn.io.checkpoint.format import CHECKPOINTS_SUBDIR, POINTER_TMP_RE, STEP_DIR_RE, TMP_RE
from mlxrnn.io.files import (
    append_line,
    exchange_paths,
    os_error_advice,
    read_regular_file,
    write_error,
    write_file_atomically,
)
from mlxrnn.io.run_lock import RunLock

OPTIONS_FILE = "options.json"
METRICS_FILE = "metrics.jsonl"
#: each file a run writes, and a key its (first) JSON object always has
_RUN_FILE_KEYS = {"last.json": "checkpoint", "best.json": "checkpoint", OPTIONS_FILE: "options", METRICS_FILE: "event"}
#: TensorBoard event files of a run trained with `tensorboard` (mlxrnn.run.tensorboard)
TENSORBOARD_SUBDIR = "tensorboard"
#: what a run directory holds; ``force`` replaces exactly these and nothing else
RUN_FILES = (CHECKPOINTS_SUBDIR, TENSORBOARD_SUBDIR, *_RUN_FILE_KEYS)
#: a run file being written (io.files.temporary_name), e.g. left by a process killed meanwhile
RUN_TMP_RE = re.compile(r"^\.tmp-(?:[^/]+\.json|metrics\.jsonl)-(\d+)-[0-9a-f]{8}$")
#: a metrics log longer than this is not read back (a run writes a few hundred bytes per record)
METRICS_MAX_BYTES = 1 << 30
#: siblings of a run being replaced: group 1 the run's name, 2 which side, 3 the writer's pid
_SIBLING_RE = re.compile(r"^\.(.+)\.(replacing|replaced)-(\d+)-[0-9a-f]{8}$")
_own_siblings: set[str] = set()  # siblings this process is using (a pid can repeat in containers)


def _first_json(path: Path) -> Any:
    """The JSON value on the first line (or the whole of a small file), None if it is not JSON."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        text = head.decode("utf-8")
        return json.loads(text if path.suffix == ".json" else text.split("\n", 1)[0])
    except (OSError, ValueError, RecursionError):
        return None


def is_run_entry(path: Path) -> bool:
    """Whether ``path`` is recognisably something a training run wrote (so ``force`` may replace it)."""
    name = path.name
    if POINTER_TMP_RE.match(name) or RUN_TMP_RE.match(name):
        return path.is_file() and not path.is_symlink()
    if name == CHECKPOINTS_SUBDIR:
        if path.is_symlink() or not path.is_dir():
            return False
        return all(STEP_DIR_RE.match(entry.name) or TMP_RE.match(entry.name) for entry in path.iterdir())
    if path.is_symlink():
        return False
    if name == TENSORBOARD_SUBDIR:  # event files only, as the writer names them
        return path.is_dir() and all(entry.name.startswith("events.out.tfevents.") for entry in path.iterdir())
    if name not in _RUN_FILE_KEYS or not path.is_file():  # is_file: a FIFO is never opened here
        return False
    if path.stat().st_size == 0:  # e.g. killed while writing it: nothing to lose
        return True
    doc = _first_json(path)
    return isinstance(doc, dict) and _RUN_FILE_KEYS[name] in doc


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own siblings are in _own_siblings; any other with our pid is a leftover
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, someone else's
        return True
    return True


class RunDirectory:
    """The directory of one training run (``run_dir``) and this process's hold on it.

    :attr:`writing` is where the run's files go now: the directory itself, or while a forced
    replacement has no checkpoint yet, the hidden sibling it is built in.
    """

    def __init__(self, path: str | os.PathLike[str]):
        if os.fspath(path) == "":
            raise ConfigError("`run_dir` is empty; name the directory of the run")
        self.path = Path(os.path.abspath(path))  # not relative to a working directory the swap may delete
        self.writing = self.path
        self._lock: RunLock | None = None
        self._sibling_lock: RunLock | None = None
        self._replacing: Path | None = None  # the sibling a forced run is built in, until commit()
        self._created = False

    @property
    def replacing(self) -> bool:
        """Whether a forced run is still being built beside the old one (no checkpoint yet)."""
        return self._replacing is not None

    def _real(self) -> Path:
        return Path(os.path.realpath(self.path))  # a symlinked run directory is replaced where it points

    def _check_not_a_file(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"`run_dir` {self.path} is a file, not a directory; choose another path")

    def _recover(self) -> None:
        """Tidy what a killed replacement left beside this directory (see the module docstring)."""
        real = self._real()
        try:
            siblings = [entry for entry in real.parent.iterdir() if entry.name.startswith(f".{real.name}.")]
        except OSError:
            return
        for entry in siblings:
            match = _SIBLING_RE.match(entry.name)
            if not match or match.group(1) != real.name or str(entry) in _own_siblings:
                continue
            if _pid_alive(int(match.group(3))):
                continue
            try:
                if match.group(2) == "replaced" and not os.path.lexists(real):
                    os.rename(entry, real)  # the old run, moved aside just before its writer died
                else:
                    shutil.rmtree(entry)
            except OSError:
                pass  # best effort: a leftover sibling is hidden and harmless

    def check_resumable(self) -> None:
        """Raise unless the directory holds a run to continue; then hold its lock."""
        self._check_not_a_file()
        self._recover()
        if not (self.path / "last.json").exists():
            raise DataError(
                f"cannot resume: {self.path} has no checkpoint (last.json); start a new run without `resume`"
            )
        self._lock = RunLock(self.path)

    def claim(self, force: bool) -> tuple[str, ...]:
        """Check that a new run may start here; returns the old run's entries it will replace.

        Nothing is changed yet: :meth:`start` begins the new run once the corpus and the model
        are known to be usable, so a typo in another setting never costs the old run.
        """
        self._check_not_a_file()
        self._recover()
        entries = tuple(sorted(p.name for p in self.path.iterdir())) if self.path.is_dir() else ()
        if entries and not force:
            raise ConfigError(
                f"run directory {self.path} already exists; pass `resume` to continue it, "
                f"`force` to replace it, or choose another `run_dir`"
            )
        foreign = [name for name in entries if not is_run_entry(self.path / name)]
        if foreign:
            raise ConfigError(
                f"{self.path} holds files that are not an mlxrnn run's ({', '.join(foreign[:3])}); refusing to "
                "replace it even with `force`; choose another `run_dir`"
            )
        if entries:
            self._lock = RunLock(self.path)  # never replace a run another process is training
            self._check_replaceable()
        return entries

    def _check_replaceable(self) -> None:
        """Refuse now what would fail at the swap: the parent must take the new run beside the
        old one, and the old run's directories must let it be deleted afterwards."""
        real = self._real()
        directories = [real.parent, real] + [Path(root) for root, _, _ in os.walk(real)][1:]
        for directory in directories:
            if not os.access(directory, os.W_OK | os.X_OK):
                where = "its parent directory" if directory == real.parent else str(directory)
                raise WriteError(
                    f"cannot replace the run in {self.path}: {where} is not writable (the new run is built beside "
                    "the old one and swapped in); make it writable or choose another `run_dir`"
                )

    def start(self, replaced: tuple[str, ...]) -> None:
        """Create the place the new run writes to: the directory itself, or (``replaced``: the
        entries :meth:`claim` returned) a hidden sibling that :meth:`commit` swaps in later."""
        try:
            if replaced:
                real = self._real()
                sibling = real.parent / f".{real.name}.replacing-{os.getpid()}-{secrets.token_hex(4)}"
                os.mkdir(sibling)
                _own_siblings.add(str(sibling))
                self._replacing = self.writing = sibling
                self._sibling_lock = RunLock(sibling)
            else:
                self._created = not self.path.exists()
                self.path.mkdir(parents=True, exist_ok=True)
                if self._lock is None:
                    self._lock = RunLock(self.path)
        except OSError as error:
            raise write_error(self.path, error, "the run directory") from None

    def commit(self) -> None:
        """Put a forced run in place of the old one (after its first checkpoint); then delete
        the old run. A no-op unless a replacement is pending."""
        sibling = self._replacing
        if sibling is None:
            return
        real = self._real()
        try:
            if exchange_paths(sibling, real):  # one atomic step: the sibling now holds the old run
                old = sibling
            else:
                old = real.parent / f".{real.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
                _own_siblings.add(str(old))
                os.rename(real, old)
                try:
                    os.rename(sibling, real)
                except OSError:
                    os.rename(old, real)
                    raise
            fsync_dir(real.parent)
        except OSError as error:
            raise WriteError(
                f"cannot put the new run in place of {self.path}: {os_error_advice(error)}; the previous run there "
                "is unchanged"
            ) from None
        self._replacing, self.writing = None, self.path
        if self._lock is not None:
            self._lock.release()
        self._lock, self._sibling_lock = self._sibling_lock, None  # that lock is on the directory now at `path`
        try:
            shutil.rmtree(old)
        except OSError as error:
            warnings.warn(f"the replaced run's files are left in {old} ({os_error_advice(error)}); delete them by hand",
                          stacklevel=2)
        _own_siblings.discard(str(old))
        _own_siblings.discard(str(sibling))

    def set_aside(self) -> Path:
        """Keep a replacement that was interrupted before its first checkpoint as a run of its own
        beside the old one (``NAME.new``, or ``NAME.new-2``, ...), which stays as it was; returns
        where. Called once the interrupted run's checkpoint is written in the sibling."""
        sibling = self._replacing
        if sibling is None:
            return self.path
        real = self._real()
        for number in range(1, 1000):
            aside = real.parent / (f"{real.name}.new" if number == 1 else f"{real.name}.new-{number}")
            if os.path.lexists(aside):
                continue
            try:
                os.rename(sibling, aside)  # the same directory: the lock held on it goes along
            except OSError as error:
                if os.path.lexists(aside):
                    continue  # taken meanwhile
                raise WriteError(
                    f"cannot keep the interrupted new run beside {self.path}: {os_error_advice(error)}; the previous "
                    "run there is unchanged"
                ) from None
            break
        else:
            raise WriteError(f"cannot keep the interrupted new run beside {self.path}: {real.name}.new-1 to "
                             f"{real.name}.new-999 all exist; delete some; the previous run there is unchanged")
        try:
            fsync_dir(real.parent)
        except OSError:
            pass
        _own_siblings.discard(str(sibling))
        self._replacing, self.path, self.writing = None, aside, aside
        return aside

    def abandon(self) -> None:
        """Drop a replacement that never got a checkpoint (the old run stays as it was), or the
        empty directory a new run created before it failed."""
        sibling, self._replacing = self._replacing, None
        if sibling is not None:
            shutil.rmtree(sibling, ignore_errors=True)
            _own_siblings.discard(str(sibling))
            self.writing = self.path
            if self._sibling_lock is not None:
                self._sibling_lock.release()
                self._sibling_lock = None
        elif self._created:
            try:
                os.rmdir(self.path)  # only if still empty: a run that wrote something keeps it
            except OSError:
                pass

    def release(self) -> None:
        """Let other processes use the directory (the OS does it too when this process ends)."""
        for lock in (self._lock, self._sibling_lock):
            if lock is not None:
                lock.release()
        self._lock = self._sibling_lock = None

    # --- the run's files ---------------------------------------------------------------------
    def write_json(self, name: str, data: dict) -> None:
        write_file_atomically(self.writing / name, json.dumps(data, indent=2) + "\n", what="the run's")

    def append_metrics(self, record: dict) -> None:
        """One JSON line in the metrics log."""
        append_line(self.writing / METRICS_FILE, json.dumps(record), what="the metrics log")

    def trim_metrics(self, step: int) -> None:
        """Before a resumed run appends: drop a partial last line (a kill mid-write) and the
        records of steps after ``step``, the checkpoint resumed from, which the run does again."""
        path = self.writing / METRICS_FILE
        try:
            data = read_regular_file(path, lambda reason: DataError(f"{path} {reason}; move it away to resume"),
                                     max_bytes=METRICS_MAX_BYTES)
        except FileNotFoundError:
            return
        except OSError as error:
            raise DataError(f"cannot read {path}: {error.strerror or error}; check its permissions") from None
        lines = data.split(b"\n")
        complete = lines[:-1]  # the text after the last newline is a partial record (or nothing)
        kept = [line for line in complete if not _after(line, step)]
        if len(kept) != len(complete) or lines[-1]:
            write_file_atomically(path, b"".join(line + b"\n" for line in kept), what="the metrics log")


def _after(line: bytes, step: int) -> bool:
    """Whether a metrics record is about a step after ``step`` (lines that do not parse are kept)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    value = record.get("step") if isinstance(record, dict) else None
    return isinstance(value, int) and not isinstance(value, bool) and value > step
