"""Schedules that never waste the budget: plateau decay with its own patience and a floor it
never goes below (stopping, or continuing, once stalled there), and cosine with warm-up."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.errors import ConfigError
from mlxrnn.nn.schedules import CosineSchedule, PlateauSchedule, make_schedule
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.corpus import bundled_corpus_path


class _Optimizer:
    def __init__(self, lr: float):
        self.lr = lr


def test_plateau_decays_after_its_own_patience():
    schedule, optimizer = PlateauSchedule(1.0, decay=0.5, patience=2), _Optimizer(1.0)
    actions = []
    for loss in (2.0, 2.1, 2.2, 2.3, 2.4, 1.0, 1.1, 1.2):
        schedule.after_evaluation(optimizer, loss)
        actions.append((schedule.last_action, optimizer.lr))
    assert actions == [(None, 1.0), (None, 1.0), ("decayed", 0.5), (None, 0.5), ("decayed", 0.25),
                       (None, 0.25), (None, 0.25), ("decayed", 0.125)]


@settings(max_examples=60, deadline=None)
@given(losses=st.lists(st.floats(0.0, 5.0), max_size=40), decay=st.floats(0.05, 1.0),
       patience=st.integers(1, 3), floor_fraction=st.floats(0.0, 1.0), at_floor=st.sampled_from(["stop", "continue"]))
def test_plateau_never_goes_below_the_floor_and_stops_only_stalled_at_it(losses, decay, patience, floor_fraction,
                                                                          at_floor):
    base = 0.01
    floor = base * floor_fraction
    schedule = PlateauSchedule(base, decay, patience=patience, min_lr=floor, at_floor=at_floor)
    optimizer = _Optimizer(base)
    for loss in losses:
        was_at_floor = floor > 0 and optimizer.lr <= floor
        stalled = schedule.after_evaluation(optimizer, loss)
        assert floor <= optimizer.lr <= base
        if schedule.last_action == "floor":
            assert optimizer.lr == floor and not was_at_floor
        # At the floor, the patience-th stall in a row ends the run (or is ignored); nothing else does.
        expected = at_floor == "stop" and stalled and was_at_floor and schedule.bad_evals % patience == 0
        assert schedule.exhausted == expected
        if schedule.exhausted:
            assert schedule.last_action == "exhausted"
            break


def test_plateau_at_the_floor_stops_or_continues():
    for at_floor, expected in (("stop", [None, "floor", "exhausted"]), ("continue", [None, "floor", None])):
        schedule, optimizer = PlateauSchedule(1.0, 0.1, min_lr=0.5, at_floor=at_floor), _Optimizer(1.0)
        actions = []
        for loss in (1.0, 1.0, 1.0):
            schedule.after_evaluation(optimizer, loss)
            actions.append(schedule.last_action)
        assert actions == expected and optimizer.lr == 0.5
        assert schedule.exhausted == (at_floor == "stop")


def test_cosine_warms_up_then_follows_half_a_cosine_down_to_the_floor():
    schedule, optimizer = CosineSchedule(0.2, min_lr=0.02, warmup=0.2), _Optimizer(0.0)
    for fraction, expected in [(0.0, 0.02), (0.1, 0.11), (0.2, 0.2), (0.6, 0.11), (1.0, 0.02), (1.5, 0.02)]:
        schedule.before_step(optimizer, fraction)
        assert optimizer.lr == pytest.approx(expected, abs=1e-12), fraction
    values = []
    for step in range(101):
        schedule.before_step(optimizer, step / 100)
        values.append(optimizer.lr)
    assert min(values) >= 0.02 and max(values) == pytest.approx(0.2)
    assert values[:21] == sorted(values[:21]) and values[20:] == sorted(values[20:], reverse=True)


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match="min_lr must be a number in"):
        PlateauSchedule(0.1, min_lr=0.2)
    with pytest.raises(ConfigError, match="patience"):
        make_schedule("plateau", 0.1, patience=0)
    with pytest.raises(ConfigError, match="warmup"):
        make_schedule("cosine", 0.1, warmup=1.0)
    with pytest.raises(ConfigError, match="`min_lr` .* must not exceed `lr`"):
        TrainOptions(lr=0.01, min_lr=0.1).validate()
    assert TrainOptions(lr=0.01).min_lr == pytest.approx(1e-4)  # the default floor: lr / 100
    # Runs saved before these settings existed keep their schedule: no floor, decay at every stall.
    saved = TrainOptions.from_saved({"lr": 0.01, "schedule": "plateau"})
    assert (saved.decay_patience, saved.min_lr, saved.at_min_lr, saved.warmup) == (1, 0.0, "continue", 0.0)


# --- in a run --------------------------------------------------------------------------------
STALLING = dict(layers=1, hidden=8, embed=4, seq_len=8, batch_size=2, eval_every=1, log_every=1, backend="numpy",
                lr=1e-7, lr_decay=0.5, decay_patience=1, min_lr=1e-8, steps=50)  # too slow to ever improve


@pytest.fixture
def corpus(tmp_path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return str(path)


def test_a_stalled_run_stops_at_the_floor_with_a_clear_line(tmp_path, corpus):
    lines: list[str] = []
    summary = train_language_model(TrainOptions(corpus=corpus, **STALLING), tmp_path / "run", log=lines.append)
    # eval 1 is the best; stalls 2-4 halve the rate, stall 5 lands on the floor, stall 6 stops.
    assert summary.steps == 6 and "floor `min_lr`" in summary.stopped_because
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["lr"] for r in records if r["event"] in ("train", "eval")]
    assert min(rates) == 1e-8 and all(rate >= 1e-8 for rate in rates)
    assert sum("its floor `min_lr`" in line for line in lines) == 1
    assert "stopping" in lines[-1]


def test_the_cli_names_the_flags_when_the_floor_is_reached(tmp_path, corpus):
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in STALLING.items()]
    result = CliRunner().invoke(cli, ["train", corpus, *flags, "--out", str(tmp_path / "run"), "--sample-length", "0"],
                                prog_name="mlxrnn")
    assert result.exit_code == 0, result.output
    assert "its floor --min-lr" in result.stderr and "--at-min-lr continue" in result.stderr
    assert result.stdout.startswith("learning rate at its floor --min-lr")


def test_continue_at_the_floor_uses_the_whole_budget(tmp_path, corpus):
    options = TrainOptions(corpus=corpus, **{**STALLING, "steps": 9}, at_min_lr="continue")
    summary = train_language_model(options, tmp_path / "run")
    assert summary.steps == 9 and summary.stopped_because == "step limit reached"
    records = [json.loads(line) for line in (Path(tmp_path / "run") / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records if r["event"] == "eval"][-3:] == [1e-8] * 3
    assert not math.isnan(summary.best_val_loss)
