"""Carried state observed: outside the layer, where truncated BPTT and streaming evaluation live.

A language model reads a stream in windows and hands each window's final hidden state to the
next. Nothing else observes that hand-over, so these tests do:

* every evaluator (validation during training, ``evaluate_ids``, ``evaluate_text``) gives over
  windows what one forward pass over the whole sequence gives (float64, 1e-9);
* the training loop's initial state is None exactly at the first window of each epoch and the
  previous window's final state otherwise (recorded through the model the trainer calls), and
  the same after ``--resume`` and in a data-parallel run.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.lm.evaluation import evaluate_ids, evaluate_text, evaluate_windows
from mlxrnn.lm.model import LanguageModel, language_model_config
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.run.loop import LanguageModelRun, TrainOptions
from mlxrnn.text.batching import LMBatcher
from mlxrnn.text.corpus import bundled_corpus_path
from mlxrnn.text.tokenizers import CharTokenizer
from mlxrnn.text.vocabulary import Vocabulary

from .test_distributed import launch_two, needs_launcher, needs_mlx


def evaluate_batches(lm, batcher):
    """The training run's validation: mean loss of the one evaluator over the batcher's windows."""
    return evaluate_windows(lm, batcher).loss

TEXT = bundled_corpus_path().read_text(encoding="utf-8")[:1500]
CELLS = [("gru", {"variant": "full"}), ("lstm", {})]  # a state that is one array, and an (h, c) pair
CELL_IDS = ["gru", "lstm"]


def _parts(state) -> list:
    return list(state) if isinstance(state, tuple) else [state]


def _language_model(cell: str, options: dict, seed: int = 0) -> LanguageModel:
    """A small float64 character model with weights large enough that the state matters."""
    vocab = Vocabulary.build(list(TEXT), level="char")
    config = language_model_config(len(vocab), cell=cell, hidden_size=12, num_layers=2, embed_size=6,
                                   cell_options=options, seed=seed)
    model = SequenceModel(config, backend="numpy", dtype="float64")
    rng = np.random.default_rng(seed)
    model.load_parameters({name: rng.normal(0.0, 0.5, size=value.shape) for name, value in model.parameters().items()})
    return LanguageModel(model, vocab, CharTokenizer())


def _mean_nll_in_one_pass(lm: LanguageModel, inputs: np.ndarray, targets: np.ndarray) -> float:
    """The reference: one forward over whole rows (B, N), log-softmax by np.logaddexp.reduce."""
    logits, _, _ = lm.model.forward(inputs)
    logits = np.asarray(logits, dtype=np.float64)
    log_norm = np.logaddexp.reduce(logits, axis=-1)
    picked = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return float(np.mean(log_norm - picked))


def _mean_nll_resetting_every_window(lm: LanguageModel, inputs: np.ndarray, targets: np.ndarray, window: int):
    """What an evaluator that forgets the state between windows computes (must differ)."""
    total = 0.0
    for start in range(0, inputs.shape[1], window):
        total += _mean_nll_in_one_pass(lm, inputs[:, start:start + window], targets[:, start:start + window]) * (
            targets[:, start:start + window].size)
    return total / targets.size


# --- evaluators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cell,options", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("batch_size,seq_len", [(3, 16), (5, 7), (1, 50)])
def test_validation_over_windows_equals_one_pass_over_the_streams(cell, options, batch_size, seq_len):
    lm = _language_model(cell, options)
    batcher = LMBatcher(lm.encode(TEXT[:600]), batch_size, seq_len, name="validation split")
    assert len(batcher) >= 3  # several windows, the last one shorter or not
    streams = batcher.streams  # (B, L + 1): inputs are positions 0..L-1, targets 1..L
    reference = _mean_nll_in_one_pass(lm, streams[:, :-1], streams[:, 1:])
    assert evaluate_batches(lm, batcher) == pytest.approx(reference, rel=1e-9, abs=1e-9)
    forgetful = _mean_nll_resetting_every_window(lm, streams[:, :-1], streams[:, 1:], seq_len)
    assert abs(forgetful - reference) > 1e-6  # the test can tell carrying from forgetting


@pytest.mark.parametrize("cell,options", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("window", [1, 4, 37, 10_000])
def test_evaluate_ids_and_text_over_windows_equal_one_pass(cell, options, window):
    lm = _language_model(cell, options)
    text = TEXT[:300]
    ids = lm.encode(text)
    inputs = np.concatenate([[lm.start_id], ids[:-1]])[None, :]  # the first token is predicted from the start token
    reference = _mean_nll_in_one_pass(lm, inputs, ids[None, :])
    progress = []
    result = evaluate_ids(lm, ids, window=window, progress=lambda done, total: progress.append((done, total)))
    assert result.num_tokens == ids.size
    assert result.loss == pytest.approx(reference, rel=1e-9, abs=1e-9)
    assert progress[-1] == (ids.size, ids.size) and len(progress) == -(-ids.size // window)
    assert evaluate_text(lm, text, window=window).loss == pytest.approx(reference, rel=1e-9, abs=1e-9)
    if window < ids.size:
        assert abs(_mean_nll_resetting_every_window(lm, inputs, ids[None, :], window) - reference) > 1e-6


# --- the training loop --------------------------------------------------------------------------

RUN = dict(layers=2, hidden=8, embed=4, seq_len=32, batch_size=8, dropout=0.2, eval_every=1000, log_every=1000,
           backend="numpy")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def record_states(run: LanguageModelRun) -> list[dict]:
    """Record, for every training step, the initial state the trainer passed and the final state
    the model returned (as NumPy), by wrapping the model's loss function."""
    model, xp, records = run.lm.model, run.lm.xp, []
    original = model.loss_and_grads

    def recording(batch, training=True, rng=None):
        loss, grads, aux = original(batch, training=training, rng=rng)
        initial = batch.get("initial_state")
        records.append({
            "inputs": np.array(batch["inputs"]),
            "initial": None if initial is None else [xp.to_numpy(p).copy() for p in _parts(initial)],
            "final": [xp.to_numpy(p).copy() for p in _parts(aux["final_state"])],
        })
        return loss, grads, aux

    model.loss_and_grads = recording
    return records


def assert_carried_within_epochs(records: list[dict], batcher, first_window: int = 0, previous_final=None) -> None:
    """Window k == 0 starts from None; any other window from the previous window's final state."""
    per_epoch = len(batcher)
    assert len(records) > per_epoch + 1, "the run must cross an epoch boundary"
    for i, record in enumerate(records):
        window = (first_window + i) % per_epoch
        np.testing.assert_array_equal(record["inputs"], batcher.window(window)[0], err_msg=f"step {i}: window")
        if window == 0:
            assert record["initial"] is None, f"step {i} starts epoch {i // per_epoch} but carries a state"
            continue
        expected = records[i - 1]["final"] if i > 0 else previous_final
        assert record["initial"] is not None, f"step {i} (window {window}) dropped the carried state"
        for got, want in zip(record["initial"], expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"step {i} (window {window})")


def test_training_carries_the_state_within_an_epoch_and_resets_it_at_each_start(tmp_path, corpus):
    run = LanguageModelRun(TrainOptions(corpus=corpus, steps=14, **RUN), tmp_path / "run")
    records = record_states(run)
    run.train()
    assert len(run.train_batches) == 6  # 14 steps: epochs start at steps 0, 6 and 12
    assert len(records) == 14
    assert_carried_within_epochs(records, run.train_batches)


@pytest.mark.parametrize("stop_at", [8, 12], ids=["mid-epoch", "at-an-epoch-start"])
def test_resumed_training_carries_the_same_states(tmp_path, corpus, stop_at):
    whole = LanguageModelRun(TrainOptions(corpus=corpus, steps=14, **RUN), tmp_path / "whole")
    expected = record_states(whole)
    whole.train()
    LanguageModelRun(TrainOptions(corpus=corpus, steps=stop_at, **RUN), tmp_path / "split").train()
    carry = {k: v for k, v in load_checkpoint(tmp_path / "split", tag="last").optimizer_tensors.items()
             if k.startswith("carry/")}
    if stop_at % len(whole.train_batches) == 0:
        assert carry == {}  # the next window starts an epoch: nothing to carry
    else:
        saved = [carry[f"carry/{k}"] for k in range(len(carry))]
        for got, want in zip(saved, expected[stop_at - 1]["final"], strict=True):
            np.testing.assert_array_equal(got, want)
    resumed = LanguageModelRun(TrainOptions(corpus=corpus, steps=14, **RUN), tmp_path / "split", resume=True)
    got = record_states(resumed)
    resumed.train()
    assert len(got) == 14 - stop_at
    for i, (record, reference) in enumerate(zip(got, expected[stop_at:], strict=True)):
        np.testing.assert_array_equal(record["inputs"], reference["inputs"])
        assert (record["initial"] is None) == (reference["initial"] is None), f"resumed step {i}"
        for a, b in zip(record["initial"] or [], reference["initial"] or [], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"resumed step {i}")
    assert_carried_within_epochs(expected, whole.train_batches)  # so the resumed run carries correctly too


# One rank of a data-parallel run that stops and resumes: record (inputs, initial state) per step.
DP_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from mlxrnn.training.distributed import init_distributed
    from mlxrnn.run.loop import LanguageModelRun, TrainOptions

    options, stop_at, run_dir, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist = init_distributed()
    records, steps = {}, []

    def record(run):
        original = run.lm.model.loss_and_grads
        def recording(batch, training=True, rng=None):
            step = len(steps)
            steps.append(step)
            initial = batch.get("initial_state")
            records[f"inputs{step}"] = np.array(batch["inputs"])
            if initial is not None:
                parts = initial if isinstance(initial, tuple) else (initial,)
                records[f"initial{step}"] = np.stack([run.lm.xp.to_numpy(p) for p in parts])
            else:
                records[f"none{step}"] = np.zeros(0)
            return original(batch, training=training, rng=rng)
        run.lm.model.loss_and_grads = recording

    first = LanguageModelRun(TrainOptions(**{**options, "steps": stop_at}), run_dir, distributed=dist)
    record(first)
    first.train()
    dist.barrier()  # rank 0 has written the checkpoint every rank resumes from
    resumed = LanguageModelRun(TrainOptions(**options), run_dir, resume=True, distributed=dist)
    record(resumed)
    resumed.train()
    np.savez(f"{out}/states{dist.rank}.npz", **records)
    """
)


@needs_mlx
@needs_launcher
def test_data_parallel_ranks_carry_their_rows_of_the_state_across_epochs_and_resume(tmp_path, corpus):
    """2 processes × B streams, stopped mid-epoch and resumed, start every window from their rows
    of the state one process with 2·B streams carries, and from None at the same windows."""
    half = RUN["batch_size"] // 2
    options = dict(corpus=corpus, steps=14, **{**RUN, "batch_size": half})
    reference_run = LanguageModelRun(TrainOptions(**{**options, "batch_size": 2 * half}), tmp_path / "one")
    reference = record_states(reference_run)
    reference_run.train()
    (tmp_path / "worker.py").write_text(DP_WORKER)
    launch_two(sys.executable, "worker.py", json.dumps(options), "8", str(tmp_path / "two"), str(tmp_path),
               cwd=tmp_path)
    ranks = [dict(np.load(tmp_path / f"states{r}.npz")) for r in (0, 1)]
    per_epoch = len(reference_run.train_batches)
    for step, expected in enumerate(reference):
        for rank, recorded in enumerate(ranks):
            rows = slice(rank * half, (rank + 1) * half)
            np.testing.assert_array_equal(recorded[f"inputs{step}"], expected["inputs"][rows])
            if step % per_epoch == 0:
                assert f"none{step}" in recorded and f"initial{step}" not in recorded, f"rank {rank} step {step}"
                assert expected["initial"] is None
            else:
                got = recorded[f"initial{step}"]
                want = np.stack([part[:, rows] for part in expected["initial"]])
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"rank {rank} step {step}")
    assert all(sum(key.startswith("inputs") for key in recorded) == len(reference) == 14 for recorded in ranks)
