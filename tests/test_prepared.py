"""Prepared corpora: tokenized once, streaming, into memory-mapped id files that train exactly as
the text does; refused in one line when truncated, modified or of another vocabulary; never left
looking complete by an interruption or a full disk."""

from __future__ import annotations

import errno
import functools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.errors import ConfigError, DataError, WriteError
from mlxrnn.run.data import build_vocabulary, encode_corpus
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text import prepare as prepare_module
from mlxrnn.text.batching import LMBatcher, MappedLMBatcher
from mlxrnn.text.corpus import read_text, split_by_fraction
from mlxrnn.text.prepare import prepare_corpus
from mlxrnn.text.prepared import id_dtype, open_prepared
from mlxrnn.text.streaming import TextStream, cut_after_line, cut_anywhere

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. <unk> é 東\n"
        "Second Citizen:\tOne word, good citizens.\r\n") * 30
SMALL = dict(layers=1, hidden=12, embed=8, seq_len=6, batch_size=3, eval_every=3, backend="numpy", lr=0.01)
KINDS = [("chars", {}), ("words", {}), ("whitespace", {"lowercase": True}), ("bpe", {"vocab_size": 290})]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    return path


@FAST
@given(st.text(alphabet="ab é東\n\r\t\ufeff", min_size=1, max_size=80), st.integers(1, 9), st.booleans())
def test_streamed_pieces_are_the_text_read_whole(tmp_path, text, read_bytes, by_line):
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    try:
        whole = read_text(path)
    except DataError:
        with pytest.raises(DataError, match="empty"):
            list(TextStream(path, read_bytes=read_bytes))
        return
    stream = TextStream(path, cut=cut_after_line if by_line else cut_anywhere, read_bytes=read_bytes)
    pieces = list(stream)
    assert "".join(pieces) == whole and stream.num_chars == len(whole)
    if by_line:
        assert all(p.endswith("\n") for p in pieces[:-1])


@FAST
@given(st.integers(2, 300), st.integers(1, 7), st.integers(1, 9))
def test_mapped_windows_are_the_batchers_windows(tmp_path, n, batch, seq_len):
    ids = np.random.default_rng(n).integers(0, 60000, n).astype("<u2")
    path = tmp_path / "ids.bin"
    ids.tofile(path)
    mapped = np.memmap(path, dtype="<u2", mode="r", shape=(n,))
    if n < batch + 1:
        with pytest.raises(DataError):
            MappedLMBatcher(mapped, batch, seq_len)
        return
    plain, fast = LMBatcher(ids, batch, seq_len), MappedLMBatcher(mapped, batch, seq_len)
    assert len(plain) == len(fast)
    for (a, b), (c, d) in zip(plain, fast):
        assert np.array_equal(a, c) and np.array_equal(b, d) and c.dtype == np.int32


@pytest.mark.parametrize("kind,extra", KINDS)
@pytest.mark.parametrize("with_valid", [False, True])
def test_prepared_ids_and_vocabulary_are_a_runs_on_the_text(tmp_path, corpus, kind, extra, with_valid):
    valid = None
    if with_valid:
        valid = tmp_path / "valid.txt"
        valid.write_text("Speak, citizens; é 東 zebra.\n" * 5, encoding="utf-8")
    prepared = prepare_corpus(corpus, tmp_path / "data", tokenizer=kind, valid=valid, **extra)
    options = TrainOptions(corpus=str(corpus), tokenizer=kind, valid=str(valid) if valid else None, **extra)
    text, valid_text = read_text(corpus), read_text(valid) if valid else None
    tokenizer, vocab, _ = build_vocabulary(options, text, valid_text)
    assert prepared.vocab == vocab and prepared.tokenizer == tokenizer
    ids = encode_corpus(vocab, tokenizer, text)
    train, val = (ids, encode_corpus(vocab, tokenizer, valid_text)) if valid else split_by_fraction(ids, 0.1)[:2]
    assert np.array_equal(prepared.part("train"), train) and np.array_equal(prepared.part("valid"), val)
    assert prepared.manifest["dtype"] == "<u2"
    source = prepared.manifest["sources"]["train"]
    assert source["bytes"] == corpus.stat().st_size and len(source["sha256"]) == 64


def test_ids_are_uint16_until_the_vocabulary_outgrows_them():
    assert id_dtype(65536) == np.dtype("<u2") and id_dtype(65537) == np.dtype("<u4")


def _records(options, run, **kwargs):
    records = []
    train_language_model(options, run, metrics=records.append, **kwargs)
    return [(r["event"], round(r.get("loss", r.get("val_loss", 0.0)), 10)) for r in records
            if r["event"] in ("train", "eval")]


@pytest.mark.parametrize("kind,extra", [KINDS[0], KINDS[3]])
def test_training_on_prepared_data_computes_what_training_on_the_text_does(tmp_path, corpus, kind, extra):
    prepare_corpus(corpus, tmp_path / "data", tokenizer=kind, **extra)
    on_text = _records(TrainOptions(corpus=str(corpus), tokenizer=kind, steps=6, log_every=1, **extra, **SMALL),
                       tmp_path / "a")
    on_data = _records(TrainOptions(corpus=str(tmp_path / "data"), steps=6, log_every=1, **SMALL), tmp_path / "b")
    assert on_text == on_data and len(on_data) >= 6


def test_resume_and_init_from_on_prepared_data(tmp_path, corpus):
    data, run = tmp_path / "data", tmp_path / "run"
    prepare_corpus(corpus, data, tokenizer="words")
    train_language_model(TrainOptions(corpus=str(data), steps=3, **SMALL), run)
    summary = train_language_model(TrainOptions(steps=5), run, resume=True, given={"steps"})
    assert summary.steps == 5
    options = json.loads((run / "options.json").read_text())["options"]
    assert options["tokenizer"] == "words" and options["corpus"] == str(data)
    # another vocabulary under the same path: refused in one line
    prepare_corpus(corpus, data, tokenizer="words", max_vocab=8, force=True)
    with pytest.raises(DataError, match="changed|not the text|another vocabulary"):
        train_language_model(TrainOptions(steps=6), run, resume=True, given={"steps"})
    with pytest.raises(DataError, match="another vocabulary.*--vocab-from"):
        train_language_model(TrainOptions(corpus=str(data), steps=1, **SMALL), tmp_path / "new", init_from=run)
    result = CliRunner().invoke(cli, ["prepare", str(corpus), "--out", str(tmp_path / "same"), "--vocab-from", str(run),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    summary = train_language_model(TrainOptions(corpus=str(tmp_path / "same"), steps=2, **SMALL), tmp_path / "new",
                                   init_from=run)
    assert summary.steps == 2


def test_a_prepared_corpus_fixes_its_settings(tmp_path, corpus):
    prepare_corpus(corpus, tmp_path / "data", tokenizer="words")
    with pytest.raises(ConfigError, match="prepared with `tokenizer` 'words'"):
        train_language_model(TrainOptions(corpus=str(tmp_path / "data"), tokenizer="whitespace", steps=1, **SMALL),
                             tmp_path / "r1")
    with pytest.raises(ConfigError, match="own validation"):
        train_language_model(TrainOptions(corpus=str(tmp_path / "data"), valid=str(corpus), steps=1, **SMALL),
                             tmp_path / "r2")


def _damage(data, how):
    train = data / "train.bin"
    if how == "truncated":
        with open(train, "r+b") as handle:
            handle.truncate(train.stat().st_size - 2)
    elif how == "modified":
        raw, stamp = bytearray(train.read_bytes()), train.stat().st_mtime_ns
        raw[4] ^= 1
        train.write_bytes(bytes(raw))
        os.utime(train, ns=(stamp, stamp + 10**9))  # as an edit a second later (a coarse clock may not tick)
    elif how == "vocabulary":
        vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))
        vocab["vocab"]["tokens"][3], vocab["vocab"]["tokens"][4] = vocab["vocab"]["tokens"][4:2:-1]
        (data / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    elif how == "no manifest":
        (data / "manifest.json").unlink()


@pytest.mark.parametrize("how,message", [("truncated", "truncated"), ("modified", "modified"),
                                         ("vocabulary", "vocab.json was modified"), ("no manifest", "without")])
def test_a_damaged_prepared_corpus_is_refused_in_one_line(tmp_path, corpus, how, message):
    data = tmp_path / "data"
    prepare_corpus(corpus, data, tokenizer="chars")
    _damage(data, how)
    with pytest.raises(DataError, match=message) as error:
        open_prepared(data)
    assert "\n" not in str(error.value)
    result = CliRunner().invoke(cli, ["train", str(data), "--steps", "1", "--out", str(tmp_path / "run"),
                                      "--backend", "numpy"])
    assert result.exit_code != 0 and message.split()[0] in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == [result.output.splitlines()[-1]]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_an_interrupted_preparation_leaves_nothing_that_looks_complete(tmp_path, corpus, monkeypatch, failure):
    real, calls = prepare_module._write_ids, []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if path.name == "valid.bin":  # train.bin is written, then the disk fills or Ctrl-C comes
            raise failure if isinstance(failure, KeyboardInterrupt) else prepare_module.write_error(path, failure)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "_write_ids", failing)
    with pytest.raises(KeyboardInterrupt if isinstance(failure, KeyboardInterrupt) else WriteError):
        prepare_corpus(corpus, tmp_path / "data", tokenizer="chars")
    assert not (tmp_path / "data").exists()
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt"]  # no temporary directory left either


def test_prepare_cli_reports_speed_and_refuses_an_existing_directory(tmp_path, corpus):
    out = str(tmp_path / "data")
    result = CliRunner().invoke(cli, ["prepare", str(corpus), "--out", out, "--tokenizer", "words", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output[result.output.index("{"):])
    assert manifest["parts"]["train"]["tokens"] > 0 and "tokenizing train" in manifest["mb_per_second"]
    result = CliRunner().invoke(cli, ["prepare", str(corpus), "--out", out, "--quiet"])
    assert result.exit_code != 0 and "--force" in result.output
    result = CliRunner().invoke(cli, ["prepare", str(corpus), "--out", out, "--quiet", "--force",
                                      "--tokenizer", "chars", "--vocab-size", "300"])
    assert result.exit_code != 0 and "bpe" in result.output
    assert open_prepared(out).settings["tokenizer"] == "words"  # the old one stands


def test_word_pieces_tokenized_by_several_processes_give_the_same_files(tmp_path, monkeypatch):
    corpus = tmp_path / "big.txt"
    corpus.write_text(TEXT * 8, encoding="utf-8")
    monkeypatch.setattr(prepare_module, "TextStream", functools.partial(TextStream, read_bytes=4096))
    one = prepare_corpus(corpus, tmp_path / "one", tokenizer="words", workers=1)
    two = prepare_corpus(corpus, tmp_path / "two", tokenizer="words", workers=2)
    assert one.vocab == two.vocab and one.manifest["parts"] == {
        name: {**entry, "mtime_ns": one.manifest["parts"][name]["mtime_ns"]}
        for name, entry in two.manifest["parts"].items()}


@pytest.mark.parametrize("limit", [1000, 10**9])
def test_bpe_learns_from_the_same_capped_text_prepared_or_not(tmp_path, corpus, monkeypatch, limit):
    import mlxrnn.run.data as run_data

    monkeypatch.setattr(prepare_module, "BPE_LEARN_CHARS", limit)
    monkeypatch.setattr(run_data, "BPE_LEARN_CHARS", limit)
    prepared = prepare_corpus(corpus, tmp_path / "data", tokenizer="bpe", vocab_size=300)
    options = TrainOptions(corpus=str(corpus), tokenizer="bpe", vocab_size=300)
    assert build_vocabulary(options, read_text(corpus))[0] == prepared.tokenizer


@pytest.mark.parametrize("kind,extra", KINDS)
def test_files_read_in_many_small_pieces_prepare_the_same_ids(tmp_path, corpus, monkeypatch, kind, extra):
    """Pieces end where each tokenizer may cut (anywhere, after a line, before a space for bpe)."""
    whole = prepare_corpus(corpus, tmp_path / "whole", tokenizer=kind, **extra)
    monkeypatch.setattr(prepare_module, "TextStream", functools.partial(TextStream, read_bytes=37))
    pieces = prepare_corpus(corpus, tmp_path / "pieces", tokenizer=kind, workers=1, **extra)
    assert pieces.vocab == whole.vocab and pieces.sha256 == whole.sha256
    assert np.array_equal(pieces.part("valid"), whole.part("valid"))
