"""Truncated-BPTT batches for language models: B parallel streams cut into windows of T steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError
from mlxrnn.nn.sequences import as_int_array, is_integer

# --------------------------------------------------------------------------------------------
# Truncated-BPTT batcher
# --------------------------------------------------------------------------------------------


class LMBatcher:
    """Language-model batches for truncated BPTT (char-rnn / Zaremba et al. layout).

    The stream ``ids`` (N,) is cut into B = ``batch_size`` contiguous, parallel streams of
    L = (N - 1) // B steps; the last N - 1 - B*L tokens are dropped. Stream b is
    ``ids[b*L : b*L + L + 1]`` (L + 1 tokens: inputs are its positions 0..L-1, targets 1..L;
    consecutive streams share one boundary token). Window k is::

        inputs  = streams[:, k*T     : k*T + T]        # (B, T') int32 (stored compactly)
        targets = streams[:, k*T + 1 : k*T + T + 1]    # (B, T') int32, next token of inputs

    with T = ``seq_len`` and T' = T except possibly a shorter last window (kept, so every
    position 1..L of every stream is a target exactly once per epoch).

    Statefulness: row b of every window continues row b of the previous window, so the
    hidden state at the end of window k is the correct initial state for window k+1. Carry it
    across windows (detached: no gradient flows back past the window), and reset it to zeros
    at the start of each epoch, since window 0 restarts the streams.

    Args:
        ids: (N,) integer token ids.
        batch_size: B >= 1.
        seq_len: T >= 1, BPTT truncation length.
        name: how to call the data in error messages (e.g. "validation split").
    """

    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, *, name: str = "corpus"
    ) -> None:
        _check_settings(batch_size, seq_len)
        arr = as_int_array(ids, "token ids")
        if arr.ndim != 1:
            raise ShapeError(f"LMBatcher expects a 1-D token stream, got shape {arr.shape}")
        n = len(arr)
        B, T = int(batch_size), int(seq_len)
        L = _stream_length(n, B, name)
        if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
            raise ConfigError("token ids must be non-negative and fit in int32")
        self.batch_size: int = B
        self.seq_len: int = T
        self.stream_len: int = L  # L: input (and target) steps per row per epoch
        self.num_tokens: int = n
        # (B, L+1) copy: row b = ids[b*L : b*L + L + 1], so every window is a plain 2-D slice. It
        # keeps a compact dtype (uint8/uint16: one corpus of 1-2 bytes a token, not 4) and is
        # built without an index array (which would be 8 bytes a token).
        dtype = arr.dtype if arr.dtype.itemsize < 4 else np.dtype(np.int32)
        self.streams: np.ndarray = np.empty((B, L + 1), dtype=dtype)
        self.streams[:, :L] = arr[: B * L].reshape(B, L)
        self.streams[:, L] = arr[L : B * L + 1 : L]  # each row's last token starts the next row

    @property
    def num_tokens_per_epoch(self) -> int:
        """Number of target tokens per epoch: B * L."""
        return self.batch_size * self.stream_len

    def __len__(self) -> int:
        """Windows per epoch: ceil(L / seq_len)."""
        return (self.stream_len + self.seq_len - 1) // self.seq_len

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``k`` (0 <= k < len) as fresh ``(inputs, targets)``, each (B, T') int32.

        Random access lets training resume mid-epoch at exactly the window it stopped at.
        """
        if not is_integer(k) or not 0 <= k < len(self):
            raise ConfigError(f"window index must be in 0..{len(self) - 1}, got {k!r}")
        t0 = int(k) * self.seq_len
        t1 = min(t0 + self.seq_len, self.stream_len)
        # int32 copies: callers may hand them to another backend or mutate them.
        return self.streams[:, t0:t1].astype(np.int32), self.streams[:, t0 + 1 : t1 + 1].astype(np.int32)

    def iter_from(self, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Windows ``start, start+1, ..., len-1`` (resume an interrupted epoch)."""
        if not is_integer(start) or not 0 <= start <= len(self):
            raise ConfigError(f"start window must be in 0..{len(self)}, got {start!r}")
        for k in range(int(start), len(self)):
            yield self.window(k)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.iter_from(0)

    def __repr__(self) -> str:
        return (
            f"LMBatcher(batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"stream_len={self.stream_len}, windows={len(self)})"
        )


def _check_settings(batch_size: int, seq_len: int) -> None:
    for setting, v in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not is_integer(v) or v < 1:
            raise ConfigError(f"must be a positive integer, got {v!r}", field=setting)


def _stream_length(n: int, batch_size: int, name: str) -> int:
    """L = (n - 1) // B, the steps of each of the B streams; refused in one line when below 1."""
    L = (n - 1) // batch_size if n > 0 else 0
    if L < 1:
        raise DataError(
            f"the {name} has {n} tokens, too few for `batch_size` {batch_size} (each of the "
            f"{batch_size} rows needs 2 tokens, so at least {batch_size + 1}); lower `batch_size`"
        )
    return L


class MappedLMBatcher(LMBatcher):
    """:class:`LMBatcher`'s windows read straight from a memory-mapped id file (N,), with no copy:
    the same streams, windows and lengths, so a run on a prepared corpus computes what a run on
    its text does. Each window reads B slices of T + 1 ids, so resident memory is a few pages per
    row whatever N is; the ids are trusted to be in range (a prepared corpus is hashed, not scanned).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, *, name: str = "corpus") -> None:
        _check_settings(batch_size, seq_len)
        if ids.ndim != 1 or ids.dtype.kind != "u":
            raise ShapeError(f"MappedLMBatcher expects a 1-D unsigned id map, got {ids.dtype} {ids.shape}")
        n, B = len(ids), int(batch_size)
        L = _stream_length(n, B, name)
        self.batch_size, self.seq_len, self.stream_len, self.num_tokens = B, int(seq_len), L, n
        self.ids = ids

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``k`` as fresh ``(inputs, targets)``, each (B, T') int32 (see :class:`LMBatcher`)."""
        if not is_integer(k) or not 0 <= k < len(self):
            raise ConfigError(f"window index must be in 0..{len(self) - 1}, got {k!r}")
        t0 = int(k) * self.seq_len
        t1 = min(t0 + self.seq_len, self.stream_len)
        L = self.stream_len
        rows = np.stack([self.ids[b * L + t0 : b * L + t1 + 1] for b in range(self.batch_size)]).astype(np.int32)
        return rows[:, :-1], rows[:, 1:]


def lm_batcher(ids: np.ndarray, batch_size: int, seq_len: int, *, name: str = "corpus") -> LMBatcher:
    """A :class:`MappedLMBatcher` over a memory map (a prepared corpus), else an :class:`LMBatcher`."""
    cls = MappedLMBatcher if isinstance(ids, np.memmap) else LMBatcher
    return cls(ids, batch_size, seq_len, name=name)
