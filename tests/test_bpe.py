"""Byte-level BPE (`--tokenizer bpe`): exact round trips, stored with its hash, and a model that
trains, samples, scores, evaluates, resumes and starts others from the CLI and from Python;
bits per character for every tokenizer."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.errors import CheckpointError, ConfigError, DataError
from mlxrnn.lm.model import LanguageModel, load_language_model
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.bpe import OFFSET, BPETokenizer, bpe_from_dict, safe_pieces, train_bpe
from mlxrnn.text.tokenizers import tokenizer_from_dict

pytest.importorskip("tokenizers")

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
PROSE = ("It was the best of times, it was the worst of times; it was the age of wisdom.\n"
         "Ça va? Très bien — 東京 and naïve café.\n\n  Indented line\twith a tab.\n") * 40
SMALL = dict(layers=1, hidden=16, embed=8, seq_len=8, batch_size=2, eval_every=3, backend="numpy", lr=0.01)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return train_bpe([PROSE], vocab_size=300)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "prose.txt"
    path.write_text(PROSE, encoding="utf-8")
    return path


@FAST
@given(st.text(max_size=80))
def test_round_trip_is_exact_on_any_unicode(bpe, text):
    tokens = bpe.tokenize(text)
    assert bpe.detokenize(tokens) == text
    ids = bpe.encode_ids(text)
    assert ids.tolist() == [bpe.tokens.index(t) for t in tokens]  # the fast path gives tokenize's ids
    assert bpe.decode_ids(ids) == text
    assert b"".join(bpe.token_bytes(t) for t in tokens) == text.encode("utf-8")


@FAST
@given(st.lists(st.sampled_from(["the", " ", "\n", "\t", "  ", "é", "東", ",", "'s", "x1"]), max_size=60),
       st.integers(1, 12))
def test_encoding_in_pieces_gives_the_ids_of_the_whole(bpe, parts, piece_chars):
    text = "".join(parts)
    assert "".join(safe_pieces(text, piece_chars)) == text
    whole = np.asarray(bpe._hf.encode(text).ids, dtype=np.int64) + OFFSET
    pieces = [np.asarray(bpe._hf.encode(p).ids, dtype=np.int64) for p in safe_pieces(text, piece_chars)]
    assert np.array_equal(np.concatenate([np.zeros(0, np.int64), *pieces]) + OFFSET, whole)
    assert np.array_equal(bpe.encode_ids(text), whole)


def test_vocabulary_is_the_specials_then_the_bpe_and_training_is_deterministic(bpe):
    assert bpe.tokens[:3] == ["<PAD>", "<UNK>", "<EOS>"] and len(bpe.tokens) == 300
    assert train_bpe([PROSE], vocab_size=300) == bpe
    assert bpe.start_token == "Ċ"  # the newline byte: what a model reads before any text
    assert not {"<PAD>", "<UNK>", "<EOS>"} & set(bpe.tokenize("<PAD><UNK><EOS>"))  # text never makes a special


def test_stored_json_is_checked_by_its_sha256(bpe):
    stored = json.loads(json.dumps(bpe.to_dict()))
    assert tokenizer_from_dict(stored) == bpe
    tampered = dict(stored, json=stored["json"].replace('"Ġthe"', '"Ġthf"'))
    with pytest.raises(DataError, match="sha256"):
        bpe_from_dict(tampered)
    with pytest.raises(ConfigError, match="vocab_size"):
        train_bpe([PROSE], vocab_size=100)


def test_without_the_library_one_line_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'mlxrnn\[bpe\]'"):
        train_bpe([PROSE], vocab_size=300)


def _train(corpus, run, **settings):
    options = TrainOptions(corpus=str(corpus), tokenizer="bpe", vocab_size=280, **{**SMALL, **settings})
    records = []
    summary = train_language_model(options, run, metrics=records.append)
    return summary, records


def test_a_bpe_model_trains_samples_scores_and_evaluates_from_python(corpus, tmp_path):
    summary, records = _train(corpus, tmp_path / "run", steps=6)
    assert summary.level == "subword"
    evals = [r for r in records if r["event"] == "eval"]
    assert evals and all(math.isfinite(r["val_bpc"]) for r in evals)
    lm = LanguageModel.load(tmp_path / "run")
    assert lm.tokenizer.kind == "bpe" and len(lm.vocab) == 280
    text = lm.sample(60, prime="It was", seed=3)
    assert text.startswith("It was")
    generated = lm.sample(40, seed=1, include_prime=False)
    assert lm.decode(lm.tokenizer.encode_ids(generated)) == generated
    scored = lm.score("It was the best of times.")
    assert scored.bits_per_char == pytest.approx(-scored.log_prob / len("It was the best of times.") / math.log(2))
    result = lm.evaluate(PROSE[:500])
    assert result.num_chars == 500 and result.num_unknown == 0
    assert result.bits_per_char == pytest.approx(result.loss * result.num_tokens / 500 / math.log(2))


def test_bpe_cli_train_sample_score_eval_resume_and_init_from(corpus, tmp_path):
    runner = CliRunner()
    run, other = str(tmp_path / "run"), str(tmp_path / "other")
    flags = ["--layers", "1", "--hidden", "16", "--embed", "8", "--seq-len", "8", "--batch-size", "2",
             "--backend", "numpy", "--eval-every", "3", "--sample-length", "10", "--quiet"]
    result = runner.invoke(cli, ["train", str(corpus), "--tokenizer", "bpe", "--vocab-size", "280", "--steps", "3",
                                 "--out", run, *flags])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", "--resume", "--out", run, "--steps", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "after 6 steps" in result.output
    result = runner.invoke(cli, ["sample", run, "--length", "30", "--seed", "2", "--prime", "It was", "--json"])
    assert result.exit_code == 0, result.output
    streamed = json.loads(result.output)["samples"][0]
    lm = load_language_model(run, backend="numpy")[0]
    assert lm.sample(30, prime="It was", seed=2, include_prime=False) == streamed
    result = runner.invoke(cli, ["score", run, "It was the age.", "--json"])
    assert result.exit_code == 0, result.output
    assert "bits_per_char" in json.loads(result.output)[0]
    result = runner.invoke(cli, ["eval", run, str(corpus), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tokenizer"] == "bpe" and data["num_chars"] == len(PROSE) and data["bits_per_char"] > 0
    result = runner.invoke(cli, ["train", str(corpus), "--init-from", run, "--steps", "2", "--out", other, *flags])
    assert result.exit_code == 0, result.output
    assert load_language_model(other, backend="numpy")[0].tokenizer == lm.tokenizer


def test_a_modified_tokenizer_in_a_checkpoint_is_refused(corpus, tmp_path):
    _train(corpus, tmp_path / "run", steps=3)
    meta_files = sorted((tmp_path / "run" / "checkpoints").glob("*/meta.json"))
    doc = json.loads(meta_files[-1].read_text(encoding="utf-8"))
    doc["meta"]["tokenizer"]["json"] = doc["meta"]["tokenizer"]["json"].replace("Ġt", "Ġq", 1)
    meta_files[-1].write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(CheckpointError, match="sha256"):
        load_language_model(meta_files[-1].parent, backend="numpy")


def test_bpe_settings_that_do_not_apply_are_refused(corpus, tmp_path):
    with pytest.raises(ConfigError, match="vocab_size|bpe"):
        train_language_model(TrainOptions(corpus=str(corpus), vocab_size=300, steps=1, **SMALL), tmp_path / "a")
    with pytest.raises(ConfigError, match="max_vocab"):
        train_language_model(TrainOptions(corpus=str(corpus), tokenizer="bpe", max_vocab=300, steps=1, **SMALL),
                             tmp_path / "b")


@pytest.mark.parametrize("tokenizer", ["chars", "words", "bpe"])
def test_every_tokenizer_logs_bits_per_character_of_the_same_text(corpus, tmp_path, tokenizer):
    """val_bpc = val_loss × tokens per character / ln 2: the same text in the same units."""
    extra = {"vocab_size": 280} if tokenizer == "bpe" else {}
    records = []
    train_language_model(TrainOptions(corpus=str(corpus), tokenizer=tokenizer, steps=3, **extra, **SMALL),
                         tmp_path / tokenizer, metrics=records.append)
    evals = [r for r in records if r["event"] == "eval"]
    assert evals
    for r in evals:
        assert 0 < r["val_bpc"] < 20
    if tokenizer == "chars":
        assert evals[-1]["val_bpc"] == pytest.approx(evals[-1]["val_loss"] / math.log(2))
