"""Vocabulary: tokens <-> int32 ids, with <PAD>, <UNK>, <EOS> at ids 0, 1, 2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError
from mlxrnn.nn.sequences import EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, is_integer
from mlxrnn.text.tokenizers import LEVELS, _check_level

#: the longest word-level token a vocabulary holds (longer "words" of a corpus stay <UNK>)
MAX_WORD_CHARS = 1000

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
        self.level: str = _check_level(level)
        self._tokens: tuple[str, ...] = _validate_token_list(tokens)
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
        if max_size is not None and (not is_integer(max_size) or max_size < 4):
            raise ConfigError(
                f"max vocabulary size must be an integer >= 4 (3 special tokens + 1), "
                f"got {max_size!r}"
            )
        if not is_integer(min_count) or min_count < 1:
            raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}")

        # Counter (a dict) keeps insertion order, so iteration order == first-occurrence order,
        # which the stable sort below uses to break frequency ties; it counts in C, and a str
        # counts its characters without a list of them.
        counts: dict[str, int] = Counter(tokens)
        for tok in counts:
            if not isinstance(tok, str):
                raise ConfigError(f"tokens must be strings, got {type(tok).__name__} {tok!r}")
        total = sum(counts.values())
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = [t for t, c in counts.items() if c >= min_count and _storable(t, level)]
        if not kept:
            if total == 0:
                raise DataError("cannot build a vocabulary from an empty corpus; give some text")
            raise DataError(
                f"no token occurs at least min_count={min_count} times in {total} tokens; "
                "lower `min_count`"
            )
        kept.sort(key=lambda t: -counts[t])  # stable: ties keep first-occurrence order
        if max_size is not None:
            kept = kept[: max_size - len(SPECIAL_TOKENS)]
        return cls(list(SPECIAL_TOKENS) + kept, level=level)

    def extended(self, tokens: Iterable[str], max_size: int | None = None, min_count: int = 1) -> Vocabulary:
        """This vocabulary with the tokens of ``tokens`` it lacks appended (ids of the old tokens
        do not change), most frequent first (ties by first occurrence), those seen at least
        ``min_count`` times, up to ``max_size`` tokens in all (the old ones always stay).

        A model trained on this vocabulary can start from one trained on the old: rows
        ``0..len(self)-1`` keep their meaning (see :mod:`mlxrnn.run.init_from`).
        """
        if max_size is not None and (not is_integer(max_size) or max_size < 4):
            raise ConfigError(f"max vocabulary size must be an integer >= 4, got {max_size!r}")
        if not is_integer(min_count) or min_count < 1:
            raise ConfigError(f"min_count must be an integer >= 1, got {min_count!r}")
        counts: dict[str, int] = {}
        for tok in tokens:
            if tok not in self._index and _storable(tok, self.level):
                counts[tok] = counts.get(tok, 0) + 1
        new = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: -counts[t])  # stable
        if max_size is not None:
            new = new[: max(0, max_size - len(self))]
        return Vocabulary(self._tokens + tuple(new), level=self.level)

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
        if not is_integer(i):
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

    def check_entries(self) -> Vocabulary:
        """This vocabulary, if every entry is one a model of its level can have read: one
        character each at the char level; at the word level no whitespace, not empty, at most
        :data:`MAX_WORD_CHARS` characters (duplicates are refused when it is built). Else a
        DataError naming the first bad entry: a checkpoint's vocabulary is checked with it when
        loaded, since a tampered entry would otherwise make its token read as <UNK>."""
        for i, token in enumerate(self._tokens[len(SPECIAL_TOKENS):], start=len(SPECIAL_TOKENS)):
            problem = _entry_problem(token, self.level)
            if problem is not None:
                raise DataError(f"vocabulary token {i} ({token!r:.30}) {problem}")
        return self

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


def _storable(token: str, level: str) -> bool:
    """Whether a counted token may enter a vocabulary (an endless word stays <UNK>)."""
    return level != "word" or len(token) <= MAX_WORD_CHARS


def _entry_problem(token: str, level: str) -> str | None:
    """What is wrong with a (non-special) vocabulary entry of ``level``, or None."""
    if level == "char":
        return None if len(token) == 1 else (
            f"has {len(token):,} characters; a character model's entries are one character each")
    if not token:
        return "is empty"
    if len(token) > MAX_WORD_CHARS:
        return f"is longer than {MAX_WORD_CHARS:,} characters ({len(token):,})"
    if any(ch.isspace() for ch in token):
        return "holds whitespace, which separates words"
    return None


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


