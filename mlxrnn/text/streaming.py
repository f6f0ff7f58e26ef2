"""Reading a corpus file in pieces: text as :func:`~mlxrnn.text.corpus.read_text` gives it, without
ever holding the whole file.

Each piece is decoded incrementally (a character split between two reads is joined), newlines
are normalised ("\\r\\n" and "\\r" -> "\\n", a "\\r" at the end of a read waits for the next), a
leading byte-order mark is dropped, and the piece ends where ``cut`` says (e.g. after a line for
word tokenizers), the rest waiting for the next read. The concatenated pieces equal
``read_text(path)``; the raw bytes' size and sha256 are computed on the way.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mlxrnn.errors import DataError
from mlxrnn.text.corpus import check_codec

#: bytes read at a time
READ_BYTES = 8 << 20


def cut_anywhere(text: str) -> int:
    """Characters can be tokenized piece by piece at any place."""
    return len(text)


def cut_after_line(text: str) -> int:
    """Word tokenizers work line by line: a piece ends after its last newline."""
    return text.rfind("\n") + 1


class TextStream:
    """The pieces of one corpus file (iterate once); afterwards :attr:`num_bytes`, :attr:`sha256`
    and :attr:`num_chars` describe the whole file.

    Args:
        path: the corpus.
        encoding, errors: as for ``read_text``.
        cut: ``cut(text) -> i``: emit ``text[:i]``, keep ``text[i:]`` for the next read (0: keep all).
        progress: called with the bytes read so far after each read.
    """

    def __init__(self, path: str | os.PathLike[str], encoding: str = "utf-8", errors: str = "strict",
                 cut: Callable[[str], int] = cut_anywhere, progress: Callable[[int], None] | None = None,
                 read_bytes: int = READ_BYTES) -> None:
        self.path = Path(path)
        self.encoding, self.errors, self.cut, self.progress = encoding, errors, cut, progress
        self.read_bytes = read_bytes
        self.num_bytes = 0
        self.num_chars = 0
        self.sha256 = ""
        try:
            self.total_bytes = self.path.stat().st_size
        except OSError:
            self.total_bytes = 0
        self._check()  # a bad file or codec fails in one line before any work is done

    def _check(self) -> None:
        check_codec(self.encoding, self.errors)
        if not self.path.exists():
            raise DataError(f"no such file: {self.path}")
        if self.path.is_dir():
            raise DataError(f"{self.path} is a directory, not a text file; pass the corpus file itself")
        if not self.path.is_file():  # a pipe is read once: the passes of `prepare` need a file
            raise DataError(f"{self.path} is not a regular file; save the text to a file and prepare that")

    def __iter__(self) -> Iterator[str]:
        self.num_bytes = self.num_chars = 0  # (each pass counts afresh)
        digest = hashlib.sha256()
        decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)
        carry, first, seen_text = "", True, False
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        except OSError as error:
            raise DataError(f"cannot read {self.path}: {error.strerror or error}") from None
        try:
            while True:
                try:
                    data = handle.read(self.read_bytes)
                except OSError as error:
                    raise DataError(f"cannot read {self.path}: {error.strerror or error}") from None
                final = not data
                digest.update(data)
                try:
                    text = decoder.decode(data, final)
                except UnicodeDecodeError as e:
                    offset = self.num_bytes + e.start
                    raise DataError(
                        f"cannot decode {self.path} as {self.encoding}: invalid byte at byte offset about "
                        f"{offset}; pass the right `encoding` (e.g. latin-1) or `encoding_errors` replace"
                    ) from None
                self.num_bytes += len(data)
                if first and text:
                    text, first = (text[1:] if text.startswith("\ufeff") else text), False
                text = carry + text
                if not final and text.endswith("\r"):  # maybe the first half of "\r\n"
                    text, carry = text[:-1], "\r"
                else:
                    carry = ""
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                end = len(text) if final else self.cut(text)
                piece, carry = text[:end], text[end:] + carry
                if piece:
                    seen_text = seen_text or not piece.isspace()
                    self.num_chars += len(piece)
                    yield piece
                if self.progress is not None:
                    self.progress(self.num_bytes)
                if final:
                    break
        finally:
            handle.close()
        if not seen_text:
            raise DataError(f"{self.path} is empty (or only whitespace); give a corpus with some text")
        self.sha256 = digest.hexdigest()
