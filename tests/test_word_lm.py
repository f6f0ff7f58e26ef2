"""Word-level language models on corpora as they come: tokenizers that respect pre-tokenized
text and its <unk>, separate valid/test files, honest scoring (OOV rates, <UNK> marked),
sampling past <EOS>."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.lm.evaluation import evaluate_text
from mlxrnn.lm.model import load_language_model
from mlxrnn.lm.sampling import sample, score
from mlxrnn.nn.sequences import EOS, UNK
from mlxrnn.run.data import build_vocabulary
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.tokenizers import (
    CharTokenizer,
    WhitespaceTokenizer,
    WordTokenizer,
    make_tokenizer,
    tokenizer_from_dict,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: pre-tokenized text as the classic word corpora ship it: one sentence a line, <unk> and N in it
PTB_LINES = [
    "the company 's shares fell N % to $ N <unk> in new york",
    "mr. <unk> said he does n't expect the <unk> to hold",
    "they 're not sure what 's next",
]
#: whitespace-normalised text: one space between tokens, none at line ends, no blank lines
normal_text = st.lists(
    st.lists(st.sampled_from(["the", "<unk>", "'s", "n't", "N", "$", "King", "a.b", "<s>", "&"]), min_size=1,
             max_size=6).map(" ".join),
    min_size=1, max_size=5,
).map(lambda lines: "\n".join(lines) + "\n")
word_alphabet = st.text(alphabet="aZé İΣσ'’,.;:!?()[]-_\n\r\t 09<>/unk", max_size=60)


# --- tokenizers ------------------------------------------------------------------------------
@FAST
@given(normal_text, st.booleans())
def test_whitespace_round_trip_is_exact_on_normalised_text(text, words):
    """Pre-tokenized text comes back exactly; the literal <unk> is the <UNK> token in between."""
    tokenizer = WordTokenizer() if words else WhitespaceTokenizer()
    tokens = tokenizer.tokenize(text)
    assert tokens.count(UNK) == text.split().count("<unk>")
    assert "<unk>" not in tokens and tokens.count(EOS) == text.count("\n")
    if not words:  # the whitespace tokenizer splits nothing, so the corpus's token count is kept
        assert len(tokens) == len(text.split()) + text.count("\n")
        assert tokenizer.detokenize(tokens) == text


@FAST
@given(st.one_of(st.text(max_size=80), word_alphabet), st.booleans(), st.sampled_from([None, "<unk>", "UNK_"]))
@example("'0 '", False, None)  # a closing apostrophe must not be glued to a clitic (it would make a quotation)
def test_word_tokenizers_are_idempotent_through_detokenize(text, lowercase, unk_token):
    for tokenizer in (WordTokenizer(lowercase=lowercase, unk_token=unk_token),
                      WhitespaceTokenizer(lowercase=lowercase, unk_token=unk_token)):
        tokens = tokenizer.tokenize(text)
        assert tokenizer.tokenize(tokenizer.detokenize(tokens)) == tokens, tokenizer
        assert "<PAD>" not in tokens and tokens.count(EOS) <= text.count("\n") + 1


def test_the_word_tokenizer_keeps_markers_and_clitics_whole():
    tokenize = WordTokenizer().tokenize
    assert tokenize(PTB_LINES[0])[:6] == ["the", "company", "'s", "shares", "fell", "N"]
    assert tokenize("a <unk> and <s> b </s>") == ["a", UNK, "and", "<s>", "b", "</s>", EOS]
    assert tokenize("'Tis the king's; they 're here, don't") == [
        "'Tis", "the", "king's", ";", "they", "'re", "here", ",", "don't", EOS]
    assert tokenize("say 'hello' to 'em") == ["say", "'", "hello", "'", "to", "'em", EOS]  # a quotation stays apart
    # Clitics and markers keep the corpus's count; abbreviations such as "mr." are what whitespace is for.
    line = PTB_LINES[2]
    assert len(tokenize(line)) == len(line.split()) + 1 == len(WhitespaceTokenizer().tokenize(line))
    assert tokenize(PTB_LINES[1])[:3] == ["mr", ".", UNK] and WhitespaceTokenizer().tokenize(PTB_LINES[1])[0] == "mr."
    # Literal special names never become the specials (only the configured unknown-word literal does).
    assert tokenize("<PAD> <EOS>") == ["<", "PAD", ">", "<", "EOS", ">", EOS]
    assert WordTokenizer(unk_token="<UNK>").tokenize("an <UNK>") == ["an", UNK, EOS]
    assert WordTokenizer(unk_token=None).tokenize("an <unk>") == ["an", "<unk>", EOS]
    assert WordTokenizer(lowercase=True).tokenize("An <UNK>") == ["an", UNK, EOS]


def test_unk_is_written_back_as_the_corpus_literal():
    tokens = ["a", UNK, "b", EOS]
    assert WhitespaceTokenizer().detokenize(tokens) == "a <unk> b\n"
    assert WordTokenizer(unk_token="@@").detokenize(tokens) == "a @@ b\n"
    assert WordTokenizer(unk_token=None).detokenize(tokens) == "a <UNK> b\n"


def test_tokenizer_kinds_levels_and_stored_forms():
    for tokenizer in (CharTokenizer(), WordTokenizer(lowercase=True, unk_token="<oov>"), WhitespaceTokenizer()):
        assert tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict()))) == tokenizer
        assert make_tokenizer(tokenizer.kind).kind == tokenizer.kind
    assert make_tokenizer("word").kind == "words" and make_tokenizer("char").kind == "chars"
    assert make_tokenizer("word", kind="whitespace", lowercase=True) == WhitespaceTokenizer(lowercase=True)
    with pytest.raises(ConfigError, match="does not make char-level tokens"):
        make_tokenizer("char", kind="whitespace")
    with pytest.raises(ConfigError, match="unk_token"):
        WhitespaceTokenizer(unk_token="two words")
    # A word tokenizer stored before the kinds existed splits as it did when its model trained.
    legacy = tokenizer_from_dict({"level": "word", "lowercase": False})
    assert legacy.version == 1 and legacy.unk_token is None
    assert legacy.tokenize("the king 's <unk>") == ["the", "king", "'", "s", "<", "unk", ">", EOS]
    assert legacy.to_dict() == {"level": "word", "lowercase": False}


def test_tokenizer_and_level_options_agree():
    assert (TrainOptions().level, TrainOptions().tokenizer) == ("char", "chars")
    assert TrainOptions(level="word").tokenizer == "words"
    assert TrainOptions(tokenizer="whitespace").validate().level == "word"
    with pytest.raises(ConfigError, match="`tokenizer` whitespace makes word-level tokens, not char"):
        TrainOptions(level="char", tokenizer="whitespace").validate()
    # Runs saved before these options existed: their word tokenizer had no unknown-word literal.
    saved = TrainOptions.from_saved({"level": "word", "hidden": 8})
    assert saved.tokenizer == "words" and saved.unk_token == ""


def test_a_pre_tokenized_corpus_trains_with_its_own_tokens_and_unk(tmp_path):
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(PTB_LINES * 40) + "\n", encoding="utf-8")
    options = TrainOptions(corpus=str(corpus), tokenizer="whitespace")
    tokenizer, vocab, tokens = build_vocabulary(options, corpus.read_text())
    assert tokenizer.kind == "whitespace"
    assert "<unk>" not in vocab and "<" not in vocab and "unk" not in vocab
    assert len(tokens) == sum(len(line.split()) + 1 for line in PTB_LINES * 40)
    assert vocab.encode(tokens).tolist().count(vocab.unk_id) == 3 * 40


# --- train / valid / test files --------------------------------------------------------------
SMALL = dict(layers=1, hidden=12, embed=12, seq_len=6, batch_size=3, eval_every=4, backend="numpy", lr=0.01)


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory) -> dict[str, str]:
    rng = np.random.default_rng(0)
    words = "the king 's crown is on a table <unk> and N people saw it".split()

    def lines(count: int) -> str:
        return "\n".join(" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(count)) + "\n"

    folder = tmp_path_factory.mktemp("ptb")
    texts = {"train": lines(150), "valid": lines(30), "test": lines(30) + "zebra crossing the table\n"}
    paths = {}
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        paths[name] = str(folder / f"{name}.txt")
    return paths


@pytest.fixture(scope="module")
def word_run(tmp_path_factory, corpus_files) -> tuple[str, object]:
    run = tmp_path_factory.mktemp("runs") / "words"
    options = TrainOptions(corpus=corpus_files["train"], valid=corpus_files["valid"], test=corpus_files["test"],
                           tokenizer="whitespace", tie=True, steps=12, **SMALL)
    return str(run), train_language_model(options, run)


def _records(run: str, event: str) -> list[dict]:
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_valid_file_is_the_validation_text_and_all_of_the_corpus_trains(corpus_files, word_run):
    run, _ = word_run
    lm, _ = load_language_model(run, backend="numpy")
    valid = evaluate_text(lm, Path(corpus_files["valid"]).read_text(), window=6)
    # Evaluated as training evaluates (parallel streams, carried state), so close to the same number.
    assert _records(run, "eval")[-1]["val_loss"] == pytest.approx(valid.loss, rel=0.05)
    train_tokens = len(WhitespaceTokenizer().tokenize(Path(corpus_files["train"]).read_text()))
    assert _records(run, "start")[0]["steps_per_epoch"] == math.ceil(((train_tokens - 1) // 3) / 6)


def test_test_file_is_scored_with_the_best_checkpoint_in_the_summary_and_metrics(corpus_files, word_run):
    run, summary = word_run
    (test,) = _records(run, "test")
    best = load_checkpoint(run, tag="best")
    assert test["checkpoint_step"] == best.meta["training"]["state"]["step"]
    assert summary.test_loss == test["test_loss"] and summary.to_dict()["test_perplexity"] == test["test_perplexity"]
    assert test["tokenizer"] == "whitespace" and test["oov_rate"] == pytest.approx(2 / test["num_tokens"])  # zebra crossing
    assert _records(run, "end")[0]["test_loss"] == test["test_loss"]
    lm, _ = load_language_model(run, tag="best", backend="numpy")
    whole = evaluate_text(lm, Path(corpus_files["test"]).read_text(), window=6)
    assert test["test_loss"] == pytest.approx(whole.loss, rel=0.05)


def test_resume_refuses_a_changed_valid_file(tmp_path, corpus_files):
    valid = tmp_path / "valid.txt"
    valid.write_text(Path(corpus_files["valid"]).read_text(), encoding="utf-8")
    options = TrainOptions(corpus=corpus_files["train"], valid=str(valid), tokenizer="whitespace", steps=2, **SMALL)
    train_language_model(options, tmp_path / "run")
    valid.write_text("the king\n" * 30, encoding="utf-8")
    with pytest.raises(DataError, match="`valid` file .* changed since this run started"):
        train_language_model(TrainOptions(**{**options.__dict__, "steps": 4}), tmp_path / "run", resume=True)


def test_a_too_short_valid_file_is_a_clear_error(tmp_path, corpus_files):
    short = tmp_path / "valid.txt"
    short.write_text("t", encoding="utf-8")  # one character: nothing to predict it from
    options = TrainOptions(corpus=corpus_files["train"], valid=str(short), steps=1, **SMALL)
    with pytest.raises(DataError, match="the `valid` file has 1 tokens, too few to evaluate .* longer `valid` file"):
        train_language_model(options, tmp_path / "run")


# --- honest scoring --------------------------------------------------------------------------
def _cli(*args, stdin: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=stdin, prog_name="mlxrnn")


def test_eval_reports_the_tokenizer_and_the_oov_rate(corpus_files, word_run):
    run, _ = word_run
    result = _cli("eval", run, corpus_files["test"], "--backend", "numpy", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokenizer"] == "whitespace" and data["level"] == "word"
    assert data["num_oov"] == 2 and data["oov_rate"] == pytest.approx(2 / data["num_tokens"])  # zebra crossing
    text = _cli("eval", run, corpus_files["test"], "--backend", "numpy").stdout
    assert "tokens (whitespace tokenizer)" in text and "perplexity" in text and "out of vocabulary: 2 tokens" in text


def test_score_marks_unk_words_and_reads_a_file_or_stdin(tmp_path, word_run):
    run, _ = word_run
    lm, _ = load_language_model(run, backend="numpy")
    (zebra,) = score(lm, ["the zebra <unk>"])
    assert zebra.tokens == ["the", "zebra", UNK, EOS] and zebra.unknown == [False, True, False, False]
    marked = [t["unk"] for t in zebra.to_dict()["tokens"]]
    assert marked == [False, True, True, False] and zebra.to_dict()["num_oov"] == 1
    per_token = _cli("score", run, "the zebra", "--per-token", "--backend", "numpy")
    assert per_token.exit_code == 0, per_token.output
    assert "'zebra'  <UNK>: not in the vocabulary" in per_token.stdout and "1 of 3 tokens scored as <UNK>" in per_token.stdout
    assert "out of vocabulary: 1 of 3 tokens (33.3%, whitespace tokenizer)" in per_token.stdout
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the king\n\nthe crown is on the table\n", encoding="utf-8")
    from_file = json.loads(_cli("score", run, "-f", sentences, "--json", "--backend", "numpy").stdout)
    from_stdin = json.loads(_cli("score", run, "--file", "-", "--json", "--backend", "numpy",
                                 stdin=sentences.read_text()).stdout)
    assert sorted(r["text"] for r in from_file) == ["the crown is on the table", "the king"] and from_file == from_stdin
    both = json.loads(_cli("score", run, "a king", "-f", sentences, "--json", "--backend", "numpy").stdout)
    assert len(both) == 3
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    assert "is empty" in _cli("score", run, "-f", empty).output
    assert "standard input has no sentences" in _cli("score", run, "-f", "-", stdin="\n\n").output
    missing = _cli("score", run, "-f", tmp_path / "nope.txt")
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert "Missing argument 'SENTENCES...'" in _cli("score", run).output


def test_an_unknown_prime_is_refused_before_anything_is_printed(word_run):
    run, _ = word_run
    result = _cli("sample", run, "--prime", "the zebra", "--backend", "numpy")
    assert result.exit_code == 1 and result.stdout == "" and "'zebra'" in result.stderr


def test_sample_continues_past_eos_for_the_sentences_asked(word_run):
    run, _ = word_run
    lm, _ = load_language_model(run, backend="numpy")
    one = sample(lm, length=200, num_samples=4, seed=3)
    assert all(ids.count(lm.vocab.eos_id) == 1 and ids[-1] == lm.vocab.eos_id for ids in one.ids)
    three = sample(lm, length=400, num_samples=4, seed=3, sentences=3)
    assert all(ids.count(lm.vocab.eos_id) == 3 and ids[-1] == lm.vocab.eos_id for ids in three.ids)
    assert [ids[: len(first)] for ids, first in zip(three.ids, one.ids)] == one.ids  # the same draws, continued
    assert all(text.count("\n") == 3 for text in three.texts)
    result = _cli("sample", run, "--sentences", "2", "--seed", "1", "--length", "300", "--backend", "numpy")
    assert result.exit_code == 0 and result.stdout.strip().count("\n") == 1  # two lines
    assert "--sentences must be an integer >= 1" in _cli("sample", run, "--sentences", "0").output


def test_force_never_empties_a_run_directory_holding_the_valid_or_test_file(tmp_path, corpus_files):
    run = tmp_path / "run"
    run.mkdir()
    inside = run / "valid.txt"
    inside.write_text(Path(corpus_files["valid"]).read_text(), encoding="utf-8")
    for flag in ("--valid", "--test"):
        result = _cli("train", corpus_files["train"], flag, inside, "--out", run, "--force", "--steps", "1")
        assert result.exit_code == 2 and f"{flag} {inside} is inside --out" in result.output
    assert inside.read_text(encoding="utf-8") == Path(corpus_files["valid"]).read_text()
