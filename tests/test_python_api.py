"""Trained runs from Python give what the CLI gives: the same numbers, texts and field names."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

import mlxrnn
from mlxrnn import CheckpointError, ConfigError
from mlxrnn.text.corpus import bundled_corpus_path

SMALL = dict(layers=1, hidden=24, embed=8, seq_len=16, batch_size=4, eval_every=5, log_every=2, backend="numpy")

#: the public names before the Python API grew (mlxrnn.__all__ at the layout move): all still work
PREVIOUS_NAMES = [
    "__version__", "interop", "auto_choice", "get_backend", "mlx_installed", "RNNCell", "GRUCell", "LSTMCell",
    "make_cell", "RNN", "GRU", "LSTM", "Recurrent", "make_recurrent", "Embedding", "Linear", "one_hot",
    "lengths_to_mask", "softmax_cross_entropy", "binary_cross_entropy_with_logits", "mean_squared_error",
    "clip_grad_norm", "clip_grad_value", "global_norm", "Optimizer", "SGD", "Adam", "AdamW", "RMSProp",
    "make_optimizer", "SequenceModel", "SequenceModelConfig", "RecurrentSpec", "Trainer", "StepResult",
    "MLXRNNError", "ConfigError", "ShapeError", "DataError", "CheckpointError", "BackendUnavailable",
    "SequenceClassifier", "SequenceClassifierConfig", "SequenceTagger", "SequenceTaggerConfig", "Seq2Seq",
    "Seq2SeqConfig", "Hypothesis", "seq2seq_batch", "SequenceGenerator", "SequenceGeneratorConfig", "generator_batch",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus):
    """A run trained from Python, with everything its callbacks received."""
    run_dir = tmp_path_factory.mktemp("runs") / "char"
    progress, records = [], []
    summary = mlxrnn.train_language_model(corpus=corpus, run_dir=run_dir, steps=10, lr=0.01, dropout=0.0,
                                          progress=progress.append, metrics=records.append, **SMALL)
    return summary, progress, records


def _cli_json(*args: str):
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_public_name_still_works_and_sample_is_a_function():
    for name in PREVIOUS_NAMES:
        assert name in mlxrnn.__all__ and hasattr(mlxrnn, name), name
    assert all(hasattr(mlxrnn, name) for name in mlxrnn.__all__)
    assert inspect.isfunction(mlxrnn.sample) and inspect.isfunction(mlxrnn.load)
    assert inspect.isfunction(mlxrnn.train_language_model)


def test_callbacks_see_every_record_of_the_metrics_log(trained):
    summary, progress, records = trained
    logged = [json.loads(line) for line in (Path(summary.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert records == logged
    assert [r["event"] for r in records if r["event"] != "train"] == ["start", "eval", "eval", "end"]
    steps = [p.step for p in progress if p.event == "train"]
    assert steps == list(range(1, 11))
    assert [p.val_loss for p in progress if p.event == "eval"] == [r["val_loss"] for r in records
                                                                   if r["event"] == "eval"][:2]


def test_summary_attributes_are_the_cli_json_keys(trained):
    summary, _, _ = trained
    data = summary.to_dict()
    assert {"best_val_bpc", "best_val_perplexity", "best_val_loss", "run_dir"} <= set(data)
    for key, value in data.items():
        assert getattr(summary, key) == value, key


def test_sample_is_what_the_cli_prints(trained):
    run = trained[0].run_dir
    lm = mlxrnn.load(run)
    assert isinstance(lm, mlxrnn.LanguageModel) and "LanguageModel(level='char'" in repr(lm)
    text = lm.sample(length=40, prime="ROMEO:", temperature=0.8, seed=3)
    printed = CliRunner().invoke(cli, ["sample", run, "--length", "40", "--prime", "ROMEO:", "--temperature",
                                       "0.8", "--seed", "3"])
    assert printed.exit_code == 0 and printed.stdout == text + "\n"
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 40
    data = _cli_json("sample", run, "-n", "3", "--length", "20", "--prime", "A", "--seed", "5")
    texts = lm.sample(length=20, prime="A", seed=5, num_samples=3, include_prime=False)
    assert data == {"prime": "A", "samples": texts}
    assert lm.sample(length=20, prime="A", seed=5, num_samples=3) == ["A" + t for t in texts]


def test_score_and_evaluate_are_the_cli_json_with_the_same_names(trained, corpus):
    run = trained[0].run_dir
    lm = mlxrnn.LanguageModel.load(run)
    sentences = ["the king is dead", "long live the king"]
    cli_scores = {s["text"]: s for s in _cli_json("score", run, *sentences)}  # keyed by text: order aside
    for ours in lm.score(sentences):
        assert ours.to_dict() == cli_scores[ours.text]
        for key in ("log_prob", "mean_log_prob", "perplexity", "num_tokens"):
            assert getattr(ours, key) == cli_scores[ours.text][key]
    assert lm.score("the king").to_dict() == lm.score(["the king"])[0].to_dict()
    held_out = Path(corpus).parent / "held_out.txt"
    held_out.write_text("First Citizen:\nWe are accounted poor citizens.\n", encoding="utf-8")
    evaluation = lm.evaluate_file(held_out)
    assert evaluation.to_dict() == _cli_json("eval", run, str(held_out))
    for key, value in evaluation.to_dict().items():
        assert getattr(evaluation, key) == value
    assert evaluation.bits_per_char == evaluation.bits_per_token  # a character model: both keys
    assert lm.evaluate(held_out.read_text(encoding="utf-8")).loss == evaluation.loss


def test_a_saved_model_is_a_checkpoint_the_cli_and_load_read(trained, tmp_path):
    lm = mlxrnn.load(trained[0].run_dir, tag="last")
    path = lm.save(tmp_path / "model")
    again = mlxrnn.LanguageModel.load(path)
    assert again.sample(length=30, seed=1) == lm.sample(length=30, seed=1)
    result = CliRunner().invoke(cli, ["sample", str(path), "--length", "30", "--seed", "1"])
    assert result.stdout == lm.sample(length=30, seed=1) + "\n"
    with pytest.raises(CheckpointError, match="already exists"):
        lm.save(path)
    with pytest.raises(CheckpointError, match="holds a language_model, not a SequenceClassifier"):
        mlxrnn.SequenceClassifier.load(path)


def test_word_model_samples_join_the_prime_with_a_space(tmp_path):
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat .\nthe dog sat on the log .\n" * 40, encoding="utf-8")
    summary = mlxrnn.train_language_model(mlxrnn.TrainOptions(corpus=str(corpus), level="word", steps=3, **SMALL),
                                          tmp_path / "run")
    lm = mlxrnn.load(summary.run_dir)
    texts = lm.sample(length=5, prime="the cat", seed=0, num_samples=2, include_prime=False)
    joined = lm.sample(length=5, prime="the cat", seed=0, num_samples=2)
    assert joined == [lm.tokenizer.continue_text("the cat", text) for text in texts]
    samples = mlxrnn.Samples([[], [], []], ["sat on", ", then", "\n"], "the cat", "word")
    assert samples.with_prime() == ["the cat sat on", "the cat, then", "the cat\n"]  # as detokenize spaces them
    assert mlxrnn.Samples([[]], ["at"], "c", "char").with_prime() == ["cat"]
    printed = CliRunner().invoke(cli, ["sample", summary.run_dir, "--length", "5", "--prime", "the cat", "--seed", "0",
                                       "-n", "2"]).stdout
    assert printed == "".join(f"--- sample {i + 1} ---\n{full}\n" for i, full in enumerate(joined))
    evaluation = lm.evaluate("the cat sat on the mat .\n")
    # every tokenizer reports bits per character: total nats over the text's characters / ln 2
    text = "the cat sat on the mat .\n"
    assert evaluation.to_dict()["bits_per_char"] == evaluation.bits_per_char == pytest.approx(
        evaluation.loss * evaluation.num_tokens / len(text) / math.log(2))
    assert evaluation.to_dict()["bits_per_token"] == evaluation.bits_per_token


def test_settings_as_keywords_override_options_and_typos_fail_before_writing(tmp_path, corpus):
    options = mlxrnn.TrainOptions(corpus=corpus, steps=2, **SMALL)
    assert dataclasses.replace(options, hidden=12) == mlxrnn.TrainOptions.with_settings(options, {"hidden": 12})
    with pytest.raises(ConfigError, match="unknown training setting 'hiden' .*did you mean 'hidden'"):
        mlxrnn.train_language_model(options, tmp_path / "run", hiden=12)
    with pytest.raises(ConfigError, match="`run_dir` is required"):
        mlxrnn.train_language_model(options)
    assert not (tmp_path / "run").exists()
    summary = mlxrnn.train_language_model(options, tmp_path / "run", hidden=12)
    assert mlxrnn.load(summary.run_dir).model.config.hidden_size == 12
    assert np.isfinite(summary.best_val_loss)
