"""The language-model run loop's bookkeeping (mlxrnn/run/loop.py), on NumPy with a tiny model.

What a run reports must be what it did: its position in the corpus (windows, epochs), the
budget it stopped at (steps, epochs, minutes), the schedule's fraction of the run, the token
rate, and that it lets go of its run directory when it ends.
"""

from __future__ import annotations

import json
import math
import time

import pytest

from mlxrnn.errors import DataError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.io.run_lock import RunLock
from mlxrnn.run.loop import ETA_AFTER, LanguageModelRun, TrainOptions, train_language_model
from mlxrnn.text.corpus import bundled_corpus_path

TINY = dict(layers=1, hidden=6, embed=4, seq_len=8, batch_size=2, log_every=1, dropout=0.0, backend="numpy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("loop") / "corpus.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:700], encoding="utf-8")
    return path


def _records(run, event=None):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if event is None or r["event"] == event]


def test_windows_and_epochs_are_counted_across_the_epochs_end(tmp_path, corpus):
    run = tmp_path / "run"
    probe = train_language_model(TrainOptions(corpus=str(corpus), steps=1, eval_every=100, **TINY), tmp_path / "p")
    per_epoch = _records(tmp_path / "p")[0]["steps_per_epoch"]
    assert 3 <= per_epoch <= 40 and probe.steps == 1
    steps = per_epoch + 2
    summary = train_language_model(TrainOptions(corpus=str(corpus), steps=steps, eval_every=100, **TINY), run)
    assert summary.steps == steps and summary.stopped_because == "step limit reached"
    assert summary.epochs_completed == pytest.approx(1 + 2 / per_epoch)
    state = load_checkpoint(run, tag="last").meta["training"]["state"]
    assert (state["step"], state["epoch"], state["window"]) == (steps, 1, 2)
    full = TINY["batch_size"] * TINY["seq_len"]  # every window but the epoch's last, shorter one
    assert (steps - 1) * full < state["tokens"] < steps * full
    epochs = [r["epoch"] for r in _records(run, "train")]
    assert epochs == [0] * (per_epoch - 1) + [1] * 3  # the step that ends an epoch reports the next one


def test_an_epoch_budget_stops_at_the_epochs_last_window(tmp_path, corpus):
    probe = tmp_path / "p"
    train_language_model(TrainOptions(corpus=str(corpus), steps=1, eval_every=100, **TINY), probe)
    per_epoch = _records(probe)[0]["steps_per_epoch"]
    summary = train_language_model(TrainOptions(corpus=str(corpus), epochs=1.5, eval_every=100, **TINY),
                                   tmp_path / "run")
    assert summary.steps == math.ceil(1.5 * per_epoch) and summary.stopped_because == "epoch limit reached"
    both = train_language_model(TrainOptions(corpus=str(corpus), epochs=1.0, steps=2, eval_every=100, **TINY),
                                tmp_path / "both")
    assert both.steps == 2 and both.stopped_because == "step limit reached"  # the smaller budget wins


def test_the_token_rate_is_the_tokens_over_the_time_trained(tmp_path, corpus):
    run = tmp_path / "run"
    started = time.perf_counter()
    summary = train_language_model(TrainOptions(corpus=str(corpus), steps=4, eval_every=2, **TINY), run)
    wall = time.perf_counter() - started
    per_step = TINY["batch_size"] * TINY["seq_len"]
    for record in _records(run, "train"):
        assert record["tokens_per_second"] > 0
        assert record["tokens_per_second"] * record["elapsed"] == pytest.approx(record["step"] * per_step, rel=1e-9)
    last = _records(run, "train")[-1]
    # the summary's rate counts the evaluations' time too, so it is at most the last step's
    assert 0 < summary.tokens_per_second <= last["tokens_per_second"]
    seconds = 4 * per_step / summary.tokens_per_second  # the session's time, evaluations included
    assert last["elapsed"] <= seconds <= wall


def test_a_cosine_schedule_sees_the_fraction_of_the_steps_done(tmp_path, corpus):
    run = tmp_path / "run"
    lr, steps = 0.01, 5
    options = TrainOptions(corpus=str(corpus), steps=steps, eval_every=100, lr=lr, schedule="cosine", **TINY)
    train_language_model(options, run)
    rates = [r["lr"] for r in _records(run, "train")]
    floor = options.min_lr or 0.0
    assert options.warmup in (0, 0.0, None)
    # step n is taken at the fraction (n - 1) / steps of the run
    expected = [floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * (step - 1) / steps)) for step in range(1, 6)]
    assert rates == pytest.approx(expected, rel=1e-12)


def test_a_time_budget_alone_stops_the_run_and_reports_an_eta(tmp_path, corpus):
    seen = []
    summary = train_language_model(TrainOptions(corpus=str(corpus), minutes=0.001, eval_every=1000, **TINY),
                                   tmp_path / "run", progress=seen.append)
    assert summary.stopped_because == "time budget reached" and summary.steps >= 1
    train = [p for p in seen if p.event == "train"]
    assert train and all(p.total_steps is None for p in train)
    assert all(p.eta_seconds is not None and p.eta_seconds <= 0.06 for p in train)
    assert all(p.eta_seconds == pytest.approx(0.06 - p.elapsed) for p in train)


def test_the_eta_of_a_step_budget_extrapolates_the_time_per_step(tmp_path, corpus):
    """No estimate for the first ETA_AFTER steps (compilation, caches); then the time per step since
    then times the steps left."""
    seen = []
    train_language_model(TrainOptions(corpus=str(corpus), steps=6, eval_every=100, **TINY), tmp_path / "run",
                         progress=seen.append)
    train = [p for p in seen if p.event == "train"]
    assert [p.step for p in train] == [1, 2, 3, 4, 5, 6] and all(p.total_steps == 6 for p in train)
    origin = train[ETA_AFTER - 1].elapsed
    for p in train:
        if p.step <= ETA_AFTER:
            assert p.eta_seconds is None
        else:
            assert p.eta_seconds == pytest.approx((6 - p.step) * (p.elapsed - origin) / (p.step - ETA_AFTER))


def test_a_run_lets_go_of_its_directory_when_it_ends(tmp_path, corpus):
    path = tmp_path / "run"
    run = LanguageModelRun(TrainOptions(corpus=str(corpus), steps=1, eval_every=100, **TINY), path)
    with pytest.raises(DataError, match="in use by another mlxrnn process"):
        RunLock(path)
    run.train()  # the run object is still alive here: the lock must be released explicitly
    RunLock(path).release()
    resumed = LanguageModelRun(TrainOptions(steps=2, backend="numpy"), path, resume=True)
    with pytest.raises(DataError, match="in use"):
        RunLock(path)
    resumed.close()
    RunLock(path).release()


class _Stub:
    """What LanguageModelRun._check_divergence reads, and the records it writes."""

    def __init__(self, run_dir, replacing=False, clip=5.0):
        from types import SimpleNamespace

        from mlxrnn.run.state import RunState

        self.state, self.run_dir, self.records = RunState(), run_dir, []
        self.directory = SimpleNamespace(replacing=replacing)
        self.options = SimpleNamespace(clip=clip)
        self.optimizer = SimpleNamespace(lr=0.002)

    def _metrics(self, record):
        self.records.append(record)

    def check(self, loss, grad_norm=1.0, step=7):
        LanguageModelRun._check_divergence(self, loss, grad_norm, step)


def test_divergence_is_a_loss_over_three_times_the_first_or_not_finite(tmp_path):
    from mlxrnn.errors import TrainingDiverged

    run = _Stub(tmp_path)
    with pytest.raises(TrainingDiverged, match="at step 1: the loss became nan"):
        run.check(math.nan, step=1)  # a first loss that is not finite is no reference
    assert run.state.initial_loss is None and run.records[-1] == {"event": "diverged", "step": 1, "loss": None}
    run.check(2.0, step=2)
    assert run.state.initial_loss == 2.0
    run.check(6.0, step=3)  # exactly 3x: still training
    run.check(0.5, step=4)
    assert run.state.initial_loss == 2.0 and len(run.records) == 1
    with pytest.raises(TrainingDiverged, match=r"training stopped at step 7: the loss rose to 6\.001 \(over 3× the first"):
        run.check(6.001)
    assert run.records[-1] == {"event": "diverged", "step": 7, "loss": 6.001}
    with pytest.raises(TrainingDiverged, match="at step 8: the loss became inf;"):
        run.check(math.inf, step=8)
    with pytest.raises(TrainingDiverged, match="at step 9: the gradient norm became nan;") as error:
        run.check(1.0, grad_norm=math.nan, step=9)
    assert "no checkpoint had been saved yet; try a lower `lr` (now 0.002) or a smaller `clip` (now 5)" in str(error.value)
    (tmp_path / "last.json").write_text("{}")
    with pytest.raises(TrainingDiverged, match=f"the last good checkpoint is kept in {tmp_path}"):
        run.check(math.inf)
    unclipped = _Stub(tmp_path, replacing=True, clip=None)
    with pytest.raises(TrainingDiverged, match=f"the run it was to replace in {tmp_path} is unchanged; .* or `clip` 5$"):
        unclipped.check(math.nan)
