"""Tokenizers: text -> tokens -> text. Four kinds, at three levels:

    kind        level    tokens                                          for
    chars       char     every character                                 raw text, char-rnn style
    words       word     words, punctuation marks, <...> markers         raw prose (a regex split)
    whitespace  word     whatever whitespace separates                   pre-tokenized corpora
    bpe         subword  byte-level BPE pieces learned from the text     raw prose, any language
                         (:mod:`mlxrnn.text.bpe`; exact round trip)

A word model's perplexity is per token of its tokenizer (including one <EOS> per line), so the
same text gives different numbers under ``words`` and ``whitespace``; a pre-tokenized corpus
(one sentence per line, rare words already ``<unk>``, as the classic LM benchmarks ship) is
meant for ``whitespace``, which reproduces the corpus's own token count.

Unknown words. In word corpora a literal ``<unk>`` (``unk_token``) stands for a rare word: both
word tokenizers turn it into the vocabulary's <UNK> (and write it back on detokenize), so the
model predicts <UNK> where the corpus has it and the token count stays the corpus's. The other
special names are never produced from text: a literal ``<PAD>`` or ``<EOS>`` (or ``<UNK>``,
unless it is the ``unk_token``) becomes the three tokens ``<``, name, ``>``.

Clitics (``words``). An apostrophe inside a word keeps it whole (``don't``, ``o'er``,
``king's``). An apostrophe that *starts* a word and is followed by letters keeps them too
(``'s`` and ``'re`` of pre-split text such as "the king 's crown", ``'tis``, ``'em``), unless a
second apostrophe closes it at once (``'hello'`` is a quotation: ``'``, ``hello``, ``'``).
Splitting ``'s`` into ``'``, ``s`` would make the model learn trivially predictable tokens.

Checkpoints store :meth:`to_dict`; :func:`tokenizer_from_dict` rebuilds it, and a word
tokenizer stored before the kinds existed (no ``kind`` key) keeps the splitting it was trained
with (``version`` 1: markers and leading-apostrophe clitics split, no ``unk_token``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from mlxrnn.errors import ConfigError
from mlxrnn.nn.sequences import EOS, SPECIAL_TOKENS, UNK
from mlxrnn.text.bpe import BPETokenizer, bpe_from_dict

LEVELS: tuple[str, ...] = ("char", "word", "subword")
#: tokenizer kinds, each with its level (bpe: a byte-level BPE learned from the text, :mod:`mlxrnn.text.bpe`)
TOKENIZERS: dict[str, str] = {"whitespace": "word", "words": "word", "chars": "char", "bpe": "subword"}
#: the kind a level means when no kind is named (``--level word`` alone)
DEFAULT_KIND: dict[str, str] = {"char": "chars", "word": "words", "subword": "bpe"}
#: the literal that stands for an unknown word in the classic word corpora
DEFAULT_UNK_TOKEN = "<unk>"


def _check_level(level: object) -> str:
    if level not in LEVELS:
        raise ConfigError(f"unknown tokenizer level {level!r}; choose one of: {', '.join(LEVELS)}")
    return str(level)


class Tokenizer(Protocol):
    """What the rest of mlxrnn needs from a tokenizer."""

    level: ClassVar[str]
    kind: ClassVar[str]

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
    kind: ClassVar[str] = "chars"

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
        """What :func:`tokenizer_from_dict` rebuilds this tokenizer from."""
        return {"level": self.level}


def _check_word_options(lowercase: Any, unk_token: Any) -> None:
    if not isinstance(lowercase, bool):
        raise ConfigError(f"lowercase must be True or False, got {lowercase!r}")
    if unk_token is not None and (not isinstance(unk_token, str) or not unk_token or unk_token != unk_token.strip()
                                  or any(c.isspace() for c in unk_token)):
        raise ConfigError(
            f"`unk_token` must be one word without spaces (such as <unk>) or empty for none, got {unk_token!r}"
        )


_SPECIAL_SET = frozenset(SPECIAL_TOKENS)


class _WordLevel:
    """What both word tokenizers share: lines, <EOS>, lowercasing, the unknown-word literal."""

    lowercase: bool
    unk_token: str | None

    def _lines(self, text: str) -> Iterable[str]:
        for line in text.split("\n"):
            # Lowercase the whole line *before* splitting: lowercasing can change characters
            # (e.g. "İ" -> "i" + combining dot), and splitting afterwards keeps tokenize
            # idempotent through detokenize.
            yield line.lower() if self.lowercase else line

    def _unk_literal(self) -> str | None:
        if self.unk_token is None:
            return None
        return self.unk_token.lower() if self.lowercase else self.unk_token

    def _finish(self, words: list[str], unk: str | None, tokens: list[str]) -> None:
        """Append one line's words (specials escaped, the unk literal as <UNK>) and its <EOS>."""
        if not words:
            return  # a blank line: paragraph breaks are not modelled
        if (unk is None or unk not in words) and _SPECIAL_SET.isdisjoint(words):
            tokens.extend(words)  # the common line, checked and copied in C (prepare's speed)
            tokens.append(EOS)
            return
        for word in words:
            if word == unk:
                tokens.append(UNK)
            elif word in SPECIAL_TOKENS:  # text never produces <PAD>/<EOS>: they mean something else
                tokens.extend(("<", word[1:-1], ">"))
            else:
                tokens.append(word)
        tokens.append(EOS)

    def _surface(self, token: str) -> str:
        """How a token is written back: <UNK> as the corpus's literal, when there is one."""
        return self.unk_token if token == UNK and self.unk_token is not None else token


# A <...> marker (<unk>, <s>, </s>: never split); a clitic or elision at the start of a word
# ('s, 're, 'tis; not a quotation closed at once); a word (letters/digits/underscore, inner
# apostrophes allowed: "don't", "o'er"); or any single character that is neither word nor space.
_WORD_RE = re.compile(r"<[^<>\s]+>|(?<!\w)'\w+\b(?!')|\w+(?:'\w+)*|[^\w\s]")
# Checkpoints written before the kinds existed: markers and leading clitics split, one inner apostrophe.
_WORD_RE_V1 = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
# Punctuation written without a space before it, and brackets written without one after.
_NO_SPACE_BEFORE = frozenset(",.;:!?')]}")
_NO_SPACE_AFTER = frozenset("([{")


@dataclass(frozen=True)
class WordTokenizer(_WordLevel):
    """Words, punctuation marks and <...> markers are tokens; <EOS> ends each line that has any.

    Lines are split on ``"\\n"`` only (``"\\r"`` and other spacing is just whitespace), and
    lines without tokens (blank lines) produce nothing, so paragraph breaks are not modelled.
    ``tokenize(detokenize(tokenize(t))) == tokenize(t)`` holds for every string ``t``; exact
    round trips are impossible because spacing is normalised. See the module docstring for
    markers, clitics and ``unk_token``.

    Args:
        lowercase: lowercase each line before splitting (smaller vocabulary, loses case).
        unk_token: the literal that means <UNK> (None: none does).
        version: 2, or 1 for the splitting of checkpoints written before markers and clitics.
    """

    lowercase: bool = False
    unk_token: str | None = DEFAULT_UNK_TOKEN
    version: int = 2
    level: ClassVar[str] = "word"
    kind: ClassVar[str] = "words"

    def __post_init__(self) -> None:
        _check_word_options(self.lowercase, self.unk_token)
        if self.version not in (1, 2) or isinstance(self.version, bool):
            raise ConfigError(f"word tokenizer version must be 1 or 2, got {self.version!r}")

    def tokenize(self, text: str) -> list[str]:
        """``text`` -> words, punctuation and one <EOS> after every non-blank line."""
        pattern = _WORD_RE if self.version == 2 else _WORD_RE_V1
        unk, tokens = self._unk_literal(), []
        for line in self._lines(text):
            self._finish(pattern.findall(line), unk, tokens)
        return tokens

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Join with single spaces, attach punctuation, and turn each <EOS> into ``"\\n"``.

        Spaces are only ever removed next to a one-character punctuation token, so two words
        are never glued together (nor a clitic to the word before it, nor a marker formed) and
        re-tokenizing gives back the same tokens.
        """
        parts: list[str] = []
        prev: str | None = None  # previous token on the current line; None at line start
        for tok in tokens:
            if tok == EOS:
                parts.append("\n")
                prev = None
                continue
            # A closing apostrophe right after a clitic would turn it into a quotation ('0' → ', 0, ').
            attach = tok in _NO_SPACE_BEFORE and not (tok == "'" and len(prev or "") > 1 and prev[0] == "'")
            if prev is not None and not attach and prev not in _NO_SPACE_AFTER:
                parts.append(" ")
            parts.append(self._surface(tok))
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
        """What :func:`tokenizer_from_dict` rebuilds this tokenizer from."""
        if self.version == 1:  # exactly what those checkpoints hold, so they stay version 1
            return {"level": self.level, "lowercase": self.lowercase}
        return {"level": self.level, "kind": self.kind, "lowercase": self.lowercase, "unk_token": self.unk_token}


@dataclass(frozen=True)
class WhitespaceTokenizer(_WordLevel):
    """Pre-tokenized text: every maximal run of non-space characters is a token; <EOS> ends
    each line that has any. Nothing is split or merged, so the token count is the corpus's.

    ``detokenize`` joins with single spaces: ``detokenize(tokenize(t)) == t`` for text with
    single spaces, no spaces at line ends and no blank lines (and ``t`` ending in ``"\\n"``);
    ``tokenize(detokenize(tokenize(t))) == tokenize(t)`` for every ``t``.

    Args:
        lowercase: lowercase each line first.
        unk_token: the literal that means <UNK> (None: none does).
    """

    lowercase: bool = False
    unk_token: str | None = DEFAULT_UNK_TOKEN
    level: ClassVar[str] = "word"
    kind: ClassVar[str] = "whitespace"

    def __post_init__(self) -> None:
        _check_word_options(self.lowercase, self.unk_token)

    def tokenize(self, text: str) -> list[str]:
        """``text`` -> its whitespace-separated tokens and one <EOS> after every non-blank line."""
        unk, tokens = self._unk_literal(), []
        for line in self._lines(text):
            self._finish(line.split(), unk, tokens)
        return tokens

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Tokens joined by single spaces, each <EOS> a ``"\\n"``."""
        parts: list[str] = []
        at_line_start = True
        for tok in tokens:
            if tok == EOS:
                parts.append("\n")
                at_line_start = True
                continue
            if not at_line_start:
                parts.append(" ")
            parts.append(self._surface(tok))
            at_line_start = False
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """What :func:`tokenizer_from_dict` rebuilds this tokenizer from."""
        return {"level": self.level, "kind": self.kind, "lowercase": self.lowercase, "unk_token": self.unk_token}


AnyTokenizer = CharTokenizer | WordTokenizer | WhitespaceTokenizer | BPETokenizer
_WORD_OPTIONS = ("lowercase", "unk_token")


def make_tokenizer(level: str, kind: str | None = None, **options: Any) -> AnyTokenizer:
    """The tokenizer ``kind`` ("whitespace", "words", "chars"), or the default kind of ``level``.

    ``level`` may also name the kind itself (``make_tokenizer("whitespace")``); ``options`` are
    the word tokenizers' ``lowercase`` and ``unk_token`` (the character tokenizer takes none).

    Raises:
        ConfigError: an unknown level or kind, a kind of the other level, or an option the
            tokenizer does not have.
    """
    if kind is None and level in TOKENIZERS:
        level, kind = TOKENIZERS[level], level
    if level not in LEVELS:
        raise ConfigError(
            f"unknown tokenizer {level!r}; choose one of: {', '.join(TOKENIZERS)} (or the levels {', '.join(LEVELS)})"
        )
    kind = DEFAULT_KIND[level] if kind is None else kind
    if TOKENIZERS.get(kind) != level:
        choices = ", ".join(k for k, lv in TOKENIZERS.items() if lv == level)
        raise ConfigError(
            f"`tokenizer` {kind!r} does not make {level}-level tokens; choose {choices} for `level` {level}"
        )
    if kind == "bpe":  # learned from a text: mlxrnn.text.bpe.train_bpe, or bpe_from_dict of a stored one
        raise ConfigError("make_tokenizer makes the char and word tokenizers; a bpe tokenizer is learned from "
                          "a text (mlxrnn.text.bpe.train_bpe)")
    if kind == "chars":
        if options:
            raise ConfigError(
                f"the chars tokenizer takes no options, got {', '.join(sorted(map(str, options)))}; "
                "drop them or use a word tokenizer"
            )
        return CharTokenizer()
    unknown = sorted(str(name) for name in options if name not in _WORD_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown word tokenizer option(s) {', '.join(unknown)}; valid: {', '.join(_WORD_OPTIONS)}")
    return (WhitespaceTokenizer if kind == "whitespace" else WordTokenizer)(**options)


def tokenizer_from_dict(data: Mapping[str, Any]) -> AnyTokenizer:
    """Inverse of ``to_dict``; a word tokenizer stored without ``kind`` is version 1 (see module doc)."""
    if not isinstance(data, Mapping) or "level" not in data:
        raise ConfigError(f"a stored tokenizer must be a dict with a 'level', got {data!r}")
    options = dict(data)
    if options.get("level") == "word" and "kind" not in options:
        unknown = sorted(str(name) for name in options if name not in ("level", "lowercase"))
        if unknown:
            raise ConfigError(f"unknown word tokenizer option(s) {', '.join(unknown)}")
        return WordTokenizer(lowercase=options.get("lowercase", False), unk_token=None, version=1)
    if options.get("kind") == "bpe":
        return bpe_from_dict(options)
    return make_tokenizer(**options)
