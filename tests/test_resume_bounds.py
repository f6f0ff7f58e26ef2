"""Resume's bounds on a saved position (issue 29, item 5).

A checkpoint's ``window`` is the next window of the current epoch, so it lies in
``0 .. windows_per_epoch - 1``; the loop wraps to the next epoch as soon as it reaches the end.
A saved window *equal* to the windows per epoch is therefore damage (one past the end), and the
last window (one less) is a valid place to continue from. Damaged checkpoints elsewhere are tried
with absurd windows only; here the boundary itself is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.errors import CheckpointError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.run.resume import restored_state
from mlxrnn.run.state import RunState
from mlxrnn.text.corpus import bundled_corpus_path

TINY = dict(layers=1, hidden=6, embed=4, seq_len=8, batch_size=2, eval_every=100, log_every=1, dropout=0.0,
            backend="numpy")


def test_restored_state_accepts_the_last_window_and_refuses_one_past_it(tmp_path):
    shape = (1, 2, 3)
    carry = np.zeros(shape, np.float32)
    for window in (0, 6):
        state = restored_state(RunState(step=9, window=window).to_dict(), carry, 7, 1, shape, tmp_path)
        assert state.window == window and state.step == 9
    for window in (7, 8):
        with pytest.raises(CheckpointError, match=f"window {window}\\) is past the end of an epoch"):
            restored_state(RunState(window=window).to_dict(), carry, 7, 1, shape, tmp_path)
    with pytest.raises(CheckpointError, match="past the end"):  # an epoch of one window: only window 0
        restored_state(RunState(window=1).to_dict(), None, 1, 1, shape, tmp_path)


def test_restored_state_checks_the_carried_state_count_and_shapes(tmp_path):
    shape = (1, 2, 3)
    good = np.zeros(shape, np.float32)
    assert restored_state(RunState().to_dict(), (good, good), 4, 2, shape, tmp_path).window == 0
    for carry, count in [(good, 2), ((good, good), 1), (np.zeros((1, 3, 3)), 1), ((good, np.zeros((2, 2, 3))), 2)]:
        with pytest.raises(CheckpointError, match="its carried state has shapes"):
            restored_state(RunState().to_dict(), carry, 4, count, shape, tmp_path)


def _checkpoint_meta(run: Path) -> Path:
    return run / json.loads((run / "last.json").read_text())["checkpoint"] / "meta.json"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> tuple[Path, int]:
    """A 2-step run and its windows per epoch."""
    root = tmp_path_factory.mktemp("bounds")
    corpus = root / "corpus.txt"
    corpus.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:1500], encoding="utf-8")
    run = root / "run"
    train_language_model(TrainOptions(corpus=str(corpus), steps=2, **TINY), run)
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return run, start["steps_per_epoch"]


def _with_window(short_run, tmp_path, window: int) -> Path:
    source, _ = short_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    meta = _checkpoint_meta(run)
    doc = json.loads(meta.read_text())
    doc["meta"]["training"]["state"]["window"] = window
    meta.write_text(json.dumps(doc))
    return run


def test_a_checkpoint_whose_window_is_the_epochs_length_is_refused(short_run, tmp_path):
    per_epoch = short_run[1]
    assert per_epoch > 2
    run = _with_window(short_run, tmp_path, per_epoch)
    with pytest.raises(CheckpointError, match=f"window {per_epoch}\\) is past the end of an epoch"):
        train_language_model(TrainOptions(steps=4, backend="numpy"), run, resume=True)


def test_a_checkpoint_at_the_last_window_resumes_into_the_next_epoch(short_run, tmp_path):
    per_epoch = short_run[1]
    run = _with_window(short_run, tmp_path, per_epoch - 1)
    summary = train_language_model(TrainOptions(steps=4, backend="numpy"), run, resume=True)
    assert summary.steps == 4
    state = load_checkpoint(run, tag="last").meta["training"]["state"]
    assert (state["epoch"], state["window"]) == (1, 1)  # step 3 read the last window, step 4 the next epoch's first
