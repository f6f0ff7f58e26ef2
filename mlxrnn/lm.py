"""Language models: a tokenizer and vocabulary around a :class:`SequenceModel`.

    ids (B, T) → embedding (or one-hot) → stacked RNN/GRU/LSTM → linear → softmax over V

The model predicts token t+1 from tokens ≤ t. Sampling and scoring need a first input before
any text: we feed a *start token*, "\\n" for character models (every line starts after one)
and <EOS> for word models (every sentence starts after the previous one's <EOS>), so the very
first token is predicted from a context the model saw in training.

Checkpoints hold the model config, the tokenizer and the vocabulary (JSON) beside the weights
(safetensors), so :func:`load_language_model` rebuilds everything on any backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import check_weights, load_checkpoint
from .data import Vocabulary, make_tokenizer
from .errors import CheckpointError
from .models import SequenceModel, SequenceModelConfig

LM_KIND = "language_model"


def language_model_config(
    vocab_size: int,
    cell: str = "lstm",
    hidden_size: int = 512,
    num_layers: int = 2,
    embed_size: int = 128,
    dropout: float = 0.0,
    tie_weights: bool = False,
    cell_options: dict | None = None,
    seed: int = 0,
) -> SequenceModelConfig:
    """The SequenceModel config of a language model; ``embed_size=0`` feeds one-hot vectors."""
    return SequenceModelConfig(
        input_kind="embedding" if embed_size else "one_hot",
        input_size=vocab_size,
        embed_size=embed_size or 1,
        cell=cell,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        output_size=vocab_size,
        output="sequence",
        loss="cross_entropy",
        tie_weights=tie_weights,
        cell_options=cell_options or {},
        seed=seed,
    ).validate()


@dataclass
class LanguageModel:
    """A trained (or fresh) language model: network, tokenizer and vocabulary together."""

    model: SequenceModel
    vocab: Vocabulary
    tokenizer: Any  # CharTokenizer | WordTokenizer

    @property
    def xp(self):
        return self.model.xp

    @property
    def level(self) -> str:
        return self.tokenizer.level

    @property
    def start_id(self) -> int:
        """The token fed before any text (see the module docstring)."""
        if self.level == "char" and "\n" in self.vocab:
            return self.vocab.token_to_id("\n")
        return self.vocab.eos_id

    def encode(self, text: str) -> np.ndarray:
        return self.vocab.encode(self.tokenizer.tokenize(text))

    def decode(self, ids) -> str:
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def next_token_logits(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """Feed ids (B, T); return the logits after the last step as NumPy (B, V) and the state."""
        logits, state, _ = self.model.forward(np.asarray(ids, dtype=np.int32), initial_state=state)
        last = logits[:, -1, :]
        return self.xp.to_numpy(last).astype(np.float64), state

    def log_probs(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """log p(· | prefix) at every step: ids (B, T) → (B, T, V) float64 NumPy, and the state."""
        logits, state, _ = self.model.forward(np.asarray(ids, dtype=np.int32), initial_state=state)
        logits = self.xp.to_numpy(logits).astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), state

    def checkpoint_meta(self) -> dict:
        return {
            "kind": LM_KIND,
            "model_config": self.model.config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
        }


def language_model_from_meta(meta: dict, backend: Any = None) -> LanguageModel:
    """Rebuild an (untrained) LanguageModel from checkpoint metadata, validating it."""
    if meta.get("kind") != LM_KIND:
        raise CheckpointError(f"this checkpoint holds a {meta.get('kind')!r}, not a language model")
    try:
        config = SequenceModelConfig.from_dict(meta["model_config"])
        vocab = Vocabulary.from_dict(meta["vocab"])
        tokenizer = make_tokenizer(**meta["tokenizer"])
    except CheckpointError:
        raise
    except Exception as error:  # any malformed field is a damaged checkpoint, reported in one line
        raise CheckpointError(f"checkpoint metadata is invalid ({type(error).__name__}: {error})") from None
    if len(vocab) != config.input_size or len(vocab) != config.output_size:
        raise CheckpointError(
            f"the checkpoint's vocabulary has {len(vocab)} tokens but its model expects {config.input_size}"
        )
    return LanguageModel(SequenceModel(config, backend=backend), vocab, tokenizer)


def load_language_model(path: str | Path, backend: Any = None, tag: str = "best") -> tuple[LanguageModel, Any]:
    """Load a language model from a run directory (``tag`` = best or last) or checkpoint dir.

    Returns (language model, the Checkpoint). Raises CheckpointError on anything unusable.
    """
    checkpoint = load_checkpoint(path, tag=tag)
    lm = language_model_from_meta(checkpoint.meta, backend=backend)
    check_weights(checkpoint.weights, lm.model.parameter_shapes())
    lm.model.load_parameters(checkpoint.weights)
    return lm, checkpoint
