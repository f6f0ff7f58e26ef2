"""The data of a training run: its corpus, vocabulary and training/validation batches.

The corpus splits contiguously (the last ``val_frac`` of the tokens validates, nanoGPT style),
and each split is read as parallel streams by an :class:`~mlxrnn.lm.batching.LMBatcher`.
"""

from __future__ import annotations

import hashlib
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
    """(text, sha256 of its bytes) of the configured corpus."""
    path = Path(options.corpus) if options.corpus else bundled_corpus_path()
    text = read_text(path, encoding=options.encoding, errors=options.encoding_errors)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_vocabulary(options: TrainOptions, text: str, base: Vocabulary | None = None):
    """(tokenizer, vocabulary, tokens). Word vocabularies count only the training split, so a
    word seen only in validation is <UNK> there, as it would be in new text (no leak into the
    validation loss). Character vocabularies use the whole text, as char-rnn does. With
    ``base`` (the vocabulary of a run whose weights this one starts from), the counted tokens
    it lacks are appended to it (:meth:`Vocabulary.extended`) instead."""
    tokenizer = make_tokenizer(options.level, **({"lowercase": options.lowercase} if options.level == "word" else {}))
    tokens = tokenizer.tokenize(text)
    counted = tokens
    if options.level == "word":
        train_positions, _, _ = split_by_fraction(np.arange(len(tokens)), options.val_frac)
        counted = tokens[: len(train_positions)]
    if base is not None:
        return tokenizer, base.extended(counted, max_size=options.max_vocab, min_count=options.min_count), tokens
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
