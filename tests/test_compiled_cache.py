"""The compiled step's trace cache (issue 29, item 1): bounded, and least recently used first out.

A sequence that reuses a shape before a third one arrives tells an LRU from a FIFO: with room
for two traces, shapes A, B, A, C, A trace A, B and C once each under LRU (the reuse of A makes
B the oldest, so C evicts B), but four times under FIFO (C evicts A, which is traced again).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxrnn
from mlxrnn import Adam, SequenceModel, SequenceModelConfig, Trainer

pytestmark = pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")

VOCAB = 7


def _trainer(max_traces: int = 2) -> Trainer:
    config = SequenceModelConfig(input_size=VOCAB, embed_size=3, hidden_size=4, output_size=VOCAB, cell="rnn", seed=1)
    trainer = Trainer(SequenceModel(config, backend="mlx"), Adam(lr=0.01))
    assert trainer.compiled
    trainer._compiled.max_traces = max_traces
    return trainer


def _batch(T: int, B: int = 2) -> dict:
    rng = np.random.default_rng(T)
    return {"inputs": rng.integers(0, VOCAB, (B, T)), "targets": rng.integers(0, VOCAB, (B, T))}


def test_the_trace_cache_drops_the_least_recently_used_trace():
    trainer = _trainer(max_traces=2)
    step = trainer._compiled
    counts = []
    for T in (2, 3, 2, 4, 2):  # A, B, A, C, A
        trainer.step(_batch(T))
        counts.append(step.traces)
    assert counts == [1, 2, 2, 3, 3]  # FIFO would give [1, 2, 2, 3, 4]: C would evict A
    assert len(step._functions) == 2
    trainer.step(_batch(3))  # B was the least recently used when C arrived: it is gone
    assert step.traces == 4


def test_a_cache_of_one_keeps_only_the_last_shape():
    trainer = _trainer(max_traces=1)
    for T in (2, 2, 3, 3, 2):
        trainer.step(_batch(T))
    assert trainer._compiled.traces == 3 and len(trainer._compiled._functions) == 1
