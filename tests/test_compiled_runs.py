"""A language-model run on the compiled MLX path, where a step's numbers are read late (issue 29).

On MLX the run queues step n + 1 before it reads step n's loss. Two things must still hold:

* item 2: a divergence that lands on an evaluation step (``eval_every=1``: every step) is caught
  before that step is saved; the "last" checkpoint is the step before it, never the diverged one;
* item 3: a signal (SIGINT, SIGTERM) stops the run after the pending step is read and recorded;
  the last training record, the "interrupted" record and the saved checkpoint name one step.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

import mlxrnn
from mlxrnn.errors import Interrupted, TrainingDiverged
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.run.loop import TrainOptions, train_language_model

pytestmark = pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")

TINY = dict(backend="mlx", layers=1, hidden=8, embed=4, seq_len=8, batch_size=3, log_every=1, dropout=0.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(mlxrnn.text.corpus.bundled_corpus_path().read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return path


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_divergence_on_an_evaluation_step_keeps_the_step_before(tmp_path, corpus):
    run = tmp_path / "run"
    options = TrainOptions(corpus=str(corpus), eval_every=1, lr=50.0, clip=None, optimizer="sgd", steps=40, **TINY)
    with pytest.raises(TrainingDiverged) as error:
        train_language_model(options, run)
    records = _records(run)
    assert records[0]["compiled"] is True
    assert records[-1]["event"] == "diverged"
    diverged = records[-1]["step"]
    assert diverged > 1 and f"training stopped at step {diverged}:" in str(error.value)
    kept = load_checkpoint(run, tag="last")
    assert kept.meta["training"]["state"]["step"] == diverged - 1  # evaluated every step: the one before
    assert all(np.all(np.isfinite(w)) for w in kept.weights.values())
    evaluated = [r["step"] for r in records if r["event"] == "eval"]
    assert evaluated == list(range(1, diverged))  # the diverged step was never evaluated nor saved
    assert max(r["step"] for r in records if r["event"] == "train") == diverged - 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_on_the_compiled_path_records_and_saves_the_pending_step(tmp_path, corpus, signum):
    run = tmp_path / "run"
    sent = []

    def progress(p):
        if p.event == "train" and p.step == 3 and not sent:
            sent.append(p.step)
            os.kill(os.getpid(), signum)  # deferred: acted on at the top of the next step

    options = TrainOptions(corpus=str(corpus), eval_every=100, steps=20, **TINY)
    with pytest.raises(Interrupted) as stop:
        train_language_model(options, run, progress=progress)
    assert stop.value.signal_number == signum
    records = _records(run)
    assert records[0]["compiled"] is True
    saved = load_checkpoint(run, tag="last").meta["training"]["state"]["step"]
    # step 3 is reported after step 4 was queued; the signal is acted on before step 5, after step 4 is read
    assert saved == 4 and f"{signal.Signals(signum).name} received: saved step 4" in str(stop.value)
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]  # the pending step is recorded before the save
    assert all(np.isfinite(r["loss"]) for r in train)
    assert records[-1] == {"event": "interrupted", "step": 4, "signal": signal.Signals(signum).name}
    summary = train_language_model(TrainOptions(steps=6, backend="mlx"), run, resume=True)
    assert summary.steps == 6
    resumed = [r["step"] for r in _records(run) if r["event"] == "train"]
    assert resumed == [1, 2, 3, 4, 5, 6]
