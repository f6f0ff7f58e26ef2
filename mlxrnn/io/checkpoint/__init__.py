"""Safe, portable, crash-safe checkpoints: safetensors for arrays, JSON for everything else.

A checkpoint is an immutable directory::

    model.safetensors       weights: flat name -> float32/float64 array
    optimizer.safetensors   optimizer tensors (float32/float64/int32/int64); only written when
                            the caller passes ``optimizer_tensors``
    meta.json               {"library": "mlxrnn", "format_version": 1, "created": ISO-8601 UTC,
                             "files": {file name: {"sha256": hex, "bytes": size}},
                             "meta": caller's JSON object (config, vocabulary, step, RNG, ...)}

A *run directory* keeps checkpoints as ``checkpoints/step-00000123/`` plus pointer files
``last.json`` / ``best.json`` (any ``<tag>.json``) holding ``{"checkpoint": "checkpoints/..."}``.

Crash safety (SIGKILL or power loss at any instant never damages the latest good checkpoint):
a checkpoint is written into a temporary sibling ``.tmp-<name>-<pid>-<rand>``, every file and
the directory are fsynced, and only then is it renamed into place; pointers are replaced with
``os.replace`` of an fsynced temporary file. Readers therefore see either the old or the new
checkpoint, never a partial one. Leftover ``.tmp-*`` entries of dead processes are removed by
the next :func:`save_run_checkpoint`. One process at a time may write to a given run directory.

Loading never executes code: only ``json.loads`` and ``safetensors.numpy.load`` parse the
files (no pickle), every file is checked against the sha256 recorded at save time, and every
problem is reported as a one-line :class:`~mlxrnn.errors.CheckpointError`.

This package deals in NumPy arrays only; callers convert from/to their backend. Its modules:
``format`` (what is stored and how it is serialised), ``durable`` (crash-safe writes),
``pointers`` (run directories: step directories, tag pointers, pruning), ``load`` (reading and
validation). The public names are re-exported here.
"""

from __future__ import annotations

from mlxrnn.io.checkpoint.durable import save_checkpoint
from mlxrnn.io.checkpoint.format import FORMAT_VERSION, LIBRARY, Checkpoint
from mlxrnn.io.checkpoint.load import check_weights, load_checkpoint
from mlxrnn.io.checkpoint.pointers import list_checkpoints, resolve_checkpoint, save_run_checkpoint

__all__ = [
    "FORMAT_VERSION",
    "LIBRARY",
    "Checkpoint",
    "check_weights",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_run_checkpoint",
]
