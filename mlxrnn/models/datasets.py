"""Whole datasets for ``fit``, ``evaluate`` and friends: a model's batch with every example in it.

A dataset has the form of the model's batch dict, with one row per example on the first axis
of every array: ``{"inputs" (N, T), "targets" (N,), "lengths" (N,)}`` for a classifier, what
:func:`~mlxrnn.models.seq2seq.seq2seq_batch` or :func:`~mlxrnn.models.generator.generator_batch`
return, and so on. Non-array entries (e.g. Seq2Seq's ``sampling_probability``) go into every
batch as they are. An ``(x, y)`` pair stands for ``{"inputs": x, "targets": y}`` (or the model's
own two keys), and a list of ready batch dicts is used batch by batch.

Mini-batches are rows ``idx`` of every array. Padded time axes are cut to the longest sequence
of the batch: a model names, per lengths key, the arrays whose axis 1 is time
(``{"lengths": ("inputs", "targets", "mask")}``), so a batch of short sentences does not run
the recurrent loop over the padding of the longest sentence in the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.module import check_positive_int


def _as_array(value: Any, where: str) -> Any:
    """NumPy rows for lists/tuples and backend arrays; other values (scalars, None) as they are."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) or (hasattr(value, "shape") and hasattr(value, "dtype")):
        try:
            return np.asarray(value)
        except ValueError:  # ragged nested lists
            raise ShapeError(
                f"{where} is ragged (sequences of different lengths); pad it to one length "
                "(mlxrnn.nn.sequences.pad_sequences) and give the lengths beside it"
            ) from None
    return value


class Dataset:
    """Examples to cut into batches (see the module docstring for the accepted forms).

    Args:
        data: a dict of arrays with one row per example, an ``(x, y)`` pair, or a list of batch dicts.
        pair_keys: the batch keys an ``(x, y)`` pair stands for.
        name: what the data is called in error messages ("train", "validation").
    """

    def __init__(self, data: Any, pair_keys: tuple[str, str] = ("inputs", "targets"), name: str = "data"):
        self.name = name
        self.batch_list: list[Mapping[str, Any]] | None = None
        if isinstance(data, tuple) and len(data) == 2 and not all(isinstance(item, Mapping) for item in data):
            data = dict(zip(pair_keys, data))
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and data and all(
                isinstance(item, Mapping) for item in data):
            self.batch_list = list(data)
            self.rows = sum(_rows_of(batch, f"{name}[{i}]") for i, batch in enumerate(self.batch_list))
            return
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{name} must be a dict of arrays with one row per example (like one batch of the model), "
                f"an (inputs, targets) pair, or a list of batch dicts; got {type(data).__name__}"
            )
        self.arrays: dict[str, np.ndarray] = {}
        self.constants: dict[str, Any] = {}
        for key, value in data.items():
            value = _as_array(value, f"{name}[{key!r}]")
            if isinstance(value, np.ndarray) and value.ndim >= 1:
                self.arrays[key] = value
            else:
                self.constants[key] = value
        self.rows = _rows_of(self.arrays, name)

    def __len__(self) -> int:
        return self.rows

    def require(self, keys: Sequence[str]) -> None:
        """ConfigError unless every batch has each of ``keys`` (e.g. a model's inputs and targets)."""
        batches = self.batch_list if self.batch_list is not None else [{**self.arrays, **self.constants}]
        for index, batch in enumerate(batches):
            missing = [key for key in keys if key not in batch]
            if missing:
                where = self.name if self.batch_list is None else f"{self.name}[{index}]"
                a, b = keys[0], keys[-1]
                raise ConfigError(
                    f"{where} has no {' or '.join(repr(k) for k in missing)}; pass a dict with both {a!r} and {b!r} "
                    f"(one row per example), an ({a}, {b}) pair, or a list of such batch dicts"
                )

    def num_batches(self, batch_size: int) -> int:
        if self.batch_list is not None:
            return len(self.batch_list)
        return -(-self.rows // batch_size)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None,
                time_keys: Mapping[str, Sequence[str]] | None = None) -> Iterator[tuple[dict, int]]:
        """(batch dict, its number of rows) for every batch; shuffled by ``rng`` when given."""
        if self.batch_list is not None:
            order = rng.permutation(len(self.batch_list)) if rng is not None else range(len(self.batch_list))
            for i in order:
                batch = dict(self.batch_list[i])
                yield batch, _rows_of(batch, f"{self.name}[{i}]")
            return
        batch_size = check_positive_int("batch_size", batch_size)
        order = rng.permutation(self.rows) if rng is not None else np.arange(self.rows)
        for start in range(0, self.rows, batch_size):
            idx = order[start:start + batch_size]
            batch = {key: value[idx] for key, value in self.arrays.items()}
            _trim_padding(batch, time_keys or {})
            batch.update(self.constants)
            yield batch, len(idx)


def _rows_of(batch: Mapping[str, Any], name: str) -> int:
    """The common first dimension of the arrays in ``batch`` (a ConfigError if they disagree)."""
    rows: dict[str, int] = {}
    for key, value in batch.items():
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1:
            rows[key] = int(shape[0])
        elif isinstance(value, (list, tuple)):
            rows[key] = len(value)
    if not rows:
        raise ConfigError(f"{name} holds no arrays; give e.g. {{'inputs': ..., 'targets': ...}}")
    counts = sorted(set(rows.values()))
    if len(counts) > 1:
        first, other = (next(k for k, v in rows.items() if v == n) for n in counts[:2])
        raise ShapeError(
            f"{name}[{first!r}] has {rows[first]} rows but {name}[{other!r}] has {rows[other]}; "
            "every array needs one row per example"
        )
    if counts[0] < 1:
        raise ConfigError(f"{name} has no examples")
    return counts[0]


def _trim_padding(batch: dict, time_keys: Mapping[str, Sequence[str]]) -> None:
    """Cut the padded time axes of ``batch`` to its longest sequence (in place)."""
    for lengths_key, keys in time_keys.items():
        lengths = batch.get(lengths_key)
        if lengths is None or lengths.size == 0 or lengths.dtype.kind not in "iu":
            continue  # invalid lengths are the model's to report, with the whole picture
        width = max(int(lengths.max()), 1)
        for key in keys:
            value = batch.get(key)
            if isinstance(value, np.ndarray) and value.ndim >= 2 and value.shape[1] > width:
                batch[key] = value[:, :width]
