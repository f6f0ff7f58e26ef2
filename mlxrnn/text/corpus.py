"""Corpus files and splits: reading text safely, the bundled corpus, contiguous train/val/test splits.
"""

from __future__ import annotations

import codecs
import importlib.resources
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError

# --------------------------------------------------------------------------------------------
# Train / validation / test split
# --------------------------------------------------------------------------------------------


def _check_fraction(x: Any, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating, np.integer)):
        raise ConfigError(f"must be a number in [0, 1), got {x!r}", field=name)
    if not 0.0 <= float(x) < 1.0:  # also rejects NaN
        raise ConfigError(f"must be in [0, 1), got {x!r}", field=name)
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
    val_frac = _check_fraction(val_frac, "val_frac")
    test_frac = _check_fraction(test_frac, "test_frac")
    if val_frac + test_frac >= 1.0:
        raise ConfigError(
            f"`val_frac` + `test_frac` must be < 1 to leave training data, got "
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
        ("training", train, 1.0, "`val_frac`/`test_frac`" if test_frac else "`val_frac`"),
        ("validation", val, val_frac, "`val_frac`"),
        ("test", test, test_frac, "`test_frac`"),
    ):
        if frac > 0 and len(part) == 0:
            raise DataError(
                f"the {name} split of a {n}-token corpus would be empty; use a longer corpus "
                f"or change {flag}"
            )
    return train, val, test


# --------------------------------------------------------------------------------------------
# Corpus files
# --------------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict") -> str:
    """Read a whole corpus file as text, with one-line DataErrors for every common problem.

    Newlines are normalised like text-mode ``open()`` ("\\r\\n" and "\\r" -> "\\n") so the
    same corpus gives the same tokens on every platform, and a leading byte-order mark (U+FEFF)
    is dropped (it marks the encoding; it would otherwise become a token). A pipe with a writer
    is read like a file; devices and FIFOs nobody writes to are refused instead of hanging.

    Args:
        path: the file.
        encoding: any Python codec name (the ``encoding`` option).
        errors: codec error handler, e.g. "strict", "replace", "ignore" (the ``encoding_errors`` option).

    Raises:
        DataError: missing file, a directory, a device, a FIFO without a writer, unreadable,
            undecodable (with the byte offset of the first bad byte), or empty / whitespace-only.
        ConfigError: unknown encoding or error handler.
    """
    check_codec(encoding, errors)
    p = Path(path)
    data = _read_corpus_bytes(p)
    try:
        text = data.decode(encoding, errors)
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 1].hex()
        raise DataError(
            f"cannot decode {p} as {encoding}: invalid byte 0x{bad} at byte offset {e.start}; "
            f"pass the right `encoding` (e.g. latin-1) or `encoding_errors` replace"
        ) from None
    except UnicodeError as e:  # codecs such as idna raise the base class, without an offset
        raise DataError(
            f"cannot decode {p} as {encoding} ({e}); pass the right `encoding` (e.g. utf-8 or latin-1)"
        ) from None
    try:
        text.encode("utf-8")  # e.g. errors="surrogateescape": lone surrogates cannot be stored or printed
    except UnicodeEncodeError as e:
        raise DataError(
            f"decoding {p} as {encoding} with errors={errors!r} left an unpaired surrogate at character "
            f"{e.start}; use another `encoding` or `encoding_errors` replace"
        ) from None
    if text.startswith("\ufeff"):  # a byte-order mark says how the file is encoded; it is not text
        text = text[1:]
    if not text.strip():
        raise DataError(f"{p} is empty (or only whitespace); give a corpus with some text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def check_codec(encoding: str, errors: str) -> None:
    """ConfigError unless ``encoding`` is a text codec and ``errors`` an error handler."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError, ValueError):  # ValueError: e.g. a NUL in the name
        raise ConfigError(
            f"unknown encoding {encoding!r}; pass a Python codec name such as `encoding` utf-8"
        ) from None
    try:
        b"a".decode(encoding)  # codecs such as rot13, base64 or hex exist but do not make text
    except UnicodeError:
        pass  # a text codec that cannot decode b"a" alone (utf-16, utf-32)
    except LookupError:
        raise ConfigError(
            f"{encoding!r} is not a text encoding; pass one such as `encoding` utf-8 or latin-1"
        ) from None
    try:
        codecs.lookup_error(errors)
    except (LookupError, TypeError):
        raise ConfigError(
            f"unknown encoding error handler {errors!r}; use `encoding_errors` strict, "
            "replace or ignore"
        ) from None


def _read_corpus_bytes(p: Path) -> bytes:
    """All bytes of a regular file or of a pipe with a writer (e.g. ``<(zcat corpus.gz)``).

    The file is opened without blocking and its type checked before reading: a device such as
    /dev/zero would be read forever and a terminal would wait for typing, so both are refused;
    a FIFO nobody writes to reads as end-of-file at once, and is refused as such.
    """
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise DataError(f"{p} is a directory, not a text file; pass the corpus file itself") from None
    except PermissionError:
        raise DataError(f"permission denied reading {p}; check the file's permissions") from None
    except OSError as error:
        raise DataError(f"cannot read {p}: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"{p} is a directory, not a text file; pass the corpus file itself")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise DataError(f"{p} is a device or socket, not a text file; pass the corpus file itself")
        if stat.S_ISFIFO(mode) and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a pipe with a writer: wait for its text as usual
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataError(f"cannot read {p}: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if not data and stat.S_ISFIFO(mode):
        raise DataError(f"{p} is a pipe (FIFO) that nobody writes to; pass a regular file, or write the text into it")
    return data


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
