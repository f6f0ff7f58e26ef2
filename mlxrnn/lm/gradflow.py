"""Gradient flow of language models on text: fresh RNN, GRU and LSTM side by side, or trained runs.

The arrays come from :func:`mlxrnn.models.gradflow.gradient_flow` (read from the layers' own
backward); this module supplies the text, the batch and the models. For notebooks::

    from mlxrnn.lm.gradflow import compare_fresh_cells
    flows = compare_fresh_cells(text, cells=("rnn", "gru", "lstm"), seq_len=50)
    flows["rnn"].median_hidden()[-1]        # (T,) ‖∂ℓ/∂h⟨t⟩‖ of the top layer, step 0 first
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import DataError
from mlxrnn.lm.model import language_model_config, load_language_model
from mlxrnn.models.gradflow import GradientFlow, gradient_flow
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.nn.module import check_positive_int
from mlxrnn.text.tokenizers import make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary

DEFAULT_CELLS = ("rnn", "gru", "lstm")


def text_batch(ids: np.ndarray, batch_size: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """B windows of T+1 consecutive tokens at seeded random offsets: (inputs (B, T), targets (B, T)).

    Raises DataError when the text is shorter than one window.
    """
    batch_size, seq_len = check_positive_int("`batch_size`", batch_size), check_positive_int("`seq_len`", seq_len)
    ids = np.asarray(ids)
    starts = len(ids) - seq_len  # offsets 0 … len − T − 1 leave room for the targets
    if starts < 1:
        raise DataError(
            f"the text has {len(ids)} tokens, too few for one window of `seq_len` {seq_len} plus its next "
            "token; give a longer text or a smaller `seq_len`"
        )
    offsets = np.random.default_rng(seed).choice(starts, size=batch_size, replace=batch_size > starts)
    windows = np.stack([ids[o : o + seq_len + 1] for o in offsets])
    return windows[:, :-1], windows[:, 1:]


def fresh_model(cell: str, vocab_size: int, hidden_size: int = 128, num_layers: int = 1, embed_size: int = 64,
                seed: int = 0, backend: Any = None) -> SequenceModel:
    """An untrained character language model's network, initialised as ``mlxrnn train`` would."""
    config = language_model_config(vocab_size, cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                                   embed_size=embed_size, seed=seed)
    return SequenceModel(config, backend=backend)


def compare_fresh_cells(
    text: str,
    cells: Sequence[str] = DEFAULT_CELLS,
    hidden_size: int = 128,
    num_layers: int = 1,
    embed_size: int = 64,
    seq_len: int = 50,
    batch_size: int = 16,
    seed: int = 0,
    backend: Any = None,
) -> dict[str, GradientFlow]:
    """Gradient flow of untrained character models of each cell on one batch of ``text``.

    Every model reads the same B windows of T characters (vocabulary built from ``text``) and
    is seeded alike; returns {cell: GradientFlow}.
    """
    tokenizer = make_tokenizer("char")
    tokens = tokenizer.tokenize(text)
    vocab = Vocabulary.build(tokens, level="char")
    inputs, targets = text_batch(vocab.encode(tokens), batch_size, seq_len, seed)
    return {
        cell: gradient_flow(fresh_model(cell, len(vocab), hidden_size, num_layers, embed_size, seed, backend),
                            inputs, targets)
        for cell in cells
    }


def run_gradient_flow(run: str | Path, text: str, seq_len: int = 50, batch_size: int = 16, seed: int = 0,
                      backend: Any = None, tag: str = "best") -> GradientFlow:
    """Gradient flow of a trained run's model (its ``best`` checkpoint by default) on ``text``."""
    lm, _ = load_language_model(run, backend=backend, tag=tag)
    inputs, targets = text_batch(lm.encode(text), batch_size, seq_len, seed)
    return gradient_flow(lm.model, inputs, targets)
