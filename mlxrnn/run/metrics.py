"""Reading a training run's ``metrics.jsonl`` back: the curves behind ``mlxrnn plot``.

:class:`~mlxrnn.run.loop.LanguageModelRun` appends one JSON object per line: ``start`` (options,
backend), ``train`` every ``--log-every`` steps (loss, grad_norm, clip_rate, lr,
tokens_per_second, elapsed seconds), ``eval`` (val_loss, val_perplexity, val_bpc for character
models, lr, and elapsed since this version) and a closing ``end``, ``interrupted`` or
``diverged``. :func:`read_run_metrics` turns that into arrays, and is safe on a run that is
still being written: a half-written last line is skipped, and so is any unreadable line (they
are counted). The log is untrusted input: it is read through the regular-file and size checks
(a FIFO or a link to /dev/zero is refused in one line), and a train or eval record whose step
(or validation loss) is not a finite number >= 0 is skipped and counted too; other fields that
are not finite numbers read as NaN, and options of the wrong type are ignored. A resumed run
restarts from a checkpoint; records past the step it resumed from
belong to the abandoned stretch and are dropped, so each step appears once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlxrnn.errors import DataError
from mlxrnn.io.files import read_regular_file
from mlxrnn.io.run_directory import METRICS_MAX_BYTES

#: the columns of each record kind kept as arrays (a record without one gives NaN)
TRAIN_FIELDS = ("step", "loss", "grad_norm", "clip_rate", "lr", "tokens_per_second", "elapsed")
EVAL_FIELDS = ("step", "val_loss", "val_bpc", "val_perplexity", "lr", "elapsed")
_CLOSING = {"end": "finished", "interrupted": "interrupted", "diverged": "diverged"}


@dataclass
class RunMetrics:
    """One run's logged curves: ``train[name]`` and ``evals[name]`` are float arrays by step."""

    path: Path
    name: str
    options: dict = field(default_factory=dict)  #: the last ``start`` record's options
    backend: str | None = None
    train: dict[str, np.ndarray] = field(default_factory=dict)  #: TRAIN_FIELDS -> (N,)
    evals: dict[str, np.ndarray] = field(default_factory=dict)  #: EVAL_FIELDS -> (M,)
    status: str = "running"  #: "running" (no closing record yet), "finished", "interrupted", "diverged"
    stopped_because: str | None = None
    skipped_lines: int = 0  #: unreadable lines (e.g. the half-written last one of a live run)
    bad_records: int = 0  #: train/eval records skipped for a missing or bad step (or validation loss)

    @property
    def level(self) -> str:
        return str(self.options.get("level", "char"))

    @property
    def clip(self) -> float | None:
        """The run's clipping threshold, None when it has none (or the record's is not a number > 0)."""
        clip = _number(self.options.get("clip"))
        return clip if clip > 0 else None

    def eval_minutes(self) -> np.ndarray:
        """(M,) training minutes at each evaluation; older runs' evals carry no time, so it is
        interpolated from the train records' (evaluations are not counted, as in ``elapsed``)."""
        elapsed = self.evals["elapsed"]
        missing = np.isnan(elapsed)
        if missing.any() and len(self.train["step"]):
            elapsed = elapsed.copy()
            known = ~np.isnan(self.train["elapsed"])
            elapsed[missing] = np.interp(self.evals["step"][missing], np.r_[0.0, self.train["step"][known]],
                                         np.r_[0.0, self.train["elapsed"][known]])
        return elapsed / 60.0

    def summary(self) -> dict:
        """The numbers the text summary prints, taken from the records as they are."""
        train, evals = self.train, self.evals
        out: dict = {
            "run": str(self.path),
            "name": self.name,
            "status": self.status,
            "stopped_because": self.stopped_because,
            "level": self.level,
            "model": _model_label(self.options),
            "backend": self.backend,
            "train_records": int(len(train["step"])),
            "eval_records": int(len(evals["step"])),
            "skipped_lines": self.skipped_lines,
            "bad_records": self.bad_records,
        }
        if len(train["step"]):
            out.update({
                "last_step": int(max(train["step"][-1], evals["step"][-1] if len(evals["step"]) else 0)),
                "minutes": _last_finite(train["elapsed"]) / 60.0,
                "last_train_loss": float(train["loss"][-1]),
                "grad_norm_median": _finite_stat(np.median, train["grad_norm"]),
                "grad_norm_max": _finite_stat(np.max, train["grad_norm"]),
                "clip_rate": _finite_stat(np.mean, train["clip_rate"]),
                "lr_first": float(train["lr"][0]),
                "lr_last": float(train["lr"][-1]),
                "tokens_per_second": _last_finite(train["tokens_per_second"]),
            })
        if len(evals["step"]):
            best = int(np.nanargmin(evals["val_loss"]))
            out.update({
                "best_val_loss": float(evals["val_loss"][best]),
                "best_val_step": int(evals["step"][best]),
                "last_val_loss": float(evals["val_loss"][-1]),
            })
            secondary = "val_bpc" if self.level == "char" else "val_perplexity"
            out[f"best_{secondary}"] = float(evals[secondary][best])
        return out


def _finite_stat(statistic, values: np.ndarray) -> float:
    """``statistic`` of the finite values (NaN when there are none, without a warning)."""
    finite = values[np.isfinite(values)]
    return float(statistic(finite)) if len(finite) else math.nan


def _last_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else math.nan


def _model_label(options: dict) -> str:
    if not options:
        return "?"
    return f"{options.get('layers', '?')}×{options.get('hidden', '?')} {options.get('cell', '?')}"


def _number(value) -> float:
    """A finite number from a record, else NaN (null, text, true, 1e400 and overflowing integers alike)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    try:
        number = float(value)
    except OverflowError:
        return math.nan
    return number if math.isfinite(number) else math.nan


def _usable(record: dict, event: str) -> bool:
    """Whether a train/eval record can be drawn: a step >= 0 (and an eval's validation loss)."""
    step = _number(record.get("step"))
    return step >= 0 and (event != "eval" or not math.isnan(_number(record.get("val_loss"))))


def read_run_metrics(path: str | Path, name: str | None = None) -> RunMetrics:
    """Read ``path/metrics.jsonl`` (or a metrics.jsonl file given directly) into a :class:`RunMetrics`.

    Raises DataError (one line) when there is no such file or it holds no record at all.
    """
    path = Path(path)
    file = path if path.is_file() else path / "metrics.jsonl"
    run_dir = file.parent
    try:
        raw = read_regular_file(file, lambda reason: DataError(f"{file} {reason}; pass a run directory written by "
                                                               "`mlxrnn train --out`"), max_bytes=METRICS_MAX_BYTES)
    except FileNotFoundError:
        hint = "" if path.is_dir() else " (no such directory either)"
        raise DataError(
            f"no metrics.jsonl in {path}{hint}; pass a run directory written by `mlxrnn train --out`"
        ) from None
    except OSError as error:
        raise DataError(f"cannot read {file}: {error.strerror or error}") from None
    metrics = RunMetrics(path=run_dir, name=name or run_dir.resolve().name)
    rows: dict[str, list[dict]] = {"train": [], "eval": []}
    seen = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            metrics.skipped_lines += 1  # e.g. the line a running `mlxrnn train` is writing right now
            continue
        if not isinstance(record, dict):
            metrics.skipped_lines += 1
            continue
        seen += 1
        event = record.get("event") if isinstance(record.get("event"), str) else None
        if event == "start":
            resumed_at = _number(record.get("step"))
            for kind in rows:  # a resume from an earlier checkpoint replays those steps
                rows[kind] = [r for r in rows[kind] if not _number(r.get("step")) > resumed_at]
            metrics.options = record.get("options") if isinstance(record.get("options"), dict) else {}
            metrics.backend = record.get("backend") if isinstance(record.get("backend"), str) else None
            metrics.status, metrics.stopped_because = "running", None
        elif event in rows:
            if _usable(record, event):
                rows[event].append(record)
            else:
                metrics.bad_records += 1
        elif event in _CLOSING:
            metrics.status = _CLOSING[event]
            because = record.get("stopped_because")
            metrics.stopped_because = (because if isinstance(because, str) else None) if event == "end" else event
    if not seen:
        raise DataError(f"{file} holds no metrics yet; wait for the first logged step (`log_every`) and retry")
    metrics.train = {key: np.array([_number(r.get(key)) for r in rows["train"]]) for key in TRAIN_FIELDS}
    metrics.evals = {key: np.array([_number(r.get(key)) for r in rows["eval"]]) for key in EVAL_FIELDS}
    return metrics


def unique_names(paths: list[str | Path]) -> list[str]:
    """Labels for runs: each directory's name, or more of its path where two names collide."""
    resolved = [Path(p).resolve() for p in paths]
    names = [p.name for p in resolved]
    for depth in range(2, 8):
        if len(set(names)) == len(names):
            break
        names = ["/".join(p.parts[-depth:]) for p in resolved]
    return names
