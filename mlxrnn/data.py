"""Corpus handling: reading, tokenizing, vocabularies, splits and truncated-BPTT batches.

Everything here is plain NumPy (int32 id arrays) so that the same data pipeline feeds both the
NumPy and the MLX backends; converting a batch to an MLX array is the backend's job.

Pipeline::

    text = read_text(path)                      # str, clean DataErrors for bad files
    tok = make_tokenizer("char")                # or make_tokenizer("word", lowercase=True)
    tokens = tok.tokenize(text)                 # list[str]
    vocab = Vocabulary.build(tokens, level=tok.level)
    ids = vocab.encode(tokens)                  # (N,) int32
    train, val, _ = split_by_fraction(ids, 0.1) # contiguous, first 90% train
    for inputs, targets in LMBatcher(train, batch_size=32, seq_len=64):
        ...                                     # (B, T) int32 each, T <= seq_len
"""

from __future__ import annotations

import codecs
import importlib.resources
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError

__all__ = [
    "EOS",
    "LEVELS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "CharTokenizer",
    "LMBatcher",
    "Tokenizer",
    "Vocabulary",
    "WordTokenizer",
    "bundled_corpus_path",
    "make_tokenizer",
    "one_hot",
    "pad_sequences",
    "read_text",
    "split_by_fraction",
]

# --------------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------------

PAD = "<PAD>"
UNK = "<UNK>"
EOS = "<EOS>"
# Fixed ids 0, 1, 2 in every vocabulary, so code that pads or masks never needs the vocabulary.
SPECIAL_TOKENS: tuple[str, str, str] = (PAD, UNK, EOS)
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2

LEVELS: tuple[str, str] = ("char", "word")


def _is_int(x: object) -> bool:
    """True for Python/NumPy integers but not bools (True would silently mean 1)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_level(level: object) -> str:
    if level not in LEVELS:
        raise ConfigError(f"unknown tokenizer level {level!r}; choose one of: {', '.join(LEVELS)}")
    return str(level)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


class Tokenizer(Protocol):
    """What the rest of mlxrnn needs from a tokenizer."""

    level: ClassVar[str]

    def tokenize(self, text: str) -> list[str]: ...

    def detokenize(self, tokens: Iterable[str]) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CharTokenizer:
    """Every character (Unicode code point) is a token; newlines are ordinary characters.

    No <EOS> is inserted: the model learns line structure from the ``"\\n"`` token itself, and
    ``detokenize(tokenize(text)) == text`` holds exactly.
    """

    level: ClassVar[str] = "char"

    def tokenize(self, text: str) -> list[str]:
        """``text`` -> list of its characters (length ``len(text)``)."""
        return list(text)

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Concatenate tokens; special tokens (if a caller passes any) appear literally."""
        return "".join(tokens)

    def to_dict(self) -> dict[str, Any]:
        """Options such that ``make_tokenizer(**tok.to_dict())`` rebuilds this tokenizer."""
        return {"level": self.level}


# A word (letters/digits/underscore, with one inner apostrophe allowed: "don't", "o'er") or any
# single character that is neither word nor space (punctuation, symbols).
_WORD_RE = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
# Punctuation written without a space before it, and brackets written without one after.
_NO_SPACE_BEFORE = frozenset(",.;:!?')]}")
_NO_SPACE_AFTER = frozenset("([{")


@dataclass(frozen=True)
class WordTokenizer:
    """Words and punctuation marks are tokens; <EOS> ends each line that has any token.

    Lines are split on ``"\\n"`` only (``"\\r"`` and other spacing is just whitespace), and
    lines without tokens (blank lines) produce nothing, so paragraph breaks are not modelled.
    ``tokenize(detokenize(tokenize(t))) == tokenize(t)`` holds for every string ``t``; exact
    round trips are impossible because spacing is normalised.

    Args:
        lowercase: lowercase each line before splitting (smaller vocabulary, loses case).
    """

    lowercase: bool = False
    level: ClassVar[str] = "word"

    def __post_init__(self) -> None:
        if not isinstance(self.lowercase, bool):
            raise ConfigError(f"lowercase must be True or False, got {self.lowercase!r}")

    def tokenize(self, text: str) -> list[str]:
        """``text`` -> words, punctuation and one <EOS> after every non-blank line."""
        tokens: list[str] = []
        for line in text.split("\n"):
            # Lowercase the whole line *before* splitting: lowercasing can change characters
            # (e.g. "İ" -> "i" + combining dot), and splitting afterwards keeps tokenize
            # idempotent through detokenize.
            if self.lowercase:
                line = line.lower()
            words = _WORD_RE.findall(line)
            if words:
                tokens.extend(words)
                tokens.append(EOS)
        return tokens

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Join with single spaces, attach punctuation, and turn each <EOS> into ``"\\n"``.

        Spaces are only ever removed next to a one-character punctuation token, so two words
        are never glued together and re-tokenizing gives back the same tokens.
        """
        parts: list[str] = []
        prev: str | None = None  # previous token on the current line; None at line start
        for tok in tokens:
            if tok == EOS:
                parts.append("\n")
                prev = None
                continue
            if prev is not None and tok not in _NO_SPACE_BEFORE and prev not in _NO_SPACE_AFTER:
                parts.append(" ")
            parts.append(tok)
            prev = tok
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Options such that ``make_tokenizer(**tok.to_dict())`` rebuilds this tokenizer."""
        return {"level": self.level, "lowercase": self.lowercase}


def make_tokenizer(level: str, **kw: Any) -> CharTokenizer | WordTokenizer:
    """Build the tokenizer for ``level`` ("char" or "word"); ``kw`` are its options.

    Raises:
        ConfigError: unknown level, or an option the tokenizer does not have.
    """
    level = _check_level(level)
    if level == "char":
        if kw:
            raise ConfigError(
                f"char tokenizer takes no options, got {', '.join(sorted(kw))}; "
                "drop them or use --level word"
            )
        return CharTokenizer()
    unknown = sorted(set(kw) - {"lowercase"})
    if unknown:
        raise ConfigError(
            f"unknown word tokenizer option(s) {', '.join(unknown)}; valid: lowercase"
        )
    return WordTokenizer(**kw)


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


class Vocabulary:
    """A bijection between tokens and ids 0..V-1 with <PAD>=0, <UNK>=1, <EOS>=2.

    Build one from a token stream with :meth:`build`; persist with :meth:`to_dict` /
    :meth:`from_dict` (plain JSON: ``{"level": "char", "tokens": [...]}`` in id order).
    """

    def __init__(self, tokens: Sequence[str], level: str = "char") -> None:
        """Wrap an id-ordered token list (validated like :meth:`from_dict`)."""
        self._tokens: tuple[str, ...] = _validate_token_list(tokens)
        self.level: str = _check_level(level)
        self._index: dict[str, int] = {t: i for i, t in enumerate(self._tokens)}

    @classmethod
    def build(
        cls,
        tokens: Iterable[str],
        max_size: int | None = None,
        min_count: int = 1,
        *,
        level: str = "char",
    ) -> Vocabulary:
        """Vocabulary of the most frequent tokens of ``tokens``.

        Args:
            tokens: the training token stream (special tokens in it are not counted again).
            max_size: cap on ``len(vocab)`` *including* the 3 special tokens (so it equals the
                model's embedding/output size); None = no cap. Must be >= 4.
            min_count: tokens occurring fewer times are dropped (they encode as <UNK>).
            level: "char" or "word", stored so a checkpoint knows how to tokenize prompts.

        Order: specials, then by descending count, ties by first occurrence in ``tokens``
        (deterministic for a given corpus).

        Raises:
            ConfigError: bad max_size/min_count/level or a non-string token.
            DataError: no token survives (empty corpus or min_count too high).
        """
        level = _check_level(level)
        if max_size is not None and (not _is_int(max_size) or max_size < 4):
            raise ConfigError(
                f"max vocabulary size must be an integer >= 4 (3 special tokens + 1), "
                f"got {max_size!r}"
            )
        if not _is_int(min_count) or min_count < 1:
            raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}")

        # dict preserves insertion order, so iteration order == first-occurrence order, which
        # the stable sort below uses to break frequency ties.
        counts: dict[str, int] = {}
        for tok in tokens:
            counts[tok] = counts.get(tok, 0) + 1
        for tok in counts:
            if not isinstance(tok, str):
                raise ConfigError(f"tokens must be strings, got {type(tok).__name__} {tok!r}")
        total = sum(counts.values())
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = [t for t, c in counts.items() if c >= min_count]
        if not kept:
            if total == 0:
                raise DataError("cannot build a vocabulary from an empty corpus; give some text")
            raise DataError(
                f"no token occurs at least min_count={min_count} times in {total} tokens; "
                "lower --min-count"
            )
        kept.sort(key=lambda t: -counts[t])  # stable: ties keep first-occurrence order
        if max_size is not None:
            kept = kept[: max_size - len(SPECIAL_TOKENS)]
        return cls(list(SPECIAL_TOKENS) + kept, level=level)

    # -- lookups --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._tokens == other._tokens and self.level == other.level

    def __hash__(self) -> int:
        return hash((self._tokens, self.level))

    def __repr__(self) -> str:
        return f"Vocabulary(level={self.level!r}, size={len(self)})"

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens in id order (``tokens[i]`` has id ``i``)."""
        return self._tokens

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def token_to_id(self, token: str) -> int:
        """Id of ``token``; unknown tokens give :attr:`unk_id` (like :meth:`encode`)."""
        return self._index.get(token, UNK_ID)

    def id_to_token(self, i: int) -> str:
        """Token with id ``i``; ConfigError if ``i`` is not in ``0..len-1``."""
        if not _is_int(i):
            raise ConfigError(f"token id must be an integer, got {i!r}")
        if not 0 <= i < len(self._tokens):
            raise ConfigError(
                f"token id {int(i)} is out of range for a vocabulary of size {len(self)}"
            )
        return self._tokens[int(i)]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Tokens -> ids, shape (N,) int32; tokens not in the vocabulary become <UNK>."""
        get, unk = self._index.get, UNK_ID
        return np.fromiter((get(t, unk) for t in tokens), dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Ids, shape (N,) -> list of N tokens.

        Raises:
            ShapeError (a ConfigError): ``ids`` is not a 1-D integer sequence.
            ConfigError: an id is outside ``0..len-1``.
        """
        arr = np.asarray(ids)
        if arr.size == 0:
            return []
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ShapeError(
                f"decode expects a 1-D sequence of integer ids, got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        bad = (arr < 0) | (arr >= len(self._tokens))
        if bad.any():
            raise ConfigError(
                f"token id {int(arr[bad][0])} is out of range for a vocabulary of size {len(self)}"
            )
        toks = self._tokens
        return [toks[i] for i in arr.tolist()]

    # -- persistence ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"level": str, "tokens": [str, ...]}`` (tokens in id order)."""
        return {"level": self.level, "tokens": list(self._tokens)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; DataError on anything malformed (unknown keys ignored)."""
        if not isinstance(d, Mapping):
            raise DataError(f"vocabulary must be a JSON object, got {type(d).__name__}")
        if "tokens" not in d or "level" not in d:
            missing = [k for k in ("level", "tokens") if k not in d]
            raise DataError(
                f"vocabulary is missing key(s) {', '.join(missing)}; re-save it with "
                "Vocabulary.to_dict()"
            )
        if d["level"] not in LEVELS:
            raise DataError(
                f"vocabulary has unknown level {d['level']!r}; expected one of {', '.join(LEVELS)}"
            )
        if not isinstance(d["tokens"], (list, tuple)):
            raise DataError(
                f"vocabulary 'tokens' must be a list of strings, got {type(d['tokens']).__name__}"
            )
        try:
            return cls(d["tokens"], level=d["level"])
        except ConfigError as e:  # token-list problems are data problems when loading
            raise DataError(str(e)) from None


def _validate_token_list(tokens: Sequence[str]) -> tuple[str, ...]:
    toks = tuple(tokens)
    for i, t in enumerate(toks):
        if not isinstance(t, str):
            raise ConfigError(f"vocabulary token {i} is a {type(t).__name__}, not a string")
    if toks[:3] != SPECIAL_TOKENS:
        raise ConfigError(
            f"vocabulary must start with {', '.join(SPECIAL_TOKENS)} at ids 0, 1, 2; "
            f"got {list(toks[:3])!r}"
        )
    seen: set[str] = set()
    for t in toks:
        if t in seen:
            raise ConfigError(f"vocabulary token {t!r} appears more than once")
        seen.add(t)
    return toks


# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def _as_int_array(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64; treat as ints
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ShapeError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences into one batch.

    Args:
        seqs: B sequences of ids (lists or 1-D integer arrays), possibly of different lengths.
        pad_id: id written after the end of each sequence.
        max_len: if given, T = max_len exactly and longer sequences are truncated (their
            first max_len ids kept); otherwise T = the longest length.

    Returns:
        ids: (B, T) int32, ``ids[b, :lengths[b]]`` is sequence b, the rest is ``pad_id``.
        lengths: (B,) int32, the (possibly truncated) length of each sequence.
    """
    if max_len is not None and (not _is_int(max_len) or max_len < 1):
        raise ConfigError(f"max_len must be a positive integer or None, got {max_len!r}")
    rows = []
    for b, s in enumerate(seqs):
        arr = _as_int_array(s, f"sequence {b}")
        if arr.ndim != 1:
            raise ShapeError(f"sequence {b} must be 1-D, got shape {arr.shape}")
        rows.append(arr if max_len is None else arr[:max_len])
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    T = int(max_len) if max_len is not None else int(lengths.max(initial=0))
    out = np.full((len(rows), T), pad_id, dtype=np.int32)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out, lengths


def one_hot(ids: Any, num_classes: int, dtype: Any = np.float32) -> np.ndarray:
    """One-hot encode integer ids: shape S -> S + (num_classes,), in ``dtype``.

    Built by scattering into zeros rather than indexing ``np.eye`` so a word vocabulary of
    size V costs O(|ids| * V), not an extra V x V matrix.
    """
    if not _is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    arr = _as_int_array(ids, "one_hot ids")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)].flat[0]
        raise ConfigError(f"id {int(bad)} is out of range for one_hot with {num_classes} classes")
    out = np.zeros(arr.shape + (int(num_classes),), dtype=dtype)
    flat = out.reshape(-1, int(num_classes))  # a view: out is freshly allocated, contiguous
    flat[np.arange(arr.size), arr.reshape(-1)] = 1
    return out


# --------------------------------------------------------------------------------------------
# Train / validation / test split
# --------------------------------------------------------------------------------------------


def _check_fraction(x: Any, flag: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{flag} must be a number in [0, 1), got {x!r}")
    if not 0.0 <= float(x) < 1.0:  # also rejects NaN
        raise ConfigError(f"{flag} must be in [0, 1), got {x!r}")
    return float(x)


def split_by_fraction(
    ids: np.ndarray, val_frac: float, test_frac: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous split of a token stream (N,) into train | val | test (nanoGPT style).

    The boundaries are ``floor(N * (1 - val - test))`` and ``floor(N * (1 - test))``, so with
    val_frac=0.1 the first 90% is train and the last 10% validation. Contiguous (not shuffled)
    splits keep validation text unseen and its sequences intact for truncated BPTT.

    Returns:
        (train, val, test): 1-D views into ``ids`` (no copy), lengths summing to N; a part
        whose fraction is 0 is empty.

    Raises:
        ConfigError: a fraction outside [0, 1) or val_frac + test_frac >= 1.
        ShapeError: ``ids`` is not 1-D.
        DataError: the corpus is so short that a requested part would be empty.
    """
    val_frac = _check_fraction(val_frac, "--val-frac")
    test_frac = _check_fraction(test_frac, "--test-frac")
    if val_frac + test_frac >= 1.0:
        raise ConfigError(
            f"--val-frac + --test-frac must be < 1 to leave training data, got "
            f"{val_frac} + {test_frac}"
        )
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ShapeError(f"split_by_fraction expects a 1-D token stream, got shape {arr.shape}")
    n = len(arr)
    # A relative tolerance so that e.g. N * 0.7000000000000001 does not floor one token short.
    eps = 1e-9 * max(n, 1)
    b1 = min(n, math.floor(n * (1.0 - val_frac - test_frac) + eps))
    b2 = n if test_frac == 0.0 else min(n, math.floor(n * (1.0 - test_frac) + eps))
    train, val, test = arr[:b1], arr[b1:b2], arr[b2:]
    for name, part, frac, flag in (
        ("training", train, 1.0, "--val-frac/--test-frac" if test_frac else "--val-frac"),
        ("validation", val, val_frac, "--val-frac"),
        ("test", test, test_frac, "--test-frac"),
    ):
        if frac > 0 and len(part) == 0:
            raise DataError(
                f"the {name} split of a {n}-token corpus would be empty; use a longer corpus "
                f"or change {flag}"
            )
    return train, val, test


# --------------------------------------------------------------------------------------------
# Truncated-BPTT batcher
# --------------------------------------------------------------------------------------------


class LMBatcher:
    """Language-model batches for truncated BPTT (char-rnn / Zaremba et al. layout).

    The stream ``ids`` (N,) is cut into B = ``batch_size`` contiguous, parallel streams of
    L = (N - 1) // B steps; the last N - 1 - B*L tokens are dropped. Stream b is
    ``ids[b*L : b*L + L + 1]`` (L + 1 tokens: inputs are its positions 0..L-1, targets 1..L;
    consecutive streams share one boundary token). Window k is::

        inputs  = streams[:, k*T     : k*T + T]        # (B, T') int32
        targets = streams[:, k*T + 1 : k*T + T + 1]    # (B, T') int32, next token of inputs

    with T = ``seq_len`` and T' = T except possibly a shorter last window (kept, so every
    position 1..L of every stream is a target exactly once per epoch).

    Statefulness: row b of every window continues row b of the previous window, so the
    hidden state at the end of window k is the correct initial state for window k+1. Carry it
    across windows (detached: no gradient flows back past the window), and reset it to zeros
    at the start of each epoch, since window 0 restarts the streams.

    Args:
        ids: (N,) integer token ids.
        batch_size: B >= 1.
        seq_len: T >= 1, BPTT truncation length.
        name: how to call the data in error messages (e.g. "validation split").
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, *, name: str = "corpus"
    ) -> None:
        for flag, v in (("--batch-size", batch_size), ("--seq-len", seq_len)):
            if not _is_int(v) or v < 1:
                raise ConfigError(f"{flag} must be a positive integer, got {v!r}")
        arr = _as_int_array(ids, "token ids")
        if arr.ndim != 1:
            raise ShapeError(f"LMBatcher expects a 1-D token stream, got shape {arr.shape}")
        n = len(arr)
        B, T = int(batch_size), int(seq_len)
        L = (n - 1) // B if n > 0 else 0
        if L < 1:
            raise DataError(
                f"the {name} has {n} tokens, too few for --batch-size {B} (each of the {B} "
                f"rows needs 2 tokens, so at least {B + 1}); lower --batch-size"
            )
        if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
            raise ConfigError("token ids must be non-negative and fit in int32")
        self.batch_size: int = B
        self.seq_len: int = T
        self.stream_len: int = L  # L: input (and target) steps per row per epoch
        self.num_tokens: int = n
        # (B, L+1) copy: row b = ids[b*L : b*L + L + 1]. Costs about one corpus of int32 and
        # makes every window a plain 2-D slice.
        starts = np.arange(B, dtype=np.int64)[:, None] * L
        self.streams: np.ndarray = arr[starts + np.arange(L + 1)].astype(np.int32)

    @property
    def num_tokens_per_epoch(self) -> int:
        """Number of target tokens per epoch: B * L."""
        return self.batch_size * self.stream_len

    @property
    def num_dropped_tokens(self) -> int:
        """Tokens at the end of the stream that no row uses (N - 1 - B*L)."""
        return self.num_tokens - 1 - self.num_tokens_per_epoch

    def __len__(self) -> int:
        """Windows per epoch: ceil(L / seq_len)."""
        return (self.stream_len + self.seq_len - 1) // self.seq_len

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``k`` (0 <= k < len) as fresh ``(inputs, targets)``, each (B, T') int32.

        Random access lets training resume mid-epoch at exactly the window it stopped at.
        """
        if not _is_int(k) or not 0 <= k < len(self):
            raise ConfigError(f"window index must be in 0..{len(self) - 1}, got {k!r}")
        t0 = int(k) * self.seq_len
        t1 = min(t0 + self.seq_len, self.stream_len)
        # Copies: callers may hand them to another backend or mutate them.
        return self.streams[:, t0:t1].copy(), self.streams[:, t0 + 1 : t1 + 1].copy()

    def iter_from(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Windows ``start, start+1, ..., len-1`` (resume an interrupted epoch)."""
        if not _is_int(start) or not 0 <= start <= len(self):
            raise ConfigError(f"start window must be in 0..{len(self)}, got {start!r}")
        for k in range(int(start), len(self)):
            yield self.window(k)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.iter_from(0)

    def __repr__(self) -> str:
        return (
            f"LMBatcher(batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"stream_len={self.stream_len}, windows={len(self)})"
        )


# --------------------------------------------------------------------------------------------
# Corpus files
# --------------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole corpus file as text, with one-line DataErrors for every common problem.

    Newlines are normalised like text-mode ``open()`` ("\\r\\n" and "\\r" -> "\\n") so the
    same corpus gives the same tokens on every platform.

    Args:
        path: the file.
        encoding: any Python codec name (``--encoding``).
        errors: codec error handler, e.g. "strict", "replace", "ignore" (``--encoding-errors``).

    Raises:
        DataError: missing file, a directory, unreadable, undecodable (with the byte offset of
            the first bad byte), or empty / whitespace-only.
        ConfigError: unknown encoding or error handler.
    """
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):  # ValueError: e.g. a NUL in the name
        raise ConfigError(
            f"unknown encoding {encoding!r}; pass a Python codec name such as --encoding utf-8"
        ) from None
    try:
        b"a".decode(encoding)  # codecs such as rot13, base64 or hex exist but do not make text
    except UnicodeError:
        pass  # a text codec that cannot decode b"a" alone (utf-16, utf-32)
    except LookupError:
        raise ConfigError(
            f"{encoding!r} is not a text encoding; pass one such as --encoding utf-8 or latin-1"
        ) from None
    try:
        codecs.lookup_error(errors)
    except (LookupError, TypeError):
        raise ConfigError(
            f"unknown encoding error handler {errors!r}; use --encoding-errors strict, "
            "replace or ignore"
        ) from None
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        mode = 0  # missing or unreadable: read_bytes below says which
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        # /dev/zero or /dev/urandom would be read forever; a terminal would wait for typing.
        raise DataError(f"{p} is a device or socket, not a text file; pass the corpus file itself")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise DataError(
            f"{p} is a directory, not a text file; pass the corpus file itself"
        ) from None
    except PermissionError:
        raise DataError(f"permission denied reading {p}; check the file's permissions") from None
    except OSError as e:  # e.g. a directory on platforms that raise a plain OSError
        if p.is_dir():
            raise DataError(
                f"{p} is a directory, not a text file; pass the corpus file itself"
            ) from None
        raise DataError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        text = data.decode(encoding, errors)
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 1].hex()
        raise DataError(
            f"cannot decode {p} as {encoding}: invalid byte 0x{bad} at byte offset {e.start}; "
            f"pass the right --encoding (e.g. latin-1) or --encoding-errors replace"
        ) from None
    except UnicodeError as e:  # codecs such as idna raise the base class, without an offset
        raise DataError(
            f"cannot decode {p} as {encoding} ({e}); pass the right --encoding (e.g. utf-8 or latin-1)"
        ) from None
    try:
        text.encode("utf-8")  # e.g. errors="surrogateescape": lone surrogates cannot be stored or printed
    except UnicodeEncodeError as e:
        raise DataError(
            f"decoding {p} as {encoding} with errors={errors!r} left an unpaired surrogate at character "
            f"{e.start}; use another --encoding or --encoding-errors replace"
        ) from None
    if not text.strip():
        raise DataError(f"{p} is empty (or only whitespace); give a corpus with some text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def bundled_corpus_path() -> Path:
    """Path of the bundled tiny-shakespeare corpus (about 1.1 MB, 1,115,394 characters)."""
    res = importlib.resources.files("mlxrnn") / "corpora" / "tinyshakespeare.txt"
    # files() gives a real Path for ordinary installs; fall back to the module's directory
    # for exotic loaders rather than returning something open() cannot use.
    if isinstance(res, Path):
        path = res
    else:
        path = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt"
    if not path.is_file():
        raise DataError(f"bundled corpus missing at {path}; reinstall mlxrnn")
    return path
