"""Prepared corpora: a text tokenized once into flat id files that training memory-maps
(nanoGPT's ``prepare.py`` layout), so resident memory does not grow with the corpus.

A prepared directory (written by :func:`mlxrnn.text.prepare.prepare_corpus`)::

    train.bin       token ids, little-endian uint16 (uint32 when the vocabulary has > 65536 tokens)
    valid.bin       the validation ids (the `valid` file's, or the last `val_frac` of the corpus)
    test.bin        the `test` file's ids, when one was given
    vocab.json      {"tokenizer": tokenizer.to_dict(), "vocab": vocab.to_dict()}
    manifest.json   written last: {"format", "version", "dtype", "settings", "vocab_sha256",
                    "parts": {name: {"file", "tokens", "tokens_per_char", "bytes", "sha256", "mtime_ns"}},
                    "sources": {name: {"path", "bytes", "sha256"}}}

The whole directory is built in a temporary sibling and renamed into place, so a directory
with a manifest is complete. :func:`open_prepared` checks it before use and refuses, in one
line, a directory without a manifest, a part of the wrong size (truncated), a part or vocabulary
whose sha256 differs (modified). Parts are hashed in full only when their size or modification
time differs from the manifest's (a copy, an edit): a 1 GB corpus then starts in about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import DataError
from mlxrnn.text.tokenizers import tokenizer_from_dict
from mlxrnn.text.vocabulary import Vocabulary

FORMAT = "mlxrnn-prepared"
VERSION = 1
MANIFEST = "manifest.json"
VOCAB_FILE = "vocab.json"
PARTS = ("train", "valid", "test")
#: the settings a prepared corpus fixes for a run trained on it (TrainOptions field names)
FIXED_SETTINGS = ("level", "tokenizer", "lowercase", "unk_token", "max_vocab", "min_count", "vocab_size")
HASH_BLOCK = 16 << 20


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (nanoGPT's choice), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def is_prepared(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is a directory holding a prepared corpus (or meant to: it is a directory)."""
    return path is not None and Path(path).is_dir()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PreparedCorpus:
    """An opened, checked prepared corpus. ``part(name)`` maps a part's ids (N,) read-only."""

    path: Path
    manifest: dict[str, Any]
    tokenizer: Any
    vocab: Vocabulary

    @property
    def sha256(self) -> str:
        """What identifies the corpus to a run (its checkpoints' ``corpus_sha256``): the training ids' sha256."""
        return self.manifest["parts"]["train"]["sha256"]

    @property
    def settings(self) -> dict[str, Any]:
        """The tokenizer and vocabulary settings it was prepared with (TrainOptions names)."""
        return dict(self.manifest["settings"])

    def has(self, name: str) -> bool:
        """Whether the corpus has the part ``name`` ("train", "valid" or "test")."""
        return name in self.manifest["parts"]

    def part(self, name: str) -> np.ndarray:
        """The ids of part ``name`` as a read-only memory map (N,), nothing read until used."""
        entry = self.manifest["parts"][name]
        if entry["tokens"] == 0:
            return np.zeros(0, dtype=self.manifest["dtype"])
        return np.memmap(self.path / entry["file"], dtype=np.dtype(self.manifest["dtype"]), mode="r",
                         shape=(entry["tokens"],))

    def tokens_per_char(self, name: str) -> float:
        """Tokens per character of a part's text (bits per character = loss × this / ln 2); for the
        two parts of a split corpus, the whole corpus's (as for a run on the text itself)."""
        return float(self.manifest["parts"][name]["tokens_per_char"])


def _refuse(path: Path, what: str) -> DataError:
    return DataError(f"{path} is not a usable prepared corpus: {what}; run `mlxrnn prepare` again")


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if name == MANIFEST:
            raise DataError(
                f"{path} is a directory without {MANIFEST}: not a prepared corpus (or its preparation did not "
                "finish); pass a text file, or prepare one with `mlxrnn prepare CORPUS --out DIR`"
            ) from None
        raise _refuse(path, f"{name} is missing") from None
    except (OSError, ValueError) as error:
        raise _refuse(path, f"{name} cannot be read ({type(error).__name__})") from None


def _check_manifest(path: Path, manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refuse(path, f"{MANIFEST} is not an mlxrnn prepared-corpus manifest")
    if manifest.get("version") != VERSION:
        raise _refuse(path, f"it has format version {manifest.get('version')!r}, this mlxrnn reads {VERSION}")
    parts = manifest.get("parts")
    if manifest.get("dtype") not in ("<u2", "<u4") or not isinstance(parts, dict) or "train" not in parts:
        raise _refuse(path, f"{MANIFEST} lacks its dtype or its train part")
    for name, entry in parts.items():
        keys = ("file", "tokens", "tokens_per_char", "bytes", "sha256", "mtime_ns")
        if name not in PARTS or not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise _refuse(path, f"{MANIFEST} has a malformed part {name!r}")
        if Path(entry["file"]).name != entry["file"]:
            raise _refuse(path, f"part {name!r} names a file outside the directory")
    return manifest


def _check_part(path: Path, name: str, entry: dict[str, Any], itemsize: int) -> None:
    file = path / entry["file"]
    try:
        stat = file.stat()
    except OSError:
        raise _refuse(path, f"its {name} ids ({entry['file']}) are missing") from None
    if stat.st_size != entry["bytes"] or entry["bytes"] != entry["tokens"] * itemsize:
        raise _refuse(path, f"its {name} ids ({entry['file']}) have {stat.st_size} bytes, the manifest "
                            f"{entry['bytes']}: truncated or modified")
    if stat.st_mtime_ns != entry["mtime_ns"] and file_sha256(file) != entry["sha256"]:
        raise _refuse(path, f"its {name} ids ({entry['file']}) were modified since it was prepared (sha256 differs)")


def open_prepared(path: str | os.PathLike[str]) -> PreparedCorpus:
    """Open and check a prepared corpus (see the module docstring); DataError in one line if unusable."""
    path = Path(path)
    manifest = _check_manifest(path, _read_json(path, MANIFEST))
    try:
        vocab_bytes = (path / VOCAB_FILE).read_bytes()
    except OSError:
        raise _refuse(path, f"{VOCAB_FILE} is missing or unreadable") from None
    if hashlib.sha256(vocab_bytes).hexdigest() != manifest.get("vocab_sha256"):
        raise _refuse(path, f"{VOCAB_FILE} was modified since it was prepared (sha256 differs)")
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for name, entry in manifest["parts"].items():
        _check_part(path, name, entry, itemsize)
    try:
        stored = json.loads(vocab_bytes.decode("utf-8"))
        tokenizer = tokenizer_from_dict(stored["tokenizer"])
        vocab = Vocabulary.from_dict(stored["vocab"])
    except (ValueError, KeyError, TypeError, DataError) as error:
        raise _refuse(path, f"its {VOCAB_FILE} is invalid ({error})") from None
    if np.dtype(manifest["dtype"]) != id_dtype(len(vocab)):
        raise _refuse(path, f"its ids are {manifest['dtype']} but its vocabulary has {len(vocab)} tokens")
    return PreparedCorpus(path, manifest, tokenizer, vocab)
