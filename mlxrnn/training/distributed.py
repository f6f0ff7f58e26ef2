"""Data-parallel training over MLX's distributed engine (``mx.distributed``, started by ``mlx.launch``).

Every process holds a full replica of the model. The streams of ONE global batcher of N·B rows
are split by rows: process r of N reads rows [r·B, (r+1)·B) of every window, runs the usual
BPTT on them, and one ``mx.distributed.all_sum`` of one flat buffer (every gradient, the loss,
and the little the training loop must agree on) averages the processes' results. Every process
then applies the same update to the same weights, so the replicas stay identical and N
processes with batch B compute what one process with batch N·B computes::

    mlx.launch -n 2 --backend ring -- mlxrnn train --distributed --batch-size 16 ...

MLX carries the traffic for the NumPy backend too: its gradients are copied into one MLX array
and back. A single process (not launched, or ``mlx.launch -n 1``) gets a :class:`DataParallel`
without a group, whose every method hands its input back unchanged.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, MLXRNNError

MLX_MISSING = (
    "data-parallel training (`distributed`, or a process started by mlx.launch) needs MLX's distributed "
    "engine, and MLX is not installed in this Python: pip install mlx (macOS) or pip install 'mlx[cpu]' "
    "(Linux). With the NumPy backend MLX only carries the gradients between processes."
)

_LOSS, _VOTES = "\0loss", "\0votes"  # names that cannot clash with a parameter's


def launched() -> bool:
    """True when a launcher started this process as one of a group (mlx.launch sets MLX_RANK, mpirun OMPI_*)."""
    return "MLX_RANK" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ


def init_distributed() -> DataParallel:
    """Join the group of processes mlx.launch (or mpirun) started; alone, a no-op :class:`DataParallel`.

    Raises ConfigError when MLX is not installed, MLXRNNError when a launched process cannot
    reach the others (better than N independent runs writing over one another's checkpoints).
    """
    try:
        import mlx.core as mx
    except ImportError as error:
        raise ConfigError(MLX_MISSING) from error
    hostfile = os.environ.get("MLX_HOSTFILE")
    if hostfile is not None and not Path(hostfile).read_text().strip():  # mlx.launch -n 1: empty hostfile
        return DataParallel()
    try:
        group = mx.distributed.init(strict=launched())
    except RuntimeError as error:
        raise MLXRNNError(f"could not join the processes mlx.launch started: {error}") from error
    return DataParallel(group) if group.size() > 1 else DataParallel()


class DataParallel:
    """This process's place among N data-parallel replicas and the collectives training needs.

    Args:
        group: an ``mx.distributed.Group`` of size > 1, or None for a single process.
    """

    def __init__(self, group: Any = None):
        self.group = group
        self.rank: int = group.rank() if group is not None else 0
        self.size: int = group.size() if group is not None else 1
        self._outgoing = np.zeros(3, np.float32)  # [clock, SIGINT seen, SIGTERM seen], sent with the next step
        self._incoming: Any = None  # the same, averaged over the processes at the last step

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, logs metrics and writes checkpoints."""
        return self.rank == 0

    def rows(self, n: int) -> slice:
        """This process's share of n rows: [r·n/N, (r+1)·n/N), i.e. rows r·B..(r+1)·B - 1 when n = N·B."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    # --- collectives ---------------------------------------------------------------------------
    def all_reduce_mean(self, tensors: Mapping[str, Any]) -> dict[str, Any]:
        """The mean over the processes of every tensor, with ONE ``all_sum`` of one flat buffer.

        ``tensors``: name → MLX array, NumPy array or float, with the same names, shapes and order
        on every process. Each result keeps its input's kind (MLX results stay lazy), shape and dtype.
        """
        if self.group is None:
            return dict(tensors)
        return dict(zip(tensors, self._all_sum(list(tensors.values()), scale=1.0 / self.size)))

    def sum_values(self, *values: float) -> tuple[float, ...]:
        """Each value summed over the processes, in float64: (loss sum, token count) of validation shards."""
        if self.group is None:
            return values
        import mlx.core as mx

        total = mx.distributed.all_sum(mx.array(np.array(values, np.float64)), group=self.group, stream=mx.cpu)
        return tuple(np.array(total).tolist())

    def barrier(self) -> None:
        """Return once every process has called it."""
        self.sum_values(0.0)

    def gather_state(self, state: Any) -> Any:
        """The carried recurrent state of the global batch: an array (layers, B, H), or a tuple of
        them, with every process's B rows concatenated in rank order into (layers, N·B, H)."""
        if self.group is None or state is None:
            return state
        import mlx.core as mx

        def gather(part):  # all_gather concatenates along axis 0; the batch is axis 1
            whole = mx.distributed.all_gather(mx.swapaxes(mx.array(part), 0, 1), group=self.group, stream=mx.cpu)
            whole = mx.swapaxes(whole, 0, 1)
            # Run it now: ranks > 0 drop the result, and a collective left lazy on one process would
            # pair with the next collective of the others (the step's all_sum) and scramble both.
            mx.eval(whole)
            return whole if isinstance(part, mx.array) else np.array(whole)

        return tuple(gather(p) for p in state) if isinstance(state, tuple) else gather(state)

    def shard_state(self, state: Any) -> Any:
        """Inverse of :meth:`gather_state`: this process's rows of a global carried state."""
        if self.group is None or state is None:
            return state
        parts = state if isinstance(state, tuple) else (state,)
        mine = tuple(part[:, self.rows(part.shape[1])] for part in parts)
        return mine if isinstance(state, tuple) else mine[0]

    def _all_sum(self, values: list, scale: float) -> list:
        import mlx.core as mx

        from_numpy = not any(isinstance(v, mx.array) for v in values)
        parts = [v if isinstance(v, mx.array) else mx.array(v) for v in values]
        flat = mx.concatenate([p.reshape(-1) for p in parts])  # (Σ sizes,): one message, not one per tensor
        total = mx.distributed.all_sum(flat, group=self.group, stream=mx.cpu if from_numpy else None) * scale
        pieces = mx.split(total, np.cumsum([p.size for p in parts])[:-1].tolist())
        pieces = [piece.reshape(p.shape).astype(p.dtype) for piece, p in zip(pieces, parts)]
        if from_numpy:
            mx.eval(pieces)
        return [piece if isinstance(v, mx.array) else np.array(piece) for piece, v in zip(pieces, values)]

    # --- the training step ---------------------------------------------------------------------
    def average_step(self, loss: Any, grads: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The Trainer's ``grad_transform``: loss and gradients averaged over the processes, in one
        all-reduce that also carries what :meth:`agree` sends."""
        votes = self._outgoing
        if not isinstance(loss, (np.ndarray, np.generic, float)):  # MLX: keep everything lazy, one sync per step
            import mlx.core as mx

            votes = mx.array(votes)
        reduced = self.all_reduce_mean({**grads, _LOSS: loss, _VOTES: votes})
        self._incoming = reduced.pop(_VOTES)
        return reduced.pop(_LOSS), reduced

    def agree(self, clock: float, signals: list[int]) -> tuple[float, list[int]]:
        """What the training loop decides must be decided alike everywhere (stop on the time budget
        or on a signal, a time-based cosine). Queues this process's clock and received signals for
        the next step's all-reduce; returns what the last one carried: the processes' mean clock and
        the signals any of them received. Single process: its own (clock, signals)."""
        if self.group is None:
            return clock, signals
        self._outgoing = np.array([clock, signal.SIGINT in signals, signal.SIGTERM in signals], np.float32)
        if self._incoming is None:
            return 0.0, []
        mean_clock, sigint, sigterm = np.array(self._incoming).tolist()
        return mean_clock, [s for s, seen in ((signal.SIGINT, sigint), (signal.SIGTERM, sigterm)) if seen > 0]

    # --- the data ------------------------------------------------------------------------------
    def shard_batcher(self, batcher):
        """This process's rows of every window of ``batcher`` (an LMBatcher of all N processes' rows)."""
        return batcher if self.group is None else ShardedBatcher(batcher, self.rows(batcher.batch_size))

    def dropout_rng(self, generator: np.random.Generator):
        """The generator dropout masks come from: the global batch's masks, this process's rows."""
        return generator if self.group is None else ShardedDropoutRNG(generator, self)


class ShardedBatcher:
    """Rows ``rows`` of every window of an :class:`~mlxrnn.text.batching.LMBatcher` shared by all processes."""

    def __init__(self, batcher, rows: slice):
        self.batcher, self.rows = batcher, rows
        self.batch_size = rows.stop - rows.start

    def __len__(self) -> int:
        return len(self.batcher)

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Window k of the global batcher, this process's rows: (inputs, targets), each (B, T')."""
        inputs, targets = self.batcher.window(k)
        return inputs[self.rows], targets[self.rows]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return (self.window(k) for k in range(len(self)))


class ShardedDropoutRNG:
    """Draws the dropout masks of the whole global batch and hands out this process's rows.

    The recurrent layers draw masks with ``random(size=(T, B, H))``. Drawing (T, N·B, H) and keeping
    rows r·B..(r+1)·B gives each process exactly the masks one process with batch N·B would use,
    and keeps every replica's generator in the same state, so rank 0's checkpoint resumes them all.
    """

    def __init__(self, generator: np.random.Generator, dist: DataParallel):
        self.generator, self.dist = generator, dist

    @property
    def bit_generator(self):
        return self.generator.bit_generator

    def random(self, size: tuple[int, int, int]) -> np.ndarray:
        if len(size) != 3:
            raise NotImplementedError(f"sharded dropout masks expect size (T, B, H), got {size}")
        steps, rows, features = size
        everyone = rows * self.dist.size
        return self.generator.random(size=(steps, everyone, features))[:, self.dist.rows(everyone)]
