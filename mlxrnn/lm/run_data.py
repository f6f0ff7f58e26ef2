"""The data of a training run: its corpus, vocabulary and training/validation batches.

The corpus splits contiguously (the last ``val_frac`` of the tokens validates, nanoGPT style),
and each split is read as parallel streams by an :class:`~mlxrnn.lm.batching.LMBatcher`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import DataError
from mlxrnn.lm.batching import LMBatcher
from mlxrnn.lm.corpus import bundled_corpus_path, read_text, split_by_fraction
from mlxrnn.lm.options import TrainOptions
from mlxrnn.lm.tokenizers import make_tokenizer
from mlxrnn.lm.vocabulary import Vocabulary
from mlxrnn.training.distributed import DataParallel


def load_corpus(options: TrainOptions) -> tuple[str, str]:
    """(text, sha256 of its UTF-8 bytes) of the configured corpus."""
    if options.corpus:
        try:
            options.corpus.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 in the name (decoded with surrogateescape)
            raise DataError(
                f"the corpus file name {os.fsencode(options.corpus)!r} is not valid UTF-8, so the run could not "
                "record it; rename the file (or link it under a UTF-8 name)"
            ) from None
    path = Path(options.corpus) if options.corpus else bundled_corpus_path()
    text = read_text(path, encoding=options.encoding, errors=options.encoding_errors)
    digest = hashlib.sha256()
    for start in range(0, len(text), _CHUNK):  # in pieces: no second copy of a large corpus
        digest.update(text[start : start + _CHUNK].encode("utf-8"))
    return text, digest.hexdigest()


_CHUNK = 1 << 20


def compact_id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds ids 0..vocab_size-1 (uint8, uint16 or uint32)."""
    return np.dtype(np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def encode_corpus(vocab: Vocabulary, tokenizer, text: str) -> np.ndarray:
    """The ids (N,) of a whole corpus in :func:`compact_id_dtype` (what ``vocab.encode`` gives, compactly).

    A character corpus is mapped through a table indexed by code point, without a Python string
    per character: a 10 MB text needs about 5 bytes a character while encoding and 1-2 after.
    """
    dtype = compact_id_dtype(len(vocab))
    if tokenizer.level != "char":
        return vocab.encode(tokenizer.tokenize(text)).astype(dtype)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = np.full(int(codes.max(initial=0)) + 1, vocab.unk_id, dtype=dtype)  # (largest code point + 1,)
    for token_id, token in enumerate(vocab.tokens):
        if len(token) == 1 and ord(token) < len(table):  # the special tokens are longer: never in text
            table[ord(token)] = token_id
    return table[codes]


def build_vocabulary(options: TrainOptions, text: str):
    """(tokenizer, vocabulary, tokens). Word vocabularies count only the training split, so a
    word seen only in validation is <UNK> there, as it would be in new text (no leak into the
    validation loss). Character vocabularies use the whole text, as char-rnn does; their
    "tokens" are the text itself (a str is the sequence of its characters, without a list of
    one string per character)."""
    tokenizer = make_tokenizer(options.level, **({"lowercase": options.lowercase} if options.level == "word" else {}))
    tokens = tokenizer.tokenize(text) if options.level == "word" else text
    counted = tokens
    if options.level == "word":
        train_positions, _, _ = split_by_fraction(np.arange(len(tokens)), options.val_frac)
        counted = tokens[: len(train_positions)]
    vocab = Vocabulary.build(counted, max_size=options.max_vocab, min_count=options.min_count, level=options.level)
    return tokenizer, vocab, tokens


def make_batchers(options: TrainOptions, ids: np.ndarray, dist: DataParallel | None = None) -> tuple[Any, Any]:
    """(training, validation) batchers of the token stream ``ids`` (N,); with ``dist``, each
    process's share of ``batch_size`` × processes streams."""
    dist = dist or DataParallel()
    train_ids, val_ids, _ = split_by_fraction(ids, options.val_frac)
    streams = options.batch_size * dist.size  # data-parallel: ONE batcher of N·B streams, each process its B rows
    train = LMBatcher(train_ids, streams, options.seq_len, name="training split")
    # Validation uses fewer streams when the split is short, so small corpora still evaluate.
    val_streams = max(dist.size, min(streams, (len(val_ids) - 1) // options.seq_len or 1))
    if len(val_ids) < val_streams + 1:
        raise DataError(
            f"the validation split has {len(val_ids)} of the corpus's {len(ids)} tokens, too few to evaluate "
            f"(at least {val_streams + 1} needed); raise `val_frac` (now {options.val_frac:g}) or use a longer corpus"
        )
    val = LMBatcher(val_ids, val_streams, options.seq_len, name="validation split")
    return dist.shard_batcher(train), dist.shard_batcher(val)
