"""Preparing a corpus: tokenize a text once, streaming, into the id files of :mod:`mlxrnn.text.prepared`.

The passes, each in constant memory except for the vocabulary itself:

1. (bpe) learn the tokenizer from the training text, streamed;
2. tokenize every file in pieces (:mod:`mlxrnn.text.streaming`) into 32-bit *provisional* ids,
   numbered in order of first appearance (bpe: its final ids), to a scratch file;
3. count the provisional ids of the counted text (``np.bincount`` over the map) and build the
   vocabulary exactly as a run on the text does (:meth:`Vocabulary.build`: by count, ties by
   first appearance; words count the training part only, characters also the validation text);
4. map the provisional ids through a lookup table into the final uint16/uint32 part files,
   hashing them as they are written; then the vocabulary and, last, the manifest.

Everything is written in a temporary sibling of ``out`` and renamed into place at the end, so an
interrupted or failed preparation (Ctrl-C, a full disk) leaves no directory that looks complete;
the temporary one is removed on the way out.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.files import write_error
from mlxrnn.nn.sequences import SPECIAL_TOKENS
from mlxrnn.text.bpe import BPE_LEARN_CHARS, DEFAULT_VOCAB_SIZE, cut_for_bpe, train_bpe
from mlxrnn.text.corpus import split_by_fraction
from mlxrnn.text.prepared import FORMAT, MANIFEST, VERSION, VOCAB_FILE, PreparedCorpus, id_dtype, open_prepared
from mlxrnn.text.streaming import TextStream, cut_after_line, cut_anywhere
from mlxrnn.text.tokenizers import DEFAULT_UNK_TOKEN, make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary

#: ids mapped and written at a time
BLOCK = 1 << 22
Progress = Callable[[str, int, int], None]  # (stage, bytes done, bytes in all)


class _Provisional:
    """Provisional ids in order of first appearance: 0..2 the special tokens, then each new token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.chars = tokenizer.kind == "chars"
        self.index: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        self.codes: list[int] = []  # chars: the code point of provisional id 3 + i
        self.table = np.full(0x110000, -1, dtype=np.int32) if self.chars else None

    def encode(self, piece: str) -> np.ndarray:
        """A piece's provisional ids (N,) uint32."""
        if not self.chars:
            setdefault, index = self.index.setdefault, self.index
            return np.fromiter((setdefault(t, len(index)) for t in self.tokenizer.tokenize(piece)), dtype=np.uint32)
        codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = self.table[codes]
        if (ids < 0).any():  # new characters: numbered in order of first appearance
            # slice by slice: sorting only the few slices that bring new characters, not the whole piece
            for start in range(0, len(codes), 1 << 16):
                part = codes[start : start + (1 << 16)]
                fresh, first = np.unique(part[self.table[part] < 0], return_index=True)
                fresh = fresh[np.argsort(first)]
                self.table[fresh] = np.arange(3 + len(self.codes), 3 + len(self.codes) + len(fresh))
                self.codes.extend(fresh.tolist())
            ids = self.table[codes]
        return ids.astype(np.uint32)

    def merge(self, local_ids: np.ndarray, local_tokens: list[str]) -> np.ndarray:
        """A piece numbered by a worker (:func:`_number_locally`) in this numbering: its tokens in
        their first-appearance order get the next ids, so pieces merged in order number as one stream."""
        index = self.index
        to_global = np.fromiter((index.setdefault(t, len(index)) for t in local_tokens), dtype=np.uint32,
                                count=len(local_tokens))
        return to_global[local_ids]

    def tokens(self) -> list[str]:
        """The token of every provisional id, in id order."""
        if self.chars:
            return list(SPECIAL_TOKENS) + [chr(c) for c in self.codes]
        return list(self.index)


def _number_locally(job: tuple[Any, str]) -> tuple[np.ndarray, list[str]]:
    """In a worker process: a piece's tokens numbered in order of first appearance in it, and those tokens."""
    tokenizer, piece = job
    index: dict[str, int] = {}
    setdefault = index.setdefault
    ids = np.fromiter((setdefault(t, len(index)) for t in tokenizer.tokenize(piece)), dtype=np.uint32)
    return ids, list(index)


def _in_order(pool, function, jobs, depth: int):
    """``function(job)`` for each job, in order, at most ``depth`` in flight (so a big file is not
    read into the queue ahead of the workers)."""
    pending: collections.deque = collections.deque()
    for job in jobs:
        pending.append(pool.apply_async(function, (job,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _write_ids(path: Path, blocks, lut: np.ndarray | None, dtype: np.dtype, scratch: bool = False) -> dict[str, Any]:
    """Write ``blocks`` of ids (through ``lut`` when given) as ``dtype``; (tokens, bytes, sha256, mtime).
    A ``scratch`` file is neither hashed nor synced: it is read back and deleted before anything is kept."""
    digest, tokens = hashlib.sha256(), 0
    try:
        with open(path, "wb") as handle:
            for block in blocks:
                out = np.ascontiguousarray((lut[block] if lut is not None else block).astype(dtype, copy=False))
                if not scratch:
                    digest.update(out.data)
                handle.write(out.data)
                tokens += len(out)
            handle.flush()
            if not scratch:
                os.fsync(handle.fileno())
    except OSError as error:
        raise write_error(path, error, "the prepared ids") from None
    stat = path.stat()
    return {"file": path.name, "tokens": tokens, "bytes": stat.st_size, "sha256": digest.hexdigest(),
            "mtime_ns": stat.st_mtime_ns}


def _blocks(ids: np.ndarray):
    for start in range(0, len(ids), BLOCK):
        yield np.asarray(ids[start : start + BLOCK])


def _map(path: Path, dtype: str = "<u4") -> np.ndarray:
    size = path.stat().st_size // np.dtype(dtype).itemsize
    return np.memmap(path, dtype=dtype, mode="r", shape=(size,)) if size else np.zeros(0, dtype=dtype)


def _tokenize_file(stream: TextStream, encode: Callable[[str], np.ndarray], scratch: Path, stage: str,
                   progress: Progress | None, pool=None, provisional: _Provisional | None = None,
                   depth: int = 2) -> tuple[np.ndarray, int]:
    """All ids of one streamed file written to ``scratch`` (uint32) and mapped back; and its characters.
    With a ``pool``, word pieces are tokenized by its workers and numbered here, in order."""
    stream.progress = None if progress is None else (lambda done: progress(stage, done, stream.total_bytes))
    if progress is not None:
        progress(stage, 0, stream.total_bytes)  # the pass starts: its speed is measured from here
    if pool is not None and provisional is not None:
        jobs = ((provisional.tokenizer, piece) for piece in stream)
        blocks = (provisional.merge(*done) for done in _in_order(pool, _number_locally, jobs, depth))
    else:
        blocks = (encode(piece) for piece in stream)
    _write_ids(scratch, blocks, None, np.dtype("<u4"), scratch=True)
    if progress is not None:
        progress(stage, stream.total_bytes, stream.total_bytes)
    return _map(scratch), stream.num_chars


def prepare_corpus(
    corpus: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    tokenizer: str = "chars",
    lowercase: bool = False,
    unk_token: str | None = "<unk>",
    max_vocab: int | None = None,
    min_count: int = 1,
    vocab_size: int | None = None,
    valid: str | os.PathLike[str] | None = None,
    test: str | os.PathLike[str] | None = None,
    val_frac: float = 0.1,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    vocabulary: tuple[Any, Vocabulary] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    workers: int | None = None,
) -> PreparedCorpus:
    """Tokenize ``corpus`` (and the ``valid``/``test`` files) once into the prepared directory ``out``.

    The tokenizer settings mean what they mean for ``mlxrnn train``; ``vocabulary`` = (tokenizer,
    vocab) of a trained model keeps them instead (tokens it lacks become <UNK>), so a run can start
    from that model's weights. Without ``valid``, the last ``val_frac`` of the tokens validates.
    ``progress(stage, bytes_done, bytes_total)`` follows each pass. ``workers`` processes tokenize
    words (default: the CPUs, at most 4); the result does not depend on how many.

    Returns the opened :class:`PreparedCorpus`. Raises DataError/ConfigError for bad input (before
    anything is written), WriteError when the disk fails; ``out`` is then untouched.
    """
    out = Path(out)
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists; choose another `out` or pass `force` to replace it")
    files = {"train": corpus, "valid": valid, "test": test}
    files = {name: Path(path) for name, path in files.items() if path is not None}
    kind = vocabulary[0].kind if vocabulary else tokenizer
    cut = cut_for_bpe if kind == "bpe" else cut_anywhere if kind == "chars" else cut_after_line
    streams = {name: TextStream(path, encoding, encoding_errors, cut=cut) for name, path in files.items()}
    settings = _settings(kind, lowercase, unk_token, max_vocab, min_count, vocab_size, vocabulary)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        _prepare_into(work, streams, kind, settings, valid is None, val_frac, vocabulary, progress,
                      workers if workers is not None else min(4, os.cpu_count() or 1))
        return open_prepared(_publish(work, out))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone once published; else what an interruption left


def _settings(kind, lowercase, unk_token, max_vocab, min_count, vocab_size, vocabulary) -> dict[str, Any]:
    """The TrainOptions settings the prepared corpus fixes, checked as a run would check them."""
    level = {"chars": "char", "bpe": "subword"}.get(kind, "word")
    if vocabulary is not None:
        tok, vocab = vocabulary
        described = tok.to_dict()
        return {"level": tok.level, "tokenizer": kind, "lowercase": bool(described.get("lowercase", False)),
                "unk_token": (described.get("unk_token") or "") if level == "word" else DEFAULT_UNK_TOKEN,
                "max_vocab": None, "min_count": 1, "vocab_size": len(vocab) if kind == "bpe" else None}
    if kind == "bpe" and (max_vocab is not None or min_count != 1):
        raise ConfigError("a bpe vocabulary is learned to `vocab_size` tokens; drop `max_vocab` and `min_count`")
    if vocab_size is not None and kind != "bpe":
        raise ConfigError(f"applies to `tokenizer` bpe, not {kind}", field="vocab_size")
    if lowercase and level != "word":
        raise ConfigError("applies to word models (`tokenizer` words or whitespace)", field="lowercase")
    if kind not in ("chars", "bpe"):
        make_tokenizer(level, kind=kind, lowercase=lowercase, unk_token=unk_token or None)  # checks them
    word_unk = unk_token if unk_token is not None else ""  # "" : no literal means <UNK>, as in TrainOptions
    return {"level": level, "tokenizer": kind, "lowercase": bool(lowercase),
            "unk_token": word_unk if level == "word" else DEFAULT_UNK_TOKEN, "max_vocab": max_vocab,
            "min_count": min_count, "vocab_size": vocab_size}


def _prepare_into(work: Path, streams: dict[str, TextStream], kind: str, settings: dict[str, Any], split: bool,
                  val_frac: float, vocabulary, progress: Progress | None, workers: int) -> None:
    if vocabulary is not None:
        tokenizer, vocab = vocabulary
    elif kind == "bpe":
        tokenizer = _learn_bpe(streams["train"], split, val_frac, settings["vocab_size"], progress)
        vocab = Vocabulary(tokenizer.tokens, level=tokenizer.level)
    else:
        tokenizer, vocab = make_tokenizer(settings["level"], kind=kind, **_word_options(settings)), None
    provisional = _Provisional(tokenizer) if vocab is None else None
    if provisional is not None:
        encode = provisional.encode
    elif kind == "bpe":
        encode = tokenizer.encode_ids
    else:  # a given vocabulary: tokens it lacks are <UNK>
        encode = lambda piece: vocab.encode(tokenizer.tokenize(piece)).astype(np.uint32)  # noqa: E731
    ids, chars = {}, {}
    # word tokenizers run in Python: several processes tokenize pieces of a big file at once
    parallel = provisional is not None and not provisional.chars and workers > 1 and any(
        s.total_bytes > 2 * s.read_bytes for s in streams.values())
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context().Pool(workers)) if parallel else None
        for name, stream in streams.items():
            ids[name], chars[name] = _tokenize_file(stream, encode, work / f"{name}.scratch", f"tokenizing {name}",
                                                    progress, pool, provisional, depth=2 * workers)
    parts = {"train": ids["train"], "valid": ids.get("valid"), "test": ids.get("test")}
    ratio = {name: len(part) / max(chars[name], 1) for name, part in ids.items()}
    if split:  # the last val_frac of the tokens validates, as a run on the text splits it
        parts["train"], parts["valid"], _ = split_by_fraction(ids["train"], val_frac)
        ratio["valid"] = ratio["train"]
    if provisional is not None:
        vocab = _count_vocabulary(provisional, parts, settings)
    lut = None
    if provisional is not None:
        lut = np.fromiter((vocab.token_to_id(t) for t in provisional.tokens()), dtype=np.int64)
    dtype = id_dtype(len(vocab))
    entries = {}
    for name, part in parts.items():
        if part is None:
            continue
        entries[name] = _write_ids(work / f"{name}.bin", _blocks(part), lut, dtype)
        entries[name]["tokens_per_char"] = ratio[name]
        if progress is not None:
            progress(f"writing {name}", 1, 1)
    for name in ids:
        os.unlink(work / f"{name}.scratch")
    vocab_bytes = json.dumps({"tokenizer": tokenizer.to_dict(), "vocab": vocab.to_dict()}, ensure_ascii=False)
    _write_small(work / VOCAB_FILE, vocab_bytes.encode("utf-8"))
    manifest = {
        "format": FORMAT, "version": VERSION, "dtype": dtype.str, "settings": settings,
        "val_frac": val_frac if split else None,
        "vocab_sha256": hashlib.sha256(vocab_bytes.encode("utf-8")).hexdigest(), "parts": entries,
        "sources": {name: {"path": str(s.path.resolve()), "bytes": s.num_bytes, "sha256": s.sha256}
                    for name, s in streams.items()},
    }
    _write_small(work / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))  # last: it says "complete"


def _word_options(settings: dict[str, Any]) -> dict[str, Any]:
    if settings["level"] != "word":
        return {}
    return {"lowercase": settings["lowercase"], "unk_token": settings["unk_token"] or None}


def _learn_bpe(stream: TextStream, split: bool, val_frac: float, vocab_size: int | None, progress):
    """The bpe of the training text: all of it, or (split) its first 1 − val_frac of characters;
    at most its first BPE_LEARN_CHARS characters (as a run on the text learns it)."""
    limit = BPE_LEARN_CHARS
    # (a character takes at most 4 bytes: a file of 4 × the limit holds enough characters uncounted)
    if split and stream.total_bytes / 4 * (1.0 - val_frac) < BPE_LEARN_CHARS:
        for _ in stream:  # one pass to count the characters, as the text's own split counts them
            pass
        limit = min(limit, int(stream.num_chars * (1.0 - val_frac)))
    stream.progress = None if progress is None else (lambda done: progress("learning bpe", done, stream.total_bytes))
    if progress is not None:
        progress("learning bpe", 0, stream.total_bytes)

    def pieces():
        left = limit
        for piece in stream:
            piece, left = piece[:left], left - min(left, len(piece))
            if piece:
                yield piece
            if not left:
                break  # the rest is not read

    learned = train_bpe(pieces(), vocab_size or DEFAULT_VOCAB_SIZE)
    if progress is not None:  # the merges are counted after the text is read: the pass ends here
        progress("learning bpe", stream.num_bytes, stream.num_bytes)  # the bytes it learned from
    return learned


def _count_vocabulary(provisional: _Provisional, parts: dict[str, Any], settings: dict[str, Any]) -> Vocabulary:
    """The vocabulary a run on the text builds: counts of the counted parts, by provisional id."""
    counted = [parts["train"]] + ([parts["valid"]] if settings["level"] == "char" else [])
    tokens = provisional.tokens()
    counts = np.zeros(len(tokens), dtype=np.int64)
    for part in counted:
        for block in _blocks(part):
            counts += np.bincount(block, minlength=len(tokens))
    # a dict in first-appearance order is what Vocabulary.build counts (its ties keep this order)
    by_token = {token: int(count) for token, count in zip(tokens, counts.tolist()) if count}
    if not by_token:
        raise DataError("the corpus has no tokens; give some text")
    return Vocabulary.build(by_token, max_size=settings["max_vocab"], min_count=settings["min_count"],
                            level=settings["level"])


def _write_small(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise write_error(path, error) from None


def _publish(work: Path, out: Path) -> Path:
    """Move the finished directory into place (replacing an old one: moved aside, then removed)."""
    _fsync_dir(work)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
        os.replace(out, old)
    try:
        os.replace(work, out)
    except OSError as error:
        if old is not None:
            os.replace(old, out)
        raise write_error(out, error) from None
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system without directory fsync: nothing more to make durable
    finally:
        os.close(fd)

