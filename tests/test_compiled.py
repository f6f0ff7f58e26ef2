"""The compiled MLX training step and the on-device sampler compute what the eager paths compute.

* Several Adam steps with clipping (by norm and by value), dropout and a carried state give the
  same losses, gradient norms and weights compiled, eager and on NumPy (float32: compiled vs
  eager 1e-6 relative, vs NumPy the backends' usual 2e-4/2e-5; float64 on MLX's CPU: compiled
  vs eager to round-off, vs NumPy to 1e-6 because MLX's float64 exp is float32-accurate there).
* The step reads nothing back from the device; bad batches fail on the host before any update.
* Recompilation is bounded: a learning-rate schedule never retraces, variable lengths compile once
  per time bucket, and the cache is an LRU.
* A language-model run resumed on the compiled path is bit-for-bit the uninterrupted run.
* On-device filtering gives the host's next-token distribution; compiled sampling draws the
  same ids as eager sampling for a fixed key, and a seed reproduces a text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlxrnn
from mlxrnn import Adam, SequenceClassifier, SequenceClassifierConfig, SequenceModel, SequenceModelConfig, Trainer
from mlxrnn.errors import ConfigError, ShapeError, TrainingDiverged
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.models.decoding import SamplingOptions, next_token_distribution
from mlxrnn.run.loop import TrainOptions, train_language_model

pytestmark = pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")

CELLS = [("rnn", {"activation": "tanh"}), ("gru", {"variant": "full"}), ("lstm", {"peephole": False})]
CELL_IDS = ["rnn", "gru", "lstm"]
VOCAB = 9


def _model(cell, options, backend, dtype="float32", **overrides):
    config = dict(input_size=VOCAB, embed_size=5, hidden_size=6, num_layers=2, dropout=0.3, output_size=VOCAB,
                  cell=cell, cell_options=options, seed=4)
    config.update(overrides)
    return SequenceModel(SequenceModelConfig(**config), backend=backend, dtype=dtype)


def _batch(seed, B=3, T=5, **extra):
    rng = np.random.default_rng(seed)
    return {"inputs": rng.integers(0, VOCAB, (B, T)), "targets": rng.integers(0, VOCAB, (B, T)), **extra}


def _train(path, cell, options, steps=5, dtype="float32", batches=None, **overrides):
    """Train on ``path`` ("numpy", "eager" or "compiled"): losses, grad norms, final weights, trainer."""
    model = _model(cell, options, "numpy" if path == "numpy" else "mlx", dtype, **overrides)
    trainer = Trainer(model, Adam(lr=0.02), clip_norm=0.1, clip_value=0.2, rng=np.random.default_rng(5),
                      compile=path == "compiled")
    assert trainer.compiled == (path == "compiled")
    losses, norms, state = [], [], None
    for step in range(steps):
        batch = batches[step] if batches is not None else _batch(step % 3, initial_state=state)
        result = trainer.step(batch)
        state = result.aux["final_state"]
        losses.append(result.loss)
        norms.append(result.grad_norm)
    return np.array(losses), np.array(norms), model.numpy_parameters(), trainer


def _assert_same(a, b, rtol, atol):
    np.testing.assert_allclose(a[0], b[0], rtol=rtol, atol=atol, err_msg="losses")
    np.testing.assert_allclose(a[1], b[1], rtol=rtol, atol=atol, err_msg="gradient norms")
    for name in a[2]:
        np.testing.assert_allclose(a[2][name], b[2][name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("cell,options", CELLS, ids=CELL_IDS)
def test_compiled_step_equals_eager_and_numpy_with_clipping_and_dropout(cell, options):
    compiled, eager, numpy = (_train(path, cell, options) for path in ("compiled", "eager", "numpy"))
    assert compiled[3]._compiled.traces == 1  # one shape: traced once, replayed four times
    assert (compiled[1] > 0.1).all()  # norm clipping was active
    _assert_same(compiled, eager, rtol=1e-6, atol=1e-7)
    _assert_same(compiled, numpy, rtol=2e-4, atol=2e-5)
    assert compiled[0][-1] != compiled[0][0]


#: every dropout site and kind the eager step has (the word-model regularisation of issue 13)
DROPOUT_KINDS = {
    "ends": dict(embed_dropout=0.4, output_dropout=0.3),
    "ends+locked": dict(embed_dropout=0.4, output_dropout=0.3, locked_dropout=True),
    "last+ends": dict(embed_dropout=0.4, output_dropout=0.3, output="last", output_size=4),
}


@pytest.mark.parametrize("kind", list(DROPOUT_KINDS))
def test_compiled_step_draws_every_dropout_kind_as_the_eager_step(kind):
    """Embedding-output, between-layer and head-input dropout, per step or locked, compile too:
    the masks drawn on the host before the step are the eager step's, call for call."""
    overrides = DROPOUT_KINDS[kind]
    batches = None
    if overrides.get("output") == "last":
        rng = np.random.default_rng(2)
        batches = [{"inputs": rng.integers(0, VOCAB, (3, 5)), "targets": rng.integers(0, 4, 3)} for _ in range(5)]
    runs = [_train(path, "lstm", {}, batches=batches, **overrides) for path in ("compiled", "eager", "numpy")]
    assert runs[0][3].compiled and runs[0][3]._compiled.traces == 1
    _assert_same(runs[0], runs[1], rtol=1e-6, atol=1e-7)
    _assert_same(runs[0], runs[2], rtol=2e-4, atol=2e-5)
    plain = _train("compiled", "lstm", {}, batches=batches, **{**overrides, "embed_dropout": 0.0})
    assert not np.allclose(plain[0], runs[0][0])  # the embedding's dropout acted


def test_compiled_step_equals_eager_in_float64():
    cell, options = CELLS[2]
    compiled, eager, numpy = (_train(path, cell, options, dtype="float64") for path in ("compiled", "eager", "numpy"))
    _assert_same(compiled, eager, rtol=1e-12, atol=1e-14)
    _assert_same(compiled, numpy, rtol=1e-6, atol=1e-6)


def test_compiled_step_reads_nothing_back_from_the_device(monkeypatch):
    from mlxrnn.backend.mlx_backend import MLXBackend

    model = _model("lstm", {}, "mlx")
    trainer = Trainer(model, Adam(lr=0.02), clip_norm=0.3)

    def forbidden(*args, **kwargs):
        raise AssertionError("the training step read a device array back")

    monkeypatch.setattr(MLXBackend, "to_numpy", forbidden)
    monkeypatch.setattr(MLXBackend, "item", forbidden)
    results, state = [], None
    for step in range(3):  # the first step traces, the others replay
        results.append(trainer.step(_batch(step, initial_state=state)))
        state = results[-1].aux["final_state"]
    monkeypatch.undo()
    assert all(np.isfinite(r.loss) and r.grad_norm > 0 for r in results)  # read only now


def test_variable_lengths_compile_once_per_time_bucket_and_match_eager():
    rng = np.random.default_rng(1)
    batches = []
    for T in (3, 9, 16, 5, 17, 30, 12, 1):  # buckets of 16 steps: 16, 16, 16, 16, 32, 32, 16, 16
        lengths = rng.integers(1, T + 1, size=3)
        lengths[0] = T
        batches.append(_batch(T, T=T, lengths=lengths))
    compiled = _train("compiled", "gru", {}, steps=len(batches), batches=batches)
    eager = _train("eager", "gru", {}, steps=len(batches), batches=batches)
    assert compiled[3]._compiled.traces == 2
    _assert_same(compiled, eager, rtol=1e-5, atol=1e-6)


def test_a_learning_rate_schedule_changes_numbers_not_the_graph():
    results = {}
    for compiled in (True, False):
        model = _model("gru", {}, "mlx")
        trainer = Trainer(model, Adam(lr=0.05), clip_norm=1.0, rng=np.random.default_rng(2), compile=compiled)
        losses = []
        for step in range(4):
            trainer.optimizer.lr = 0.05 * 0.5**step  # e.g. a cosine or plateau schedule
            losses.append(trainer.step(_batch(step)).loss)
        results[compiled] = (losses, model.numpy_parameters(), trainer)
    assert results[True][2]._compiled.traces == 1
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6)
    for name, value in results[True][1].items():
        np.testing.assert_allclose(value, results[False][1][name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_the_trace_cache_is_bounded():
    model = _model("rnn", {}, "mlx", dropout=0.0)
    trainer = Trainer(model, Adam(lr=0.01))
    step = trainer._compiled
    step.max_traces = 2
    for T in (4, 5, 6, 4):  # the third shape evicts the first, which is then traced again
        trainer.step(_batch(0, T=T))
    assert step.traces == 4 and len(step._functions) == 2


def test_bad_batches_fail_on_the_host_before_any_update():
    model = _model("lstm", {}, "mlx")
    trainer = Trainer(model, Adam(lr=0.02), clip_norm=0.3)
    before = model.numpy_parameters()
    good = _batch(0)
    bad_ids, bad_targets = _batch(0), _batch(0)
    bad_ids["inputs"][1, 2] = VOCAB
    bad_targets["targets"][0, 0] = -3
    cases = [
        (bad_ids, ConfigError, f"token id {VOCAB} is out of range"),
        (bad_targets, ConfigError, "targets must lie in"),
        ({**good, "lengths": np.array([5, 6, 1])}, ConfigError, "lengths must lie in"),
        ({**good, "initial_state": (np.zeros((2, 3, 6)), np.zeros((2, 4, 6)))}, ShapeError, "initial_state"),
        ({"inputs": good["inputs"]}, ConfigError, "'inputs' and 'targets'"),
        ({**good, "inputs": good["inputs"][:, :, None]}, ShapeError, "inputs must have shape"),
    ]
    for batch, error, message in cases:
        with pytest.raises(error, match=message):
            trainer.step(batch)
    after = model.numpy_parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before) and trainer.optimizer.step_count == 0
    assert np.isfinite(trainer.step(good).loss) and trainer.optimizer.step_count == 1


def test_the_trainer_compiles_only_where_it_applies():
    assert not Trainer(_model("gru", {}, "numpy"), Adam()).compiled
    assert Trainer(_model("gru", {}, "mlx"), Adam()).compiled
    assert not Trainer(_model("gru", {}, "mlx"), Adam(), compile=False).compiled
    assert not Trainer(_model("gru", {}, "mlx"), Adam(), grad_transform=lambda loss, grads: (loss, grads)).compiled
    classifier = SequenceClassifier(SequenceClassifierConfig(input_size=5, num_classes=2, hidden_size=4),
                                    backend="mlx")
    assert not Trainer(classifier, Adam()).compiled
    with pytest.raises(ConfigError, match="compile must be True or False"):
        Trainer(_model("gru", {}, "mlx"), Adam(), compile="yes")


def _losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}, records[0]


def test_resume_on_the_compiled_path_is_bit_exact(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(mlxrnn.text.corpus.bundled_corpus_path().read_text(encoding="utf-8")[:3000], encoding="utf-8")
    options = dict(corpus=str(corpus), backend="mlx", layers=2, hidden=8, embed=4, seq_len=8, batch_size=3,
                   dropout=0.3, embed_dropout=0.0, output_dropout=0.0,  # between layers: the compiled step's masks
                   eval_every=3, log_every=1)
    train_language_model(TrainOptions(steps=8, **options), tmp_path / "whole")
    train_language_model(TrainOptions(steps=4, **options), tmp_path / "split")
    train_language_model(TrainOptions(steps=8, **options), tmp_path / "split", resume=True)
    (whole, start), (split, _) = _losses(tmp_path / "whole"), _losses(tmp_path / "split")
    assert start["backend"] == "mlx" and start["compiled"] is True
    assert [whole[s] for s in range(1, 9)] == [split[s] for s in range(1, 9)]  # bit-for-bit
    a = load_checkpoint(tmp_path / "whole", tag="last").weights
    b = load_checkpoint(tmp_path / "split", tag="last").weights
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_a_run_reads_each_step_only_after_queueing_the_next(tmp_path, monkeypatch):
    """Issue 11, item 2: on the compiled path the LM run reads a step's loss and gradient norm only
    once the next step is queued (evaluations read at once), and the records it writes, the
    learning rate of a cosine schedule included, are those of the eager run, which reads every
    step as it goes."""
    from mlxrnn.training.trainer import StepResult, Trainer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(mlxrnn.text.corpus.bundled_corpus_path().read_text(encoding="utf-8")[:3000], encoding="utf-8")
    options = dict(corpus=str(corpus), backend="mlx", hidden=8, embed=4, seq_len=8, batch_size=3, eval_every=4,
                   log_every=1, schedule="cosine", warmup=0.25, steps=9)
    events: list = []
    step, read = Trainer.step, StepResult._read

    def logged_step(self, batch):
        result = step(self, batch)
        result.test_number = len([e for e in events if e[0] == "step"]) + 1  # ids of freed results repeat
        events.append(("step", result.test_number))
        return result

    def logged_read(self):
        if self._values is None:
            events.append(("read", self.test_number))
        return read(self)

    monkeypatch.setattr(Trainer, "step", logged_step)
    monkeypatch.setattr(StepResult, "_read", logged_read)
    train_language_model(TrainOptions(**options), tmp_path / "compiled")
    steps = [key for kind, key in events if kind == "step"]
    reads = {key: position for position, (kind, key) in enumerate(events) if kind == "read"}
    assert sorted(reads) == sorted(steps)  # every step read exactly once
    for n, key in enumerate(steps[:-1], start=1):
        next_queued = events.index(("step", steps[n]))
        if n % options["eval_every"]:
            assert reads[key] > next_queued, f"step {n} was read before step {n + 1} was queued"
        else:
            assert reads[key] < next_queued, f"step {n} is evaluated, so it is read at once"
    monkeypatch.undo()
    train_language_model(TrainOptions(compile=False, **options), tmp_path / "eager")
    records = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
               for name in ("compiled", "eager")}
    train = {name: [r for r in rs if r["event"] == "train"] for name, rs in records.items()}
    assert [r["step"] for r in train["compiled"]] == list(range(1, 10))
    assert [(r["step"], r["lr"], r["epoch"]) for r in train["compiled"]] == [
        (r["step"], r["lr"], r["epoch"]) for r in train["eager"]]
    np.testing.assert_allclose([r["loss"] for r in train["compiled"]], [r["loss"] for r in train["eager"]],
                               rtol=1e-4)


def test_divergence_on_the_compiled_path_names_the_step_and_keeps_good_weights(tmp_path):
    """With the lagged read, a diverged step is still named by its own number, and the checkpoint
    kept is the last good one, as on the eager path."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(mlxrnn.text.corpus.bundled_corpus_path().read_text(encoding="utf-8")[:3000], encoding="utf-8")
    options = dict(corpus=str(corpus), backend="mlx", hidden=8, embed=4, seq_len=8, batch_size=3, eval_every=2,
                   log_every=1, lr=50.0, clip=None, optimizer="sgd", steps=40)
    found = {}
    for compiled in (True, False):
        run = tmp_path / f"run-{compiled}"
        with pytest.raises(TrainingDiverged) as error:
            train_language_model(TrainOptions(compile=compiled, **options), run)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["event"] == "diverged"
        step = records[-1]["step"]
        assert f"training stopped at step {step}:" in str(error.value)
        losses = {r["step"]: r["loss"] for r in records if r["event"] == "train"}
        assert max(losses) == step - 1  # every step before the diverged one was logged, not the diverged one
        kept = load_checkpoint(run, tag="last")
        assert kept.meta["training"]["state"]["step"] < step
        assert all(np.all(np.isfinite(w)) for w in kept.weights.values())
        found[compiled] = step
    assert found[True] == found[False]


# --- sampling on the device ---------------------------------------------------------------------------


@pytest.mark.parametrize("options", [SamplingOptions(), SamplingOptions(temperature=0.5, top_k=3),
                                     SamplingOptions(top_p=0.7), SamplingOptions(temperature=2.0, top_k=5, top_p=0.9)],
                         ids=["plain", "top_k", "top_p", "all"])
def test_device_filtering_gives_the_host_distribution(options):
    import mlx.core as mx

    from mlxrnn.lm.mlx_sampling import filter_logits

    logits = np.random.default_rng(2).normal(scale=3.0, size=(4, 13))
    banned = [0, 5]
    ban = np.zeros(13, bool)
    ban[banned] = True
    device = np.array(mx.softmax(filter_logits(mx.array(logits.astype(np.float32)), options, mx.array(ban)), axis=-1))
    np.testing.assert_allclose(device, next_token_distribution(logits, options, banned), atol=2e-6)


@pytest.mark.parametrize("cell,options", CELLS, ids=CELL_IDS)
def test_compiled_sampling_draws_what_eager_sampling_draws(cell, options):
    from mlxrnn.lm.mlx_sampling import TokenSampler

    model = _model(cell, options, "mlx")
    context = np.array([[1, 2, 3], [4, 4, 0]])
    sampling = SamplingOptions(temperature=1.5, top_k=6)
    streams = [TokenSampler(model, sampling, banned=[0], compiled=compiled).stream(context, seed=11)
               for compiled in (True, False)]
    drawn = [[next(stream) for _ in range(25)] for stream in streams]
    assert drawn[0] == drawn[1]
    tokens = {t for row in drawn[0] for t in row}
    assert 0 not in tokens and len(tokens) > 3


def test_a_seed_reproduces_the_text_on_mlx():
    from mlxrnn.lm.model import LanguageModel, language_model_config
    from mlxrnn.lm.sampling import sample
    from mlxrnn.text.tokenizers import make_tokenizer
    from mlxrnn.text.vocabulary import Vocabulary

    vocab = Vocabulary.build(list("abcdefgh \n"), level="char")
    config = language_model_config(len(vocab), cell="gru", hidden_size=8, num_layers=1, embed_size=4, seed=1)
    lm = LanguageModel(SequenceModel(config, backend="mlx"), vocab, make_tokenizer("char"))
    first = sample(lm, length=40, num_samples=2, seed=42)
    assert first.texts == sample(lm, length=40, num_samples=2, seed=42).texts
    assert first.texts != sample(lm, length=40, num_samples=2, seed=43).texts
    banned = {vocab.pad_id, vocab.unk_id, vocab.eos_id}
    assert not banned & {t for ids in first.ids for t in ids} and all(len(ids) == 40 for ids in first.ids)
    streamed = []
    sample(lm, length=40, seed=42, prime="ab", on_token=lambda i, text: streamed.append(text))
    assert "".join(streamed) == sample(lm, length=40, seed=42, prime="ab").texts[0]
