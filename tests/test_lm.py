"""Language models end to end: training, exact resume, portability, sampling, scoring, the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlxrnn
from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.lm.model import load_language_model
from mlxrnn.lm.sampling import sample, score
from mlxrnn.models.decoding import SamplingOptions, draw_tokens, next_token_distribution
from mlxrnn.run.loop import TrainingDiverged, TrainOptions, train_language_model
from mlxrnn.text.corpus import bundled_corpus_path

SMALL = dict(layers=1, hidden=24, embed=8, seq_len=16, batch_size=4, eval_every=5, log_every=1)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def word_corpus(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    words = ["the", "apple", "and", "pear", "salad", "is", "good", "a", "green", "fresh"]
    lines = [" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(400)]
    lines += ["the apple and pear salad is good"] * 60
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained_char_run(tmp_path_factory, small_corpus) -> str:
    run = tmp_path_factory.mktemp("runs") / "char"
    train_language_model(TrainOptions(corpus=small_corpus, steps=20, dropout=0.0, lr=0.01, **SMALL), run)
    return str(run)


def _train_losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


def test_resumed_run_equals_uninterrupted_run_exactly(tmp_path, small_corpus):
    options = dict(corpus=small_corpus, dropout=0.3, schedule="plateau", **SMALL)
    train_language_model(TrainOptions(steps=14, **options), tmp_path / "whole")
    train_language_model(TrainOptions(steps=7, **options), tmp_path / "split")
    train_language_model(TrainOptions(steps=14, **options), tmp_path / "split", resume=True)
    whole, split = _train_losses(tmp_path / "whole"), _train_losses(tmp_path / "split")
    assert sorted(whole) == sorted(split) == list(range(1, 15))
    assert [whole[s] for s in range(1, 15)] == [split[s] for s in range(1, 15)]  # bit-for-bit
    a = load_checkpoint(tmp_path / "whole", tag="last").weights
    b = load_checkpoint(tmp_path / "split", tag="last").weights
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_training_learns_and_writes_best_and_last(trained_char_run):
    run = Path(trained_char_run)
    assert (run / "best.json").exists() and (run / "last.json").exists()
    losses = _train_losses(run)
    assert losses[20] < losses[1] - 0.5
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [5, 10, 15, 20]
    assert all(r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2)) for r in evals)


def test_existing_run_directory_is_never_overwritten(tmp_path, small_corpus, trained_char_run):
    before = Path(trained_char_run, "last.json").read_bytes()
    with pytest.raises(ConfigError, match="already exists; pass `resume`"):
        train_language_model(TrainOptions(corpus=small_corpus, steps=1, **SMALL), trained_char_run)
    assert Path(trained_char_run, "last.json").read_bytes() == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not an mlxrnn run"):
        train_language_model(TrainOptions(corpus=small_corpus, steps=1, **SMALL), foreign, force=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_divergence_stops_with_advice_and_keeps_last_good_checkpoint(tmp_path, small_corpus):
    # lr 50 without clipping: the loss passes 3x the first one at step 3; evaluating (and so
    # saving) after every step leaves good checkpoints at steps 1 and 2 to keep.
    options = dict(corpus=small_corpus, lr=50.0, clip=None, optimizer="sgd", **{**SMALL, "eval_every": 1})
    with pytest.raises(TrainingDiverged, match=r"training stopped at step 3: .*the last good checkpoint is kept in "
                                               r".*try a lower `lr` \(now \d+\) or `clip` 5"):
        train_language_model(TrainOptions(steps=40, **options), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["event"] == "diverged" and records[-1]["step"] == 3
    kept = load_checkpoint(tmp_path / "run", tag="last")
    assert kept.meta["training"]["state"]["step"] == 2  # the step before the loss exploded
    # ... holding exactly the weights of a run that stopped there by itself
    train_language_model(TrainOptions(steps=2, **options), tmp_path / "reference")
    reference = load_checkpoint(tmp_path / "reference", tag="last")
    assert sorted(kept.weights) == sorted(reference.weights)
    for name, value in reference.weights.items():
        np.testing.assert_array_equal(kept.weights[name], value, err_msg=name)
    for name, value in reference.optimizer_tensors.items():
        np.testing.assert_array_equal(kept.optimizer_tensors[name], value, err_msg=name)


@pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")
@pytest.mark.parametrize("train_backend,load_backend", [("mlx", "numpy"), ("numpy", "mlx")])
def test_checkpoints_are_portable_across_backends(tmp_path, small_corpus, train_backend, load_backend):
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=small_corpus, steps=3, backend=train_backend, **SMALL), run)
    lm_a, _ = load_language_model(run, backend=train_backend)
    lm_b, _ = load_language_model(run, backend=load_backend)
    ids = lm_a.encode("First Citizen:\nBefore we")[None, :]
    np.testing.assert_allclose(np.exp(lm_b.log_probs(ids)[0]), np.exp(lm_a.log_probs(ids)[0]), atol=1e-6, rtol=1e-4)
    sample_a = sample(lm_a, length=20, seed=3, options=SamplingOptions(greedy=True)).texts
    sample_b = sample(lm_b, length=20, seed=3, options=SamplingOptions(greedy=True)).texts
    assert sample_a == sample_b


def test_sampling_is_reproducible_with_a_seed(trained_char_run):
    lm, _ = load_language_model(trained_char_run, backend="numpy")
    first = sample(lm, length=60, num_samples=3, seed=42).texts
    assert first == sample(lm, length=60, num_samples=3, seed=42).texts
    assert first != sample(lm, length=60, num_samples=3, seed=43).texts
    streamed = []
    sample(lm, length=60, seed=42, on_token=lambda i, text: streamed.append(text))
    assert "".join(streamed) == sample(lm, length=60, seed=42).texts[0]


def test_unk_is_rejected_unless_allowed(tmp_path, word_corpus):
    run = tmp_path / "words"
    train_language_model(TrainOptions(corpus=word_corpus, level="word", max_vocab=8, steps=3, **SMALL), run)
    lm, _ = load_language_model(run, backend="numpy")
    lm.model.head.params["b"][lm.vocab.unk_id] = 50.0  # make <UNK> overwhelmingly likely
    drawn = [
        t for s in range(3) for ids in sample(lm, length=30, num_samples=4, seed=s, stop_at_eos=False).ids for t in ids
    ]
    assert lm.vocab.unk_id not in drawn
    allowed = sample(lm, length=30, seed=0, options=SamplingOptions(allow_unk=True), stop_at_eos=False).ids[0]
    assert lm.vocab.unk_id in allowed


def test_prime_with_unknown_tokens_is_a_clear_error(trained_char_run):
    lm, _ = load_language_model(trained_char_run, backend="numpy")
    with pytest.raises(DataError, match=r"outside the model's vocabulary: '€'.*`allow_unk`"):
        sample(lm, prime="price: €")


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(temperature=-1.0), "temperature must be > 0"),
        (dict(top_p=0.0), r"top-p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top-p must be in \(0, 1\]"),
        (dict(top_k=0), "top-k must be a positive integer"),
    ],
)
def test_bad_sampling_options_are_rejected(bad, message):
    with pytest.raises(ConfigError, match=message):
        SamplingOptions(**bad).validate()


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    probs = next_token_distribution(logits, SamplingOptions(top_k=2))
    np.testing.assert_allclose(probs, [[0.625, 0.375, 0, 0]])
    probs = next_token_distribution(logits, SamplingOptions(top_p=0.75))
    np.testing.assert_allclose(probs, [[0.625, 0.375, 0, 0]])  # 0.5 + 0.3 reaches 0.75
    probs = next_token_distribution(logits, SamplingOptions(top_p=0.5))
    np.testing.assert_allclose(probs, [[1.0, 0, 0, 0]])
    probs = next_token_distribution(logits, SamplingOptions(top_p=0.85))
    np.testing.assert_allclose(probs, [[0.5, 0.3, 0.15, 0]] / np.float64(0.95))
    assert draw_tokens(probs, np.random.default_rng(0), greedy=True)[0] == 0
    counts = np.bincount(draw_tokens(np.repeat(probs, 20000, axis=0), np.random.default_rng(1)), minlength=4)
    np.testing.assert_allclose(counts / 20000, probs[0], atol=0.01)


def test_score_equals_chain_rule_computed_step_by_step(trained_char_run):
    lm, _ = load_language_model(trained_char_run, backend="numpy")
    text = "Before we proceed"
    (result,) = score(lm, [text])
    ids = lm.encode(text)
    # Independently: one token at a time, carrying the state, log-softmax of the raw logits.
    state, previous, expected = None, lm.start_id, []
    for token in ids:
        logits, state, _ = lm.model.forward(np.array([[previous]]), initial_state=state)
        z = logits[0, -1].astype(np.float64)
        expected.append(z[token] - z.max() - np.log(np.exp(z - z.max()).sum()))
        previous = token
    np.testing.assert_allclose(result.log_probs, expected, rtol=1e-5, atol=1e-5)
    assert result.total == pytest.approx(sum(expected), rel=1e-5)


def test_word_model_ranks_the_sentence_it_saw(tmp_path, word_corpus):
    run = tmp_path / "words"
    train_language_model(
        TrainOptions(
            corpus=word_corpus,
            level="word",
            layers=1,
            hidden=32,
            embed=16,
            seq_len=16,
            batch_size=8,
            steps=150,
            lr=0.01,
            dropout=0.0,
            eval_every=50,
        ),
        run,
    )
    lm, _ = load_language_model(run, backend="numpy")
    good, odd = score(lm, ["the apple and pear salad is good", "salad pear the and apple good is"])
    assert good.total > odd.total
    assert good.tokens[-1] == "<EOS>"


def _cli(*args, cwd=None, env_extra=None, **kwargs):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "mlxrnn_cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        **kwargs,
    )


TINY_FLAGS = [
    "--layers",
    "1",
    "--hidden",
    "24",
    "--embed",
    "8",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--eval-every",
    "5",
    "--backend",
    "numpy",
    "--quiet",
]


def test_cli_end_to_end(tmp_path, small_corpus):
    run = str(tmp_path / "run")
    result = _cli("train", small_corpus, *TINY_FLAGS, "--steps", "10", "--out", run, "--sample-length", "30")
    assert result.returncode == 0, result.stderr
    assert "--- sample ---" in result.stdout
    result = _cli("sample", run, "--length", "40", "--seed", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["samples"][0]) > 0
    result = _cli("score", run, "the king", "zzqx", "--json", "--sort")
    assert result.returncode == 0, result.stderr
    ranked = json.loads(result.stdout)
    assert sorted(r["text"] for r in ranked) == ["the king", "zzqx"]
    assert ranked[0]["log_prob"] >= ranked[1]["log_prob"]
    result = _cli("eval", run, small_corpus, "--json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) >= {"loss", "perplexity", "bits_per_char"}
    again = _cli("train", small_corpus, *TINY_FLAGS, "--steps", "10", "--out", run)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    missing = _cli("sample", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1
    for command in ("train", "sample", "score", "eval", "info"):
        help_text = _cli(command, "--help")
        assert help_text.returncode == 0 and "Example" in help_text.stdout


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_saves_checkpoint_and_resume_continues(tmp_path, small_corpus, sig, code):
    run = str(tmp_path / "run")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlxrnn_cli.main",
            "train",
            small_corpus,
            *TINY_FLAGS,
            "--steps",
            "100000",
            "--eval-every",
            "100000",
            "--out",
            run,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not Path(run, "metrics.jsonl").exists() or "train" not in Path(run, "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "saved step" in stderr and "Traceback" not in stderr
    saved_step = load_checkpoint(run, tag="last").meta["training"]["state"]["step"]
    assert saved_step >= 1
    resumed = _cli("train", "--resume", "--out", run, "--steps", str(saved_step + 3), "--quiet", "--sample-length", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == saved_step + 3


@pytest.mark.parametrize("embed", [8, 0])
def test_token_stepper_equals_full_forward(tmp_path, small_corpus, embed):
    """Sampling's cache-free path gives the logits of the full forward, for embedding and one-hot inputs."""
    run = tmp_path / "run"
    options = {**SMALL, "embed": embed, "layers": 2}
    train_language_model(TrainOptions(corpus=small_corpus, steps=3, dropout=0.0, **options), run)
    lm, _ = load_language_model(run, backend="numpy")
    ids = lm.encode("First Citizen:\nBefore we")[None, :]
    expected = lm.log_probs(np.repeat(ids, 2, axis=0))[0]
    step, state = lm.token_stepper(), None
    for t in range(ids.shape[1]):
        logits, state = step(np.repeat(ids[:, t], 2), state)
        z = logits - logits.max(axis=1, keepdims=True)
        np.testing.assert_allclose(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), expected[:, t], atol=1e-5)


def test_word_vocabulary_counts_only_the_training_split(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat\n" * 90 + "zebra zebra zebra\n" * 10, encoding="utf-8")  # zebra: last 10% only
    from mlxrnn.run.data import build_vocabulary

    _, vocab, _ = build_vocabulary(TrainOptions(corpus=str(corpus), level="word", val_frac=0.1), corpus.read_text())
    assert "cat" in vocab and "zebra" not in vocab
    _, chars, _ = build_vocabulary(TrainOptions(corpus=str(corpus), level="char", val_frac=0.1), corpus.read_text())
    assert "z" in chars  # character models keep the whole text's alphabet
