"""The data of a training run: its corpus, vocabulary and training/validation batches.

The corpus splits contiguously (the last ``val_frac`` of the tokens validates, nanoGPT style),
or separate `valid` (and `test`) files are read as corpora come; each part is read as parallel
streams by an :class:`~mlxrnn.text.batching.LMBatcher`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.batching import LMBatcher, lm_batcher
from mlxrnn.text.bpe import BPE_LEARN_CHARS, DEFAULT_VOCAB_SIZE, BPETokenizer, train_bpe
from mlxrnn.text.corpus import bundled_corpus_path, read_text, split_by_fraction
from mlxrnn.text.prepared import FIXED_SETTINGS, PreparedCorpus, open_prepared
from mlxrnn.text.tokenizers import make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary
from mlxrnn.training.distributed import DataParallel


def _check_name(path: str, what: str) -> None:
    """Refuse a file name the run could not record (bytes that are not UTF-8, decoded with
    surrogateescape), before anything is written rather than at the first checkpoint."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"the {what} file name {os.fsencode(path)!r} is not valid UTF-8, so the run could not "
            "record it; rename the file (or link it under a UTF-8 name)"
        ) from None


def load_corpus(options: TrainOptions) -> tuple[str | PreparedCorpus, str]:
    """(text, sha256 of its UTF-8 bytes) of the configured corpus; for a prepared corpus (a
    directory, :mod:`mlxrnn.text.prepared`), the opened corpus and its training ids' sha256."""
    if options.corpus and os.path.isdir(options.corpus):
        prepared = open_prepared(options.corpus)
        return prepared, prepared.sha256
    if options.corpus:
        _check_name(options.corpus, "corpus")
    path = Path(options.corpus) if options.corpus else bundled_corpus_path()
    return _load(path, options)


def load_split_files(options: TrainOptions) -> dict[str, tuple[str, str]]:
    """{"valid": (text, sha256), "test": ...} of the `valid` and `test` files that are given."""
    files = {"valid": options.valid, "test": options.test}
    for name, path in files.items():
        if path:
            _check_name(path, f"`{name}`")
    return {name: _load(Path(path), options) for name, path in files.items() if path}


def _load(path: Path, options: TrainOptions) -> tuple[str, str]:
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
    if isinstance(tokenizer, BPETokenizer):  # its ids are the vocabulary's (checked when it was loaded)
        return tokenizer.encode_ids(text).astype(dtype)
    if tokenizer.level != "char":
        return vocab.encode(tokenizer.tokenize(text)).astype(dtype)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = np.full(int(codes.max(initial=0)) + 1, vocab.unk_id, dtype=dtype)  # (largest code point + 1,)
    for token_id, token in enumerate(vocab.tokens):
        if len(token) == 1 and ord(token) < len(table):  # the special tokens are longer: never in text
            table[ord(token)] = token_id
    return table[codes]


def make_run_tokenizer(options: TrainOptions):
    """The tokenizer ``options`` ask for (`tokenizer`, `lowercase`, `unk_token`); a bpe one is
    learned from a text instead (:func:`build_vocabulary`)."""
    if options.vocab_size is not None and options.tokenizer != "bpe":
        raise ConfigError(f"applies to `tokenizer` bpe, not {options.tokenizer}; drop it or use `tokenizer` bpe",
                          field="vocab_size")
    if options.tokenizer == "bpe" and (options.max_vocab is not None or options.min_count != 1):
        raise ConfigError("a bpe vocabulary is learned to `vocab_size` tokens; drop `max_vocab` and `min_count`")
    if options.level != "word":
        if options.lowercase:
            raise ConfigError("applies to word models (`level` word)", field="lowercase")
        return None if options.tokenizer == "bpe" else make_tokenizer(options.level, kind=options.tokenizer)
    return make_tokenizer(
        options.level, kind=options.tokenizer, lowercase=options.lowercase, unk_token=options.unk_token or None
    )


def bpe_training_text(text: str, options: TrainOptions, valid_text: str | None) -> str:
    """What a bpe tokenizer learns from: all of ``text`` when a `valid` file is given, else its
    first 1 − `val_frac` of characters (about the training split: the validation text stays unseen);
    at most its first :data:`BPE_LEARN_CHARS` characters (`mlxrnn prepare` cuts it the same way)."""
    end = len(text) if valid_text is not None else int(len(text) * (1.0 - options.val_frac))
    return text[: min(end, BPE_LEARN_CHARS)]


def build_vocabulary(options: TrainOptions, text: str, valid_text: str | None = None, base: Vocabulary | None = None):
    """(tokenizer, vocabulary, tokens of ``text``; None for bpe, whose ids :func:`encode_corpus` makes).

    Word vocabularies count only the training tokens (all of ``text`` when a separate
    ``valid_text`` is given, else the part before the validation split), so a word seen only
    in validation is <UNK> there, as it would be in new text (no leak into the validation loss).
    Character vocabularies also count the validation text, as char-rnn does (a character absent
    from training would otherwise make validation fail). A test text is never counted. With
    ``base`` (the vocabulary of a run whose weights this one starts from), the counted tokens it
    lacks are appended to it (:meth:`Vocabulary.extended`) instead. A bpe tokenizer is learned
    from :func:`bpe_training_text` (or, with ``base``, is the source run's, given as ``base_tokenizer``).
    """
    tokenizer = make_run_tokenizer(options)
    if options.tokenizer == "bpe":
        if base is not None:
            raise ConfigError("a run started from a bpe model keeps its tokenizer: pass it to build_bpe_vocabulary")
        bpe = train_bpe([bpe_training_text(text, options, valid_text)], options.vocab_size or DEFAULT_VOCAB_SIZE)
        return bpe, Vocabulary(bpe.tokens, level=bpe.level), None
    # a character model's tokens are the text itself (a str is the sequence of its characters,
    # without a list of one string per character)
    tokens = text if options.level == "char" and options.tokenizer == "chars" else tokenizer.tokenize(text)
    counted = tokens
    if options.level == "word" and valid_text is None:
        train_positions, _, _ = split_by_fraction(np.arange(len(tokens)), options.val_frac)
        counted = tokens[: len(train_positions)]
    elif options.level == "char" and valid_text is not None:
        counted = tokens + (valid_text if isinstance(tokens, str) else tokenizer.tokenize(valid_text))
    if base is not None:
        return tokenizer, base.extended(counted, max_size=options.max_vocab, min_count=options.min_count), tokens
    vocab = Vocabulary.build(counted, max_size=options.max_vocab, min_count=options.min_count, level=options.level)
    return tokenizer, vocab, tokens


def make_batchers(
    options: TrainOptions, ids: np.ndarray, dist: DataParallel | None = None, val_ids: np.ndarray | None = None
) -> tuple[Any, Any]:
    """(training, validation) batchers of the token stream ``ids`` (N,); with ``dist``, each
    process's share of ``batch_size`` × processes streams. ``val_ids``: a separate validation
    stream (`valid`), else the last `val_frac` of ``ids`` validates."""
    dist = dist or DataParallel()
    if val_ids is None:
        train_ids, val_ids, _ = split_by_fraction(ids, options.val_frac)
        fix = f"raise `val_frac` (now {options.val_frac:g}) or use a longer corpus"
        what = f"the validation split has {len(val_ids)} of the corpus's {len(ids)} tokens"
    else:
        train_ids, fix, what = ids, "use a longer `valid` file", f"the `valid` file has {len(val_ids)} tokens"
    streams = options.batch_size * dist.size  # data-parallel: ONE batcher of N·B streams, each process its B rows
    train = lm_batcher(train_ids, streams, options.seq_len, name="training split")
    val = evaluation_batcher(val_ids, options, dist, what, fix, name="validation split")
    return dist.shard_batcher(train), dist.shard_batcher(val)


def evaluation_batcher(
    ids: np.ndarray, options: TrainOptions, dist: DataParallel, what: str, fix: str, name: str
) -> LMBatcher:
    """Parallel streams over a held-out text: as many as training uses, fewer when the text is
    short (so small texts still evaluate), at least one per process."""
    streams = options.batch_size * dist.size
    count = max(dist.size, min(streams, (len(ids) - 1) // options.seq_len or 1))
    if len(ids) < count + 1:
        raise DataError(f"{what}, too few to evaluate (at least {count + 1} needed); {fix}")
    return lm_batcher(ids, count, options.seq_len, name=name)


def prepared_options(options: TrainOptions, prepared: PreparedCorpus, given: set[str]) -> TrainOptions:
    """``options`` with the tokenizer and vocabulary settings ``prepared`` was made with; a given
    setting that differs, or a `valid`/`test` file beside it, is refused in one line."""
    for name in ("valid", "test"):
        if getattr(options, name):
            raise ConfigError(f"{prepared.path} is prepared with its own validation and test parts; drop `{name}` "
                              "(or prepare the corpus with it)", field=name)
    fixed = {name: prepared.settings[name] for name in FIXED_SETTINGS}
    clashes = [name for name in FIXED_SETTINGS if name in given and getattr(options, name) != fixed[name]]
    if clashes:
        shown = ", ".join(f"`{name}` {fixed[name]!r}" for name in clashes)
        raise ConfigError(f"{prepared.path} was prepared with {shown}; leave them out or prepare it again with yours")
    return dataclasses.replace(options, **fixed)


def prepared_ids(prepared: PreparedCorpus, vocab: Vocabulary, tokenizer) -> dict[str, np.ndarray]:
    """The id maps of a prepared corpus's parts, once it is known to use ``vocab`` and ``tokenizer``."""
    if prepared.vocab != vocab or prepared.tokenizer != tokenizer:
        raise DataError(f"{prepared.path} was prepared with another vocabulary than this model's; prepare it with "
                        "`mlxrnn prepare CORPUS --vocab-from RUN` (RUN: the model's run), or train a new run on it")
    return {name: prepared.part(name) for name in ("train", "valid", "test") if prepared.has(name)}


def count_unknown(ids: np.ndarray, vocab: Vocabulary) -> int:
    """How many of ``ids`` (N,) are <UNK>: unknown words, and literal unknown-word markers."""
    return int(np.count_nonzero(ids == vocab.unk_id))


def untrained_unknown_note(trained_unknown: int, held_out: dict[str, tuple[int, int]]) -> str | None:
    """One log line when held-out text has <UNK> tokens that training never showed the model.

    ``trained_unknown``: the <UNK> tokens of the training text; ``held_out``: {"validation":
    (<UNK> tokens, tokens), "test": ...}. A model that never saw <UNK> as a target learns to give
    it almost no probability, so each such held-out token costs about as much as the least likely
    word; keeping rare training words as <UNK> (`min_count` 2, or a `max_vocab` cap) trains it.
    None when there is nothing to say.
    """
    parts = [f"{name} {count:,} of {total:,} ({count / max(total, 1):.1%})"
             for name, (count, total) in held_out.items() if count]
    if trained_unknown or not parts:
        return None
    return (f"the vocabulary lacks tokens of the held-out text ({'; '.join(parts)}; scored as <UNK>), but the "
            "training text never produced <UNK>, so the model learns to give it almost no probability and each "
            "such token will cost many nats; train <UNK> by keeping rare words out of the vocabulary: "
            "`min_count` 2 (or cap it with `max_vocab`)")
