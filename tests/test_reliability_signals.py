"""Reliability: faults during training (divergence, signals) and run directories (--force never deletes
what is not a run's; no path the user passes is overwritten)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.errors import ConfigError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import Interrupted, TrainingDiverged, TrainOptions, train_language_model
from tests.reliability_support import (  # noqa: F401 (pytest fixtures)
    TINY,
    TINY_FLAGS,
    assert_clean,
    assert_clean_process,
    bad_files,
    char_run,
    corpus,
    invoke,
    run_process,
    tree_digest,
)

# --------------------------------------------------------------------------------------------
# faults during training: divergence, clipping statistics, signals


def test_divergence_before_any_checkpoint_says_so_and_suggests_clipping(tmp_path, corpus):
    options = TrainOptions(corpus=str(corpus), steps=40, lr=50.0, clip=None, optimizer="sgd", backend="numpy",
                           **{**TINY, "eval_every": 1000})
    with pytest.raises(TrainingDiverged, match=r"no checkpoint had been saved yet; try a lower `lr` \(now 50\) "
                                               r"or `clip` 5"):
        train_language_model(options, tmp_path / "run")
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1] == "diverged"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, corpus):
    options = TrainOptions(corpus=str(corpus), steps=40, lr=50.0, clip=None, optimizer="sgd", backend="numpy",
                           **{**TINY, "eval_every": 1})
    with pytest.raises(TrainingDiverged, match="the last good checkpoint is kept in"):
        train_language_model(options, tmp_path / "run")
    good = load_checkpoint(tmp_path / "run", tag="last")  # loads: finite weights, hashes intact
    assert all(np.isfinite(w).all() for w in good.weights.values())
    diverged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert diverged["event"] == "diverged"
    assert good.meta["training"]["state"]["step"] == diverged["step"] - 1  # evaluated (saved) after every step


def test_gradient_norms_and_clip_rate_are_logged(tmp_path, corpus):
    for clip, expected in ((1e-4, 1.0), (None, 0.0)):
        run = tmp_path / f"clip-{clip}"
        train_language_model(TrainOptions(corpus=str(corpus), steps=6, clip=clip, backend="numpy",
                                          **{**TINY, "log_every": 3}), run)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["event"] == "train"]
        assert [r["step"] for r in train] == [3, 6]
        assert all(r["grad_norm"] > 0 and r["clip_rate"] == expected for r in train)


def test_ctrl_c_during_the_final_evaluation_saves_and_exits_cleanly(tmp_path, corpus, monkeypatch):
    from mlxrnn.run import records

    original = records.evaluate_windows

    def interrupted_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the (only, final) evaluation runs
        return original(*args, **kwargs)

    monkeypatch.setattr(records, "evaluate_windows", interrupted_evaluation)
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match="SIGINT received: saved step 4") as stop:
        train_language_model(TrainOptions(corpus=str(corpus), steps=4, backend="numpy",
                                          **{**TINY, "eval_every": 1000}), run)
    assert stop.value.signal_number == signal.SIGINT
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 4  # no step lost
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-2:] == ["eval", "interrupted"]


def _default_sigint() -> None:
    """Run in the child before exec: a shell that started the test run in the background
    (``cmd &`` without job control) makes SIGINT ignored, children inherit that, and Python
    then never raises KeyboardInterrupt. Reset it so the test sends a real Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate, process, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_during_the_final_sample_exits_130_and_keeps_the_run(tmp_path, corpus):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "train", str(corpus), *TINY_FLAGS, "--sample-length",
         "100000000", "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    metrics = run / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and '"end"' in metrics.read_text(), process)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: sample interrupted; the run is complete and saved")
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 2


def test_ctrl_c_during_sampling_exits_130(char_run):
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "sample", str(char_run), "--length", "100000000", "--backend",
         "numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_default_sigint)
    assert process.stdout.read(5)  # tokens are streaming: the command is running
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == ["Error: interrupted (Ctrl-C); nothing more "
                                                                         "was written"]


# --------------------------------------------------------------------------------------------
# run directories: --force never deletes what is not a run's, no user path is overwritten


def _foreign_layouts(root: Path, good_run: Path) -> dict[str, Path]:
    layouts = {}

    def new(name):
        layouts[name] = root / name
        layouts[name].mkdir()
        return layouts[name]

    (new("a user file") / "thesis.tex").write_text("precious")
    (new("a user options.json") / "options.json").write_text('{"mine": true}')
    (new("an empty-looking tmp file") / ".tmp-notes").write_text("notes")
    (new("a directory named like a run file") / "options.json").mkdir()
    (layouts["a directory named like a run file"] / "options.json" / "inner.txt").write_text("keep")
    target = root / "elsewhere"
    target.mkdir()
    (target / "data.csv").write_text("1,2,3")
    (new("checkpoints is a symlink") / "checkpoints").symlink_to(target, target_is_directory=True)
    layouts["a user file inside checkpoints"] = root / "run-with-notes"
    shutil.copytree(good_run, layouts["a user file inside checkpoints"])
    (layouts["a user file inside checkpoints"] / "checkpoints" / "notes.txt").write_text("mine")
    return layouts


def test_force_never_deletes_what_is_not_a_runs(tmp_path, corpus, char_run):
    layouts = _foreign_layouts(tmp_path, char_run)
    before = tree_digest(tmp_path)
    for directory in layouts.values():
        with pytest.raises(ConfigError, match="not an mlxrnn run's"):
            train_language_model(TrainOptions(corpus=str(corpus), steps=1, backend="numpy", **TINY), directory,
                                 force=True)
        assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", directory, "--force"), 2, "not an mlxrnn run's")
    assert tree_digest(tmp_path) == before


def test_a_failed_forced_run_keeps_the_old_run(tmp_path, corpus, bad_files, char_run):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    before = tree_digest(run)
    for corpus_path, flags, code in [
        (bad_files["missing"], [], 1),
        (bad_files["short_for_validation"], [], 1),
        (bad_files["not_utf8"], [], 1),
        (corpus, ["--hidden", "0"], 2),
        (corpus, ["--hidden", "1000000"], 2),
    ]:
        assert_clean(invoke("train", corpus_path, *TINY_FLAGS, *flags, "--out", run, "--force"), code)
        assert tree_digest(run) == before
    assert invoke("train", corpus, *TINY_FLAGS, "--out", run, "--force").exit_code == 0  # a real run may go
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 2


def test_no_path_the_user_passes_is_overwritten(tmp_path, corpus, char_run):
    inside = tmp_path / "run"
    shutil.copytree(char_run, inside)
    shutil.copy(corpus, inside / "corpus.txt")  # a corpus kept inside the run directory
    before = tree_digest(tmp_path, corpus)
    assert_clean(invoke("train", inside / "corpus.txt", *TINY_FLAGS, "--out", inside, "--force"), 2,
                 "inside --out")
    assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", corpus), 2, "is a file, not a directory")
    assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", inside), 2, "already exists; pass --resume")
    assert_clean(invoke("train", corpus, "--resume", "--out", tmp_path / "absent", "--quiet"), 1, "cannot resume")
    assert tree_digest(tmp_path, corpus) == before


def test_real_processes_fail_in_one_line(tmp_path, bad_files, char_run):
    """The in-process results hold for a real process too (exit status, stderr, no traceback)."""
    assert_clean_process(run_process("train", bad_files["binary"], *TINY_FLAGS, "--out", tmp_path / "r"), 1,
                         "byte offset 128")
    assert_clean_process(run_process("train", "--lr", "-1", *TINY_FLAGS, "--out", tmp_path / "r"), 2, "--lr")
    assert_clean_process(run_process("sample", tmp_path / "nowhere"), 1, "no checkpoint at")
    assert_clean_process(run_process("sample", char_run, "--top-p", "2"), 2, "--top-p")


