"""The network of a language model with its tokenizer and vocabulary: what sampling, scoring and
evaluation compute with.

    ids (B, T) → embedding (or one-hot) → stacked RNN/GRU/LSTM → linear → softmax over V

The model predicts token t+1 from tokens ≤ t. Sampling and scoring need a first input before
any text: we feed a *start token*, "\\n" for character models (every line starts after one)
and <EOS> for word models (every sentence starts after the previous one's <EOS>), so the very
first token is predicted from a context the model saw in training.

:class:`~mlxrnn.lm.model.LanguageModel` adds what a user calls (load, save, sample, score,
evaluate) on top; :mod:`mlxrnn.lm.sampling` and :mod:`mlxrnn.lm.evaluation` need only this class,
so they sit below the model and it imports them, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ShapeError
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.nn.layers import check_token_ids
from mlxrnn.text.tokenizers import AnyTokenizer
from mlxrnn.text.vocabulary import Vocabulary

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
    embed_dropout: float = 0.0,
    output_dropout: float = 0.0,
    locked_dropout: bool = False,
    embed_init_range: float | None = None,
) -> SequenceModelConfig:
    """The SequenceModel config of a language model; ``embed_size=0`` feeds one-hot vectors.

    ``dropout`` acts between stacked layers, ``embed_dropout`` on the embedding (or one-hot)
    output, ``output_dropout`` before the output layer; ``locked_dropout`` shares each mask
    across the time steps of a sequence; ``embed_init_range`` r draws the embedding U(−r, r)
    (:mod:`mlxrnn.lm.initialisation`), None N(0, 1) as PyTorch's nn.Embedding does."""
    return SequenceModelConfig(
        input_kind="embedding" if embed_size else "one_hot",
        input_size=vocab_size,
        embed_size=embed_size or 1,
        cell=cell,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        locked_dropout=locked_dropout,
        embed_dropout=embed_dropout,
        output_dropout=output_dropout,
        output_size=vocab_size,
        output="sequence",
        loss="cross_entropy",
        tie_weights=tie_weights,
        cell_options=cell_options or {},
        seed=seed,
        embed_init_range=embed_init_range,
    ).validate()


@dataclass(repr=False)
class LanguageNetwork:
    """A language model's network, tokenizer and vocabulary, and the computations on them."""

    model: SequenceModel
    vocab: Vocabulary
    tokenizer: AnyTokenizer

    @property
    def xp(self):
        """The model's backend."""
        return self.model.xp

    @property
    def level(self) -> str:
        """"char" or "word": what a token is."""
        return self.tokenizer.level

    @property
    def start_id(self) -> int:
        """The token fed before any text (see the module docstring)."""
        start = getattr(self.tokenizer, "start_token", "\n" if self.level == "char" else None)
        if start is not None and start in self.vocab:
            return self.vocab.token_to_id(start)
        return self.vocab.eos_id

    def encode(self, text: str) -> np.ndarray:
        """Text → token ids (1-D) with the model's tokenizer and vocabulary (unknown words → <UNK>)."""
        return self.vocab.encode(self.tokenizer.tokenize(text))

    def decode(self, ids) -> str:
        """Token ids → text, as the tokenizer joins its tokens."""
        if hasattr(self.tokenizer, "decode_ids"):  # bpe: bytes to text at once (a character may span tokens)
            self.vocab.decode(ids)  # the same checks of the ids (1-D integers in range)
            return self.tokenizer.decode_ids(ids)
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def next_token_logits(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """Feed ids (B, T); return the logits after the last step as NumPy (B, V) and the state."""
        # No dtype here: the model checks ids are integers in range (a cast could wrap 2**32 to 0).
        logits, state, _ = self.model.forward(np.asarray(ids), initial_state=state, keep_cache=False)
        last = logits[:, -1, :]
        return self.xp.to_numpy(last).astype(np.float64), state

    def token_stepper(self):
        """A cache-free one-token-per-row path for generation: ``step(tokens (B,), state)``
        returns (logits (B, V) float64 NumPy, state), the numbers of :meth:`next_token_logits`
        on ``tokens[:, None]`` without building BPTT caches. Layer 0's input projection of the
        whole vocabulary is computed once here, so each token starts from a row of it.
        """
        model, xp = self.model, self.xp
        if model.config.input_kind == "embedding":
            inputs = model.embedding.params["weight"]
        else:  # one-hot inputs: the projection of the identity is the table
            inputs = xp.from_numpy(np.eye(model.config.input_size))
        table = model.rnn.project_inputs(inputs)  # (V, G·H)
        head_weight, head_bias = model._head_weight(), model.head.params.get("b")

        vocab_size = model.config.input_size

        def step(tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
            # Checked like every other entry point (NumPy would raise IndexError past the table,
            # MLX would read garbage, and both would wrap negative ids around), in plain Python
            # for the few ids of a sampling step: NumPy's min/max would double the per-token cost.
            tokens = np.asarray(tokens)
            if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
                raise ShapeError(f"token_stepper takes integer ids, shape (batch,); got {tokens.dtype} {tokens.shape}")
            values = tokens.tolist() if tokens.size <= 1024 else (int(tokens.min()), int(tokens.max()))
            if values and (min(values) < 0 or max(values) >= vocab_size):
                check_token_ids(xp, tokens, vocab_size)  # raises, naming the id
            ids = xp.from_numpy(tokens.astype(np.int64, copy=False))
            h, state = model.rnn.step(x_proj=xp.take(table, ids, axis=0), state=state)
            logits = xp.matmul(h, head_weight)
            if head_bias is not None:
                logits = logits + head_bias
            return xp.to_numpy(logits).astype(np.float64), state

        return step

    def log_probs(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """log p(· | prefix) at every step: ids (B, T) → (B, T, V) float64 NumPy, and the state."""
        logits, state, _ = self.model.forward(np.asarray(ids), initial_state=state, keep_cache=False)
        logits = self.xp.to_numpy(logits).astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), state

    def checkpoint_meta(self) -> dict:
        """The JSON a checkpoint keeps beside the weights: kind, model config, vocabulary, tokenizer."""
        return {
            "kind": LM_KIND,
            "model_config": self.model.config.to_dict(),
            "vocab": self.vocab.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
        }
