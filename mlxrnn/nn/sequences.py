"""Token sequences as arrays: the special ids every vocabulary shares, and padding.

One-hot vectors are :func:`mlxrnn.nn.layers.one_hot` (on any backend).

``PAD_ID, UNK_ID, EOS_ID = 0, 1, 2`` are fixed in every vocabulary, so code that pads or masks
(models, batch builders) never needs the vocabulary itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError

# --------------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------------

PAD = "<PAD>"
UNK = "<UNK>"
EOS = "<EOS>"
# Fixed ids 0, 1, 2 in every vocabulary, so code that pads or masks never needs the vocabulary.
SPECIAL_TOKENS: tuple[str, str, str] = (PAD, UNK, EOS)
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2


def is_integer(x: object) -> bool:
    """True for Python/NumPy integers but not bools (True would silently mean 1)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))

# --------------------------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------------------------


def as_int_array(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64; treat as ints
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ShapeError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int = PAD_ID, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences into one batch.

    Args:
        seqs: B sequences of ids (lists or 1-D integer arrays), possibly of different lengths.
        pad_id: id written after the end of each sequence.
        max_len: if given, T = max_len exactly and longer sequences are truncated (their
            first max_len ids kept); otherwise T = the longest length.

    Returns:
        ids: (B, T) int32, ``ids[b, :lengths[b]]`` is sequence b, the rest is ``pad_id``.
        lengths: (B,) int32, the (possibly truncated) length of each sequence.
    """
    if max_len is not None and (not is_integer(max_len) or max_len < 1):
        raise ConfigError(f"max_len must be a positive integer or None, got {max_len!r}")
    rows = []
    for b, s in enumerate(seqs):
        arr = as_int_array(s, f"sequence {b}")
        if arr.ndim != 1:
            raise ShapeError(f"sequence {b} must be 1-D, got shape {arr.shape}")
        rows.append(arr if max_len is None else arr[:max_len])
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    T = int(max_len) if max_len is not None else int(lengths.max(initial=0))
    out = np.full((len(rows), T), pad_id, dtype=np.int32)
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out, lengths
