"""Tests for mlxrnn.lm (tokenizers, vocabulary, corpus, batching) and mlxrnn.nn.sequences: tokenizers, vocabulary, array helpers, splits, batcher, corpus files."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.nn.sequences import EOS, PAD, UNK, pad_sequences
from mlxrnn.text.batching import LMBatcher
from mlxrnn.text.corpus import bundled_corpus_path, read_text, split_by_fraction
from mlxrnn.text.tokenizers import CharTokenizer, WordTokenizer, make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that exercises the word tokenizer's interesting cases: apostrophes, punctuation next to
# words, brackets, blank lines, \r, tabs, case changes (incl. characters whose lowercase form
# differs in length, and the Greek final sigma).
tricky_text = st.text(alphabet="aZé İΣσ'’,.;:!?()[]-_\n\r\t 09<>", max_size=60)
any_text = st.text(max_size=80)


# ------------------------------------------------------------------------------------------
# Tokenizers
# ------------------------------------------------------------------------------------------


@FAST
@given(any_text)
def test_char_round_trip_is_exact(text: str) -> None:
    tok = CharTokenizer()
    tokens = tok.tokenize(text)
    assert len(tokens) == len(text)
    assert EOS not in tokens
    assert tok.detokenize(tokens) == text


@FAST
@given(st.one_of(any_text, tricky_text), st.booleans())
def test_word_tokenize_is_idempotent_through_detokenize(text: str, lowercase: bool) -> None:
    tok = WordTokenizer(lowercase=lowercase)
    tokens = tok.tokenize(text)
    assert tok.tokenize(tok.detokenize(tokens)) == tokens


@FAST
@given(st.one_of(any_text, tricky_text), st.booleans())
def test_word_tokens_structure(text: str, lowercase: bool) -> None:
    tokens = WordTokenizer(lowercase=lowercase).tokenize(text)
    # Tokens carry no whitespace, and every line that has tokens is closed by exactly one EOS.
    assert all(t and not any(c.isspace() for c in t) for t in tokens)
    if tokens:
        assert tokens[0] != EOS
        assert tokens[-1] == EOS
    assert all(not (a == EOS and b == EOS) for a, b in itertools.pairwise(tokens))
    assert tokens.count(EOS) <= text.count("\n") + 1
    if lowercase:
        assert all(t == t.lower() for t in tokens if t != EOS)


def test_word_tokenize_example() -> None:
    text = "Hello, world!\n\n  Don't stop.\r\nO'er (it)"
    assert WordTokenizer().tokenize(text) == [
        "Hello", ",", "world", "!", EOS,
        "Don't", "stop", ".", EOS,
        "O'er", "(", "it", ")", EOS,
    ]  # fmt: skip
    assert WordTokenizer(lowercase=True).tokenize("The CAT.") == ["the", "cat", ".", EOS]


def test_word_tokenize_never_produces_specials_from_text() -> None:
    assert WordTokenizer().tokenize("<EOS> <PAD>") == ["<", "EOS", ">", "<", "PAD", ">", EOS]


def test_word_detokenize_attaches_punctuation_and_breaks_lines() -> None:
    tokens = ["Hello", ",", "world", "!", EOS, "Don't", "(", "stop", ")", ".", EOS, "x", "'", "y"]
    assert WordTokenizer().detokenize(tokens) == "Hello, world!\nDon't (stop).\nx' y"


def test_make_tokenizer() -> None:
    assert isinstance(make_tokenizer("char"), CharTokenizer)
    word = make_tokenizer("word", lowercase=True)
    assert isinstance(word, WordTokenizer) and word.lowercase
    assert make_tokenizer(**word.to_dict()) == word
    assert make_tokenizer(**CharTokenizer().to_dict()) == CharTokenizer()
    with pytest.raises(ConfigError, match="char.*word"):
        make_tokenizer("bpe")
    with pytest.raises(ConfigError):
        make_tokenizer("char", lowercase=True)
    with pytest.raises(ConfigError, match="lowercase"):
        make_tokenizer("word", stem=True)


# ------------------------------------------------------------------------------------------
# Vocabulary
# ------------------------------------------------------------------------------------------


def test_vocab_specials_and_frequency_order() -> None:
    tokens = list("zy") + ["a"] * 3 + ["y"] * 2 + [EOS, "d", "z"]
    v = Vocabulary.build(tokens, level="char")
    # counts: z 2, y 3, a 3, d 1 -> y, a tie at 3 (y seen first, though "a" sorts first),
    # then z, then d
    assert v.tokens == (PAD, UNK, EOS, "y", "a", "z", "d")
    assert (v.pad_id, v.unk_id, v.eos_id) == (0, 1, 2)
    assert [v.id_to_token(i) for i in range(3)] == [PAD, UNK, EOS]
    assert v.token_to_id(EOS) == 2 and v.tokens.count(EOS) == 1
    assert len(v) == 7 and "a" in v and "b" not in v


def test_vocab_max_size_and_min_count() -> None:
    tokens = ["a"] * 5 + ["b"] * 3 + ["c"] * 4 + ["d"]
    assert Vocabulary.build(tokens, max_size=5).tokens == (PAD, UNK, EOS, "a", "c")
    assert Vocabulary.build(tokens, min_count=4).tokens == (PAD, UNK, EOS, "a", "c")
    assert Vocabulary.build(tokens, min_count=2).tokens == (PAD, UNK, EOS, "a", "c", "b")


@FAST
@given(
    st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=80),
    st.integers(4, 14),
    st.integers(1, 4),
)
def test_vocab_top_m_property(tokens: list[str], max_size: int, min_count: int) -> None:
    counts = {t: tokens.count(t) for t in set(tokens)}
    if max(counts.values()) < min_count:
        with pytest.raises(DataError, match="`min_count`"):
            Vocabulary.build(tokens, max_size=max_size, min_count=min_count)
        return
    v = Vocabulary.build(tokens, max_size=max_size, min_count=min_count)
    assert v.tokens[:3] == (PAD, UNK, EOS)
    assert len(v) <= max_size
    kept = v.tokens[3:]
    dropped = set(counts) - set(kept)
    assert all(counts[t] >= min_count for t in kept)
    # Every kept token is at least as frequent as every dropped token that passed min_count,
    # and nothing eligible was dropped while there was still room.
    eligible_dropped = [t for t in dropped if counts[t] >= min_count]
    if eligible_dropped:
        assert len(v) == max_size
        assert min(counts[t] for t in kept) >= max(counts[t] for t in eligible_dropped)
    assert [counts[t] for t in kept] == sorted((counts[t] for t in kept), reverse=True)


def test_vocab_encode_decode_and_unknowns() -> None:
    v = Vocabulary.build(list("hello world"))
    ids = v.encode(list("hold") + ["Q", EOS])
    assert ids.dtype == np.int32 and ids.shape == (6,)
    assert ids[4] == v.unk_id and ids[5] == v.eos_id
    assert v.decode(ids) == list("hold") + [UNK, EOS]
    assert v.token_to_id("Q") == v.unk_id
    assert v.encode([]).shape == (0,) and v.decode([]) == []
    with pytest.raises(ConfigError, match="out of range"):
        v.decode([0, len(v)])
    with pytest.raises(ConfigError, match="out of range"):
        v.decode(np.array([-1]))
    with pytest.raises(ConfigError):
        v.id_to_token(len(v))


@FAST
@given(st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=40), st.booleans())
def test_vocab_dict_round_trip(tokens: list[str], word: bool) -> None:
    v = Vocabulary.build(tokens, level="word" if word else "char")
    d = json.loads(json.dumps(v.to_dict()))
    assert d["tokens"] == list(v.tokens)
    w = Vocabulary.from_dict(d)
    assert w == v and w.level == v.level
    known = [t for t in tokens if t in v]
    assert w.decode(w.encode(known)) == known


@pytest.mark.parametrize(
    "d",
    [
        [PAD, UNK, EOS],
        {"tokens": [PAD, UNK, EOS, "a"]},
        {"level": "char"},
        {"level": "byte", "tokens": [PAD, UNK, EOS, "a"]},
        {"level": "char", "tokens": "abc"},
        {"level": "char", "tokens": [UNK, PAD, EOS, "a"]},
        {"level": "char", "tokens": ["a", "b"]},
        {"level": "char", "tokens": [PAD, UNK, EOS, "a", "a"]},
        {"level": "char", "tokens": [PAD, UNK, EOS, "a", PAD]},
        {"level": "char", "tokens": [PAD, UNK, EOS, 5]},
    ],
)
def test_vocab_from_malformed_dict_raises(d: object) -> None:
    with pytest.raises(DataError):
        Vocabulary.from_dict(d)  # type: ignore[arg-type]


def test_vocab_build_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        Vocabulary.build(["a"], max_size=3)
    with pytest.raises(ConfigError):
        Vocabulary.build(["a"], min_count=0)
    with pytest.raises(ConfigError):
        Vocabulary.build(["a"], level="bpe")
    with pytest.raises(ConfigError):
        Vocabulary.build(["a", 3])  # type: ignore[list-item]
    with pytest.raises(DataError, match="empty"):
        Vocabulary.build([])


# ------------------------------------------------------------------------------------------
# pad_sequences
# ------------------------------------------------------------------------------------------


def test_pad_sequences_example() -> None:
    ids, lengths = pad_sequences([[5, 6, 7], [8], []], pad_id=0)
    assert ids.dtype == np.int32 and lengths.dtype == np.int32
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    ids, lengths = pad_sequences([[5, 6, 7], [8]], pad_id=9, max_len=2)
    np.testing.assert_array_equal(ids, [[5, 6], [8, 9]])
    np.testing.assert_array_equal(lengths, [2, 1])
    with pytest.raises(ConfigError):
        pad_sequences([[1]], max_len=0)
    with pytest.raises(ConfigError):
        pad_sequences([[1.5]])


@FAST
@given(
    st.lists(st.lists(st.integers(3, 50), max_size=8), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(1, 10)),
)
def test_pad_sequences_property(seqs: list[list[int]], max_len: int | None) -> None:
    ids, lengths = pad_sequences(seqs, pad_id=1, max_len=max_len)
    T = max_len if max_len is not None else max(len(s) for s in seqs)
    assert ids.shape == (len(seqs), T)
    for b, s in enumerate(seqs):
        n = min(len(s), T)
        assert lengths[b] == n
        assert ids[b, :n].tolist() == s[:n]
        assert (ids[b, n:] == 1).all()


# ------------------------------------------------------------------------------------------
# split_by_fraction
# ------------------------------------------------------------------------------------------


def test_split_nanogpt_style() -> None:
    ids = np.arange(100)
    train, val, test = split_by_fraction(ids, 0.1)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    assert test.shape == (0,)
    train, val, test = split_by_fraction(ids, 0.1, 0.2)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert val[0] == 70 and test[0] == 80


@FAST
@given(st.integers(1, 500), st.floats(0, 0.45), st.floats(0, 0.45))
def test_split_property(n: int, val_frac: float, test_frac: float) -> None:
    ids = np.arange(n)
    try:
        train, val, test = split_by_fraction(ids, val_frac, test_frac)
    except DataError:
        # Only allowed when a requested part is too small to hold a single token.
        requested = [1 - val_frac - test_frac] + [f for f in (val_frac, test_frac) if f > 0]
        assert min(requested) * n < 1 + 1e-6
        return
    np.testing.assert_array_equal(np.concatenate([train, val, test]), ids)
    assert abs(len(val) - n * val_frac) <= 1 and abs(len(test) - n * test_frac) <= 1
    assert len(train) >= 1
    if val_frac == 0:
        assert len(val) == 0
    if test_frac == 0:
        assert len(test) == 0


@pytest.mark.parametrize(
    ("val", "test"), [(-0.1, 0.0), (1.0, 0.0), (0.5, 0.5), (0.1, 1.2), (float("nan"), 0.0)]
)
def test_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ConfigError):
        split_by_fraction(np.arange(100), val, test)


def test_split_too_short_raises() -> None:
    # Boundaries floor(9.4) == floor(9.5) == 9: the validation part would be empty.
    with pytest.raises(DataError, match="validation"):
        split_by_fraction(np.arange(10), 0.01, 0.05)
    with pytest.raises(DataError, match="training"):
        split_by_fraction(np.arange(1), 0.5)
    with pytest.raises(DataError, match="training"):
        split_by_fraction(np.arange(0), 0.0)


# ------------------------------------------------------------------------------------------
# LMBatcher
# ------------------------------------------------------------------------------------------

batcher_args = st.tuples(st.integers(2, 300), st.integers(1, 12), st.integers(1, 20)).filter(
    lambda a: (a[0] - 1) // a[1] >= 1
)


@FAST
@given(batcher_args, st.integers(0, 2**32 - 1))
def test_batcher_rows_are_the_streams(args: tuple[int, int, int], seed: int) -> None:
    n, B, T = args
    ids = np.random.default_rng(seed).integers(0, 50, size=n)
    batcher = LMBatcher(ids, batch_size=B, seq_len=T)
    L = (n - 1) // B
    windows = list(batcher)
    assert len(windows) == len(batcher) == math.ceil(L / T)
    for k, (x, y) in enumerate(windows):
        assert x.dtype == np.int32 and y.dtype == np.int32
        assert x.shape == y.shape
        assert x.shape[0] == B
        assert x.shape[1] == (T if k < len(windows) - 1 else L - (len(windows) - 1) * T)
    xs = np.concatenate([x for x, _ in windows], axis=1)
    ys = np.concatenate([y for _, y in windows], axis=1)
    for b in range(B):
        stream = ids[b * L : b * L + L + 1]
        np.testing.assert_array_equal(xs[b], stream[:-1])  # inputs: positions 0..L-1
        np.testing.assert_array_equal(ys[b], stream[1:])  # targets: the next token of each
    assert batcher.num_tokens_per_epoch == ys.size == B * L


@FAST
@given(batcher_args)
def test_batcher_each_position_is_a_target_once(args: tuple[int, int, int]) -> None:
    n, B, T = args
    # With ids == positions, a target's value is its position in the stream.
    batcher = LMBatcher(np.arange(n), batch_size=B, seq_len=T)
    L = (n - 1) // B
    targets = np.concatenate([y.ravel() for _, y in batcher])
    # Trimmed stream is positions 0..B*L; row b starts at b*L, which (for b >= 1) is the last
    # target of row b-1, so every position but 0 is a target exactly once.
    np.testing.assert_array_equal(np.sort(targets), np.arange(1, B * L + 1))
    for x, y in batcher:
        np.testing.assert_array_equal(y, x + 1)


@FAST
@given(batcher_args)
def test_batcher_window_random_access_and_state_carry(args: tuple[int, int, int]) -> None:
    n, B, T = args
    ids = (np.arange(n) * 7919) % 101
    batcher = LMBatcher(ids, batch_size=B, seq_len=T)
    windows = list(batcher)
    for k in range(len(batcher)):
        xk, yk = batcher.window(k)
        np.testing.assert_array_equal(xk, windows[k][0])
        np.testing.assert_array_equal(yk, windows[k][1])
        if k + 1 < len(batcher):
            # Row b of window k+1 continues row b of window k: carrying h across is correct.
            np.testing.assert_array_equal(windows[k + 1][0][:, 0], yk[:, -1])
    start = len(batcher) // 2
    resumed = list(batcher.iter_from(start))
    assert len(resumed) == len(batcher) - start
    for (xa, ya), (xb, yb) in zip(resumed, windows[start:]):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_batcher_windows_are_copies() -> None:
    batcher = LMBatcher(np.arange(41), batch_size=4, seq_len=3)
    x, y = batcher.window(0)
    x[:] = -1
    y[:] = -1
    x2, y2 = batcher.window(0)
    np.testing.assert_array_equal(x2, [[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]])
    np.testing.assert_array_equal(y2, x2 + 1)


@pytest.mark.parametrize(("n", "B"), [(0, 1), (1, 1), (5, 5), (10, 32)])
def test_batcher_too_short_corpus(n: int, B: int) -> None:
    with pytest.raises(DataError, match="`batch_size`") as e:
        LMBatcher(np.arange(n), batch_size=B, seq_len=8)
    assert f"{n} tokens" in str(e.value) and "\n" not in str(e.value)


def test_batcher_minimal_corpus_and_bad_args() -> None:
    b = LMBatcher(np.arange(6), batch_size=5, seq_len=100)  # L == 1: one step per row
    assert len(b) == 1 and b.num_tokens_per_epoch == 5
    for bad in ({"batch_size": 0, "seq_len": 4}, {"batch_size": 2, "seq_len": 0}):
        with pytest.raises(ConfigError):
            LMBatcher(np.arange(100), **bad)
    with pytest.raises(ConfigError):
        b.window(1)
    with pytest.raises(ConfigError):
        b.window(-1)


# ------------------------------------------------------------------------------------------
# Corpus files
# ------------------------------------------------------------------------------------------


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_read_text_ok_and_newlines(tmp_path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes("héllo\r\nworld\rend".encode())
    assert read_text(p) == "héllo\nworld\nend"
    assert read_text(str(p)) == "héllo\nworld\nend"


def test_read_text_missing(tmp_path) -> None:
    p = tmp_path / "nope.txt"
    with pytest.raises(DataError) as e:
        read_text(p)
    assert _one_line(e) == f"no such file: {p}"


def test_read_text_directory(tmp_path) -> None:
    with pytest.raises(DataError, match="directory") as e:
        read_text(tmp_path)
    _one_line(e)


@pytest.mark.parametrize("content", [b"", b" \n\t\r\n  "])
def test_read_text_empty(tmp_path, content: bytes) -> None:
    p = tmp_path / "e.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match="empty") as e:
        read_text(p)
    _one_line(e)


@pytest.mark.parametrize(("content", "offset"), [(b"abc\xffdef", 3), (b"\xc3\xa9\xe2\x82", 2)])
def test_read_text_bad_byte_offset(tmp_path, content: bytes, offset: int) -> None:
    p = tmp_path / "b.txt"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_text(p)
    msg = _one_line(e)
    assert f"offset {offset}" in msg
    assert "`encoding`" in msg and "`encoding_errors` replace" in msg
    # The suggested fixes work.
    assert read_text(p, errors="replace").count("\ufffd") >= 1
    assert len(read_text(p, encoding="latin-1")) == len(content)


def test_read_text_bad_codec_names(tmp_path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("abc")
    with pytest.raises(ConfigError):
        read_text(p, encoding="no-such-codec")
    with pytest.raises(ConfigError):
        read_text(p, errors="no-such-handler")


def test_bundled_corpus() -> None:
    path = bundled_corpus_path()
    assert os.path.isfile(path)
    assert 1_000_000 < os.path.getsize(path) < 1_200_000
    text = read_text(path)
    assert text.startswith("First Citizen:")
    with open(path, encoding="utf-8") as f:
        assert f.read(5) == "First"
