"""What a training run saves and restores: schedules, the run state, and runs written before
either had its own place (a committed run directory of checkpoint format 1)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.errors import CheckpointError, ConfigError, Interrupted
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.nn.schedules import CosineSchedule, PlateauSchedule, Schedule, make_schedule
from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.run.state import RunState, legacy_schedule_state
from mlxrnn.text.corpus import bundled_corpus_path

FIXTURE = Path(__file__).parent / "fixtures" / "lm_run_v1"
SMALL = dict(layers=1, hidden=16, embed=8, seq_len=8, batch_size=3, backend="numpy")


class _Optimizer:
    def __init__(self, lr: float):
        self.lr = lr


# --- schedules -------------------------------------------------------------------------------
def test_cosine_follows_half_a_cosine_from_the_base_rate_to_zero():
    schedule, optimizer = CosineSchedule(0.2), _Optimizer(0.2)
    for fraction, expected in [(0.0, 0.2), (0.25, 0.1 * (1 + math.cos(math.pi / 4))), (0.5, 0.1), (1.0, 0.0),
                               (1.7, 0.0), (-0.3, 0.2)]:
        schedule.before_step(optimizer, fraction)
        assert optimizer.lr == pytest.approx(expected, abs=1e-15), fraction


def test_plateau_decays_only_when_validation_stalls_by_more_than_min_delta():
    schedule, optimizer = PlateauSchedule(1.0, decay=0.5), _Optimizer(1.0)
    stalled = [schedule.after_evaluation(optimizer, loss) for loss in (2.0, 1.5, 1.49995, 1.6, 1.0)]
    assert stalled == [False, False, True, True, False]
    assert optimizer.lr == 0.25 and schedule.bad_evals == 0 and schedule.best == 1.0
    for name in ("none", "cosine"):  # the others count stalls (for early stopping) but keep the rate
        other, constant = make_schedule(name, 1.0), _Optimizer(1.0)
        assert [other.after_evaluation(constant, loss) for loss in (2.0, 2.0, 2.0)] == [False, True, True]
        assert constant.lr == 1.0 and other.bad_evals == 2


def test_schedule_state_round_trips_and_refuses_another_schedules_state():
    first, optimizer = PlateauSchedule(0.3, decay=0.7), _Optimizer(0.3)
    for loss in (3.0, 3.0, 2.0, 2.5):
        first.after_evaluation(optimizer, loss)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds
    second = make_schedule("plateau", 99.0, decay=0.7)
    second.load_state_dict(state)
    assert second.state_dict() == first.state_dict()
    copy = _Optimizer(optimizer.lr)
    assert [first.after_evaluation(optimizer, 2.6), first.after_evaluation(optimizer, 1.0)] == [
        second.after_evaluation(copy, 2.6), second.after_evaluation(copy, 1.0)]
    assert copy.lr == optimizer.lr
    with pytest.raises(CheckpointError, match="schedule state is for 'plateau', not 'cosine'"):
        CosineSchedule(0.1).load_state_dict(state)
    with pytest.raises(ConfigError, match="unknown schedule 'linear'"):
        make_schedule("linear", 0.1)
    with pytest.raises(ConfigError):
        PlateauSchedule(0.1, decay=0.0)
    assert isinstance(make_schedule("none", 0.1), Schedule)


# --- the run state ---------------------------------------------------------------------------
def test_run_state_saves_every_field_but_the_carry_and_reads_older_states():
    state = RunState(step=7, window=3, best_val=1.5, clipped_since_record=2, steps_since_record=5, carry=np.ones(3))
    data = json.loads(json.dumps(state.to_dict()))
    assert "carry" not in data and RunState.from_dict(data) == RunState(**{**data, "carry": None})
    old = {"step": 3, "epoch": 0, "window": 3, "initial_loss": 3.9, "elapsed": 0.1, "tokens": 48, "best_val": 3.8,
           "sched_best": 3.85, "bad_evals": 1, "base_lr": 0.01, "last_val": 3.8}
    restored = RunState.from_dict(old)
    assert restored.step == 3 and restored.clipped_since_record == 0 and restored.steps_since_record == 0
    assert legacy_schedule_state(old) == {"best": 3.85, "bad_evals": 1, "base_lr": 0.01}
    with pytest.raises(CheckpointError, match="does not know"):
        RunState.from_dict({**data, "from_the_future": 1})


def _train_records(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] in ("train", "eval")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    return str(path)


def test_resume_between_two_train_records_keeps_the_clip_rate_and_the_cosine(tmp_path, corpus):
    """The clip counters and the cosine's base rate are saved: a run stopped (by SIGINT) between
    two "train" records writes the same records as one that was not stopped."""
    probe = tmp_path / "probe"
    train_language_model(TrainOptions(corpus=corpus, steps=12, log_every=1, eval_every=100, **SMALL), probe)
    norms = [r["grad_norm"] for r in _train_records(probe) if r["event"] == "train"]
    options = TrainOptions(corpus=corpus, steps=12, clip=float(np.median(norms)), schedule="cosine", log_every=4,
                           eval_every=3, dropout=0.2, **SMALL)
    train_language_model(options, tmp_path / "whole")

    def stop_at_step_6(progress):
        if progress.step == 6 and progress.event == "train":
            os.kill(os.getpid(), signal.SIGINT)  # acted on before step 7: between the records of steps 4 and 8

    with pytest.raises(Interrupted, match="saved step 6"):
        train_language_model(options, tmp_path / "split", progress=stop_at_step_6)
    stopped = load_checkpoint(tmp_path / "split").meta["training"]
    assert stopped["state"]["steps_since_record"] == 2  # steps 5 and 6, counted toward the record of step 8
    assert stopped["schedule"]["name"] == "cosine" and stopped["schedule"]["base_lr"] == options.lr
    train_language_model(options, tmp_path / "split", resume=True)
    keys = ("event", "step", "loss", "clip_rate", "lr", "val_loss")
    whole, split = _train_records(tmp_path / "whole"), _train_records(tmp_path / "split")
    assert [{k: r.get(k) for k in keys} for r in split] == [{k: r.get(k) for k in keys} for r in whole]
    rates = [r["clip_rate"] for r in whole if r["event"] == "train"]
    assert any(0 < rate < 1 for rate in rates), rates  # some steps of a record clipped, some did not
    lrs = [r["lr"] for r in whole if r["event"] == "train"]
    assert lrs[0] > lrs[1] > lrs[2]  # the cosine decays over the run


def test_a_run_written_by_the_previous_format_resumes_as_it_would_have_continued(tmp_path, monkeypatch):
    """tests/fixtures/lm_run_v1: a run stopped at step 3 by the mlxrnn before this state layout
    (the schedule's memory inside the run state, no clip counters), and the metrics that run
    wrote when trained to step 6 without a stop. Resuming it here continues the same way."""
    shutil.copytree(FIXTURE, tmp_path / "fixture")
    monkeypatch.chdir(tmp_path / "fixture")  # the run names its corpus by a relative path
    saved = load_checkpoint("run").meta["training"]
    assert "schedule" not in saved and "sched_best" in saved["state"]  # really the older layout
    options = TrainOptions.from_saved(saved["options"])  # what the run used, options added since at their legacy values
    summary = train_language_model(TrainOptions.from_saved({**saved["options"], "steps": 6}), "run", resume=True)
    assert summary.steps == 6 and options.schedule == "plateau"
    expected = json.loads((FIXTURE / "uninterrupted.json").read_text())["records"]
    got = [r for r in _train_records(Path("run")) if r["step"] != 3]  # step 3: the stopped run's final evaluation
    assert [(r["event"], r["step"]) for r in got] == [(r["event"], r["step"]) for r in expected]
    for mine, theirs in zip(got, expected):
        for key in ("loss", "val_loss", "lr", "clip_rate"):
            if key in theirs:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), (mine, theirs)
    resaved = load_checkpoint("run").meta["training"]
    assert resaved["schedule"]["base_lr"] == 0.01 and "sched_best" not in resaved["state"]
