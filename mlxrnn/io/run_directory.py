"""Owning a run directory: what a training run writes there, and what replacing a run may delete.

A run directory holds exactly :data:`RUN_FILES`: the ``checkpoints/`` of :mod:`mlxrnn.io.checkpoint`,
its ``last.json``/``best.json`` pointers, the options and the JSON-lines metrics log. Starting a
new run in a directory that has one needs ``force``, and even then only entries recognisably
written by a run are removed (a thesis someone kept there is not), and only once the new run is
known to be able to start (:meth:`RunDirectory.claim` checks, :meth:`RunDirectory.replace`
deletes). The names of checkpoint entries come from the checkpoint format itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.checkpoint.format import CHECKPOINTS_SUBDIR, POINTER_TMP_RE, STEP_DIR_RE, TMP_RE

OPTIONS_FILE = "options.json"
METRICS_FILE = "metrics.jsonl"
#: each file a run writes, and a key its (first) JSON object always has
_RUN_FILE_KEYS = {"last.json": "checkpoint", "best.json": "checkpoint", OPTIONS_FILE: "options", METRICS_FILE: "event"}
#: what a run directory holds; ``force`` removes exactly these and nothing else
RUN_FILES = (CHECKPOINTS_SUBDIR, *_RUN_FILE_KEYS)


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
    """Whether ``path`` is recognisably something a training run wrote (so ``force`` may remove it)."""
    name = path.name
    if POINTER_TMP_RE.match(name):
        return path.is_file() and not path.is_symlink()
    if name == CHECKPOINTS_SUBDIR:
        if path.is_symlink() or not path.is_dir():
            return False
        return all(STEP_DIR_RE.match(entry.name) or TMP_RE.match(entry.name) for entry in path.iterdir())
    if path.is_symlink():
        return False
    if name not in _RUN_FILE_KEYS or not path.is_file():
        return False
    if path.stat().st_size == 0:  # e.g. killed while writing it: nothing to lose
        return True
    doc = _first_json(path)
    return isinstance(doc, dict) and _RUN_FILE_KEYS[name] in doc


class RunDirectory:
    """The directory of one training run (``run_dir``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _check_not_a_file(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"`run_dir` {self.path} is a file, not a directory; choose another path")

    def check_resumable(self) -> None:
        """Raise unless the directory holds a run to continue."""
        self._check_not_a_file()
        if not (self.path / "last.json").exists():
            raise DataError(
                f"cannot resume: {self.path} has no checkpoint (last.json); start a new run without `resume`"
            )

    def claim(self, force: bool) -> tuple[str, ...]:
        """Check that a new run may start here; returns the old run's entries it will replace.

        Nothing is removed yet: the caller calls :meth:`replace` once the corpus and the model
        are known to be usable, so a typo in another setting never costs the old run.
        """
        self._check_not_a_file()
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
        return entries

    def replace(self, entries: tuple[str, ...]) -> None:
        """Remove the old run's ``entries`` (as :meth:`claim` returned them), then create the directory."""
        try:
            for name in entries:
                path = self.path / name
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"cannot prepare run directory {self.path}: {error.strerror or error}") from None

    def write_json(self, name: str, data: dict) -> None:
        (self.path / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    def append_metrics(self, record: dict) -> None:
        """One JSON line in the metrics log."""
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
