"""Byte-level BPE: subword tokens learned from the training text (GPT-2 style), via Hugging Face
``tokenizers`` (the optional extra ``mlxrnn[bpe]``, imported only when a BPE tokenizer is used).

    text --UTF-8--> bytes --pre-split (GPT-2 regex)--> byte pieces --merges--> tokens

Every byte is in the alphabet, so no text is ever unknown and ``detokenize(tokenize(t)) == t``
holds exactly for every string ``t``. The vocabulary is the three special tokens (<PAD>, <UNK>,
<EOS> at ids 0, 1, 2, which text never produces) followed by the BPE's tokens in its own order:
vocabulary id = BPE id + 3. No <EOS> is inserted; lines end in the newline byte, as for characters,
and the newline token is what the model reads before any text (:attr:`BPETokenizer.start_token`).

The tokenizer is stored as the library's own JSON (``to_str``) with its sha256, in checkpoints
and prepared corpora alike; :func:`bpe_from_dict` refuses a JSON whose hash does not match.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.nn.sequences import SPECIAL_TOKENS

#: ids below this are the special tokens; BPE id i is vocabulary id i + OFFSET
OFFSET = len(SPECIAL_TOKENS)
#: the smallest vocabulary: the specials, the 256 bytes and one merge
MIN_VOCAB_SIZE = OFFSET + 256 + 1
#: the vocabulary size `--tokenizer bpe` trains when `vocab_size` is not given
DEFAULT_VOCAB_SIZE = 4096
#: a bpe learns from at most this many characters of the training text (100 MB of prose hold its
#: merges; counting all of a 1 GB corpus would take ten times as long for nearly the same vocabulary)
BPE_LEARN_CHARS = 100_000_000
INSTALL_HINT = "the bpe tokenizer needs Hugging Face tokenizers: pip install 'mlxrnn[bpe]'"
#: characters per piece when a long text is encoded in parallel pieces (see safe_pieces)
PIECE_CHARS = 1 << 20
# A whitespace character between two non-whitespace ones: the GPT-2 pre-split always ends a piece
# just before it and never lets a piece run on past it, so cutting the text there changes no token.
_CUT = re.compile(r"(?<=\S)(?=\s\S)")
# A space before a non-space: the pre-split starts a piece there too (a run of whitespace before it
# ends just before it, as the run is then not followed by a non-space), so units cut there encode alone.
_SPACE_CUT = re.compile(r" (?=\S)")


def _hf():
    """The ``tokenizers`` module, or a one-line error saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return tokenizers


def safe_pieces(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` cut into pieces of about ``piece_chars`` characters at places where the BPE's
    pre-split cuts anyway (so encoding the pieces gives the tokens of the whole); a stretch
    with no such place stays whole."""
    start, n = 0, len(text)
    while n - start > piece_chars:
        match = _CUT.search(text, start + piece_chars)
        if match is None:
            break
        yield text[start : match.start()]
        start = match.start()
    if start < n:
        yield text[start:]


class BPETokenizer:
    """A trained byte-level BPE (see the module docstring); build one with :func:`train_bpe`.

    Args:
        json_text: the Hugging Face tokenizer JSON (``Tokenizer.to_str()``).
    """

    level: ClassVar[str] = "subword"
    kind: ClassVar[str] = "bpe"

    def __init__(self, json_text: str) -> None:
        if not isinstance(json_text, str):
            raise ConfigError(f"a BPE tokenizer is built from its JSON text, got {type(json_text).__name__}")
        self.json_text = json_text
        try:
            self._hf = _hf().Tokenizer.from_str(json_text)
        except ConfigError:
            raise
        except Exception as error:  # the library raises its own Exception subclass for bad JSON
            raise DataError(f"the stored BPE tokenizer is not valid ({str(error)[:120]})") from None
        self._hf.encode_special_tokens = True  # (it has none; text never makes a special token)
        size = self._hf.get_vocab_size(with_added_tokens=True)
        by_id = self._hf.get_vocab(with_added_tokens=True)
        if sorted(by_id.values()) != list(range(size)):
            raise DataError("the stored BPE tokenizer's ids are not 0..N-1; it was modified or damaged")
        self._tokens = [""] * size
        for token, i in by_id.items():
            self._tokens[i] = token

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and other.json_text == self.json_text

    def __hash__(self) -> int:
        return hash(self.json_text)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={len(self._tokens) + OFFSET})"

    @property
    def tokens(self) -> list[str]:
        """The vocabulary's tokens in id order (specials first): what :class:`Vocabulary` holds."""
        return list(SPECIAL_TOKENS) + self._tokens

    @property
    def start_token(self) -> str:
        """The newline byte's token: what a model reads before any text (every line starts after one)."""
        return self._hf.id_to_token(self._hf.token_to_id("Ċ")) or self._tokens[0]

    def tokenize(self, text: str) -> list[str]:
        """``text`` -> its BPE tokens (strings of the byte alphabet: "Ġthe" is " the")."""
        return self._hf.encode(text).tokens

    def encode_ids(self, text: str) -> np.ndarray:
        """``text`` -> vocabulary ids (N,) int64, the ids of :meth:`tokenize`, faster.

        The text is cut before each space that precedes a non-space (the pre-split always starts a
        piece there: one word with its leading space, or a run of spaces that ends before it), each
        distinct unit is encoded once, and the units' ids are gathered: a corpus repeats its words,
        so this encodes a small fraction of it.
        """
        first, *rest = _SPACE_CUT.split(text)  # every unit after the first lost its leading space
        index = dict.fromkeys(rest)  # distinct units, in order
        distinct = [first] + [" " + unit for unit in index]
        pieces = []
        for start in range(0, len(distinct), 1 << 16):
            pieces += [encoding.ids for encoding in self._hf.encode_batch(distinct[start : start + (1 << 16)])]
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        for i, unit in enumerate(index, 1):
            index[unit] = i
        flat = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
        # each unit's ids are a slice of ``flat``: gather them all at once
        which = np.zeros(1 + len(rest), dtype=np.int64)  # (U,) the distinct unit of each unit
        which[1:] = np.fromiter(map(index.__getitem__, rest), dtype=np.int64, count=len(rest))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[which]
        sizes = lengths[which]
        offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
        return flat[offsets + np.arange(int(sizes.sum()))] + OFFSET

    def decode_ids(self, ids: Iterable[int]) -> str:
        """Vocabulary ids -> text; special ids are dropped, and bytes that are not whole UTF-8
        characters (a sample cut mid-character) become U+FFFD."""
        return self._hf.decode([int(i) - OFFSET for i in ids if int(i) >= OFFSET], skip_special_tokens=False)

    def detokenize(self, tokens: Iterable[str]) -> str:
        """Tokens -> text (the inverse of :meth:`tokenize`); special tokens are dropped."""
        get = self._hf.token_to_id
        ids = [get(t) for t in tokens if t not in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            raise ConfigError("detokenize got a token that is not in this BPE's vocabulary")
        return self._hf.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token: str) -> bytes:
        """The bytes a token stands for (b"" for the special tokens): streaming output decodes
        these incrementally, since one token may hold part of a character."""
        if token in SPECIAL_TOKENS:
            return b""
        return bytes(_byte_decoder()[c] for c in token)

    def continue_text(self, text: str, continuation: str) -> str:
        """``text`` followed by ``continuation``: BPE tokens carry their own spaces."""
        return text + continuation

    def to_dict(self) -> dict[str, Any]:
        """``{"level", "kind", "json", "sha256"}``: the JSON and its hash, checked on loading."""
        return {"level": self.level, "kind": self.kind, "json": self.json_text, "sha256": _sha256(self.json_text)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_BYTE_DECODER: dict[str, int] = {}


def _byte_decoder() -> dict[str, int]:
    """The byte-level alphabet (GPT-2's bytes_to_unicode) read backwards: character -> byte."""
    if not _BYTE_DECODER:
        printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
        extra = 0
        for b in range(256):
            if b in printable:
                _BYTE_DECODER[chr(b)] = b
            else:
                _BYTE_DECODER[chr(256 + extra)] = b
                extra += 1
    return _BYTE_DECODER


def bpe_from_dict(data: dict[str, Any]) -> BPETokenizer:
    """Inverse of :meth:`BPETokenizer.to_dict`; a JSON whose sha256 differs is refused in one line."""
    text, sha = data.get("json"), data.get("sha256")
    if not isinstance(text, str) or not isinstance(sha, str):
        raise DataError("a stored BPE tokenizer needs its 'json' text and its 'sha256'")
    if _sha256(text) != sha:
        raise DataError("the stored BPE tokenizer was modified since it was saved (sha256 mismatch)")
    unknown = sorted(set(data) - {"level", "kind", "json", "sha256"})
    if unknown:
        raise DataError(f"unknown BPE tokenizer field(s) {', '.join(unknown)}")
    return BPETokenizer(text)


def check_vocab_size(vocab_size: Any) -> int:
    """``vocab_size`` as an int, or a ConfigError naming the `vocab_size` setting."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"must be an integer >= {MIN_VOCAB_SIZE} (3 special tokens, 256 bytes and a merge), got {vocab_size!r}",
            field="vocab_size",
        )
    return int(vocab_size)


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2) -> BPETokenizer:
    """A byte-level BPE of ``vocab_size`` tokens (the 3 specials included) learned from ``texts``
    (strings or pieces of one text, streamed; pieces should be cut where :func:`safe_pieces`
    cuts, so the pre-split sees the words of the whole).

    Deterministic for the same text. Pairs seen fewer than ``min_frequency`` times are not
    merged, so a small text may give fewer tokens than asked for.
    """
    vocab_size = check_vocab_size(vocab_size)
    hf = _hf()
    tokenizer = hf.Tokenizer(hf.models.BPE())
    # no prefix space: a text's first word is not changed, so decoding gives back the text exactly
    tokenizer.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size - OFFSET,
        min_frequency=min_frequency,
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(_pieces_of(texts), trainer=trainer)
    # The library's JSON, normalised through json so the same tokenizer always hashes the same.
    return BPETokenizer(json.dumps(json.loads(tokenizer.to_str()), ensure_ascii=False, sort_keys=True))


def _pieces_of(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise ConfigError(f"BPE training takes strings, got {type(text).__name__}")
        yield from safe_pieces(text)


def cut_for_bpe(text: str) -> int:
    """Where a streamed piece may end for BPE (:mod:`mlxrnn.text.streaming`): before the last
    whitespace character between two non-whitespace ones (the pre-split cuts there anyway), found
    in the last 64k characters; 0 (wait for more) when there is none."""
    tail = max(0, len(text) - (1 << 16))
    starts = [match.start() for match in _CUT.finditer(text, tail)]
    return starts[-1] if starts else 0
