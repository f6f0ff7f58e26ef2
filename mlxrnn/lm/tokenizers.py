"""Tokenizers: text -> tokens -> text, one class per level (characters, words).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mlxrnn.errors import ConfigError
from mlxrnn.nn.sequences import EOS

LEVELS: tuple[str, str] = ("char", "word")

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

    def continue_text(self, text: str, continuation: str) -> str: ...

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

    def continue_text(self, text: str, continuation: str) -> str:
        """``text`` followed by ``continuation`` (detokenized tokens that come after it)."""
        return text + continuation

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

    def continue_text(self, text: str, continuation: str) -> str:
        """``text`` (e.g. a prime) followed by ``continuation`` (detokenized tokens that come after
        it), with the space :meth:`detokenize` would put between its last and their first token."""
        if not text or not continuation or text[-1].isspace() or continuation[0].isspace():
            return text + continuation
        glued = continuation[0] in _NO_SPACE_BEFORE or text[-1] in _NO_SPACE_AFTER
        return text + ("" if glued else " ") + continuation

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
                "drop them or use `level` word"
            )
        return CharTokenizer()
    unknown = sorted(set(kw) - {"lowercase"})
    if unknown:
        raise ConfigError(
            f"unknown word tokenizer option(s) {', '.join(unknown)}; valid: lowercase"
        )
    return WordTokenizer(**kw)


