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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.backend import get_backend
from mlxrnn.errors import CheckpointError, MLXRNNError, ShapeError
from mlxrnn.io.checkpoint import Checkpoint, check_weights, load_checkpoint, save_checkpoint
from mlxrnn.io.model_files import register_loader
from mlxrnn.lm import evaluation, sampling
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.nn.layers import check_token_ids
from mlxrnn.text.corpus import read_text
from mlxrnn.text.tokenizers import AnyTokenizer, tokenizer_from_dict
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
) -> SequenceModelConfig:
    """The SequenceModel config of a language model; ``embed_size=0`` feeds one-hot vectors.

    ``dropout`` acts between stacked layers, ``embed_dropout`` on the embedding (or one-hot)
    output, ``output_dropout`` before the output layer; ``locked_dropout`` shares each mask
    across the time steps of a sequence."""
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
    ).validate()


@dataclass(repr=False)
class LanguageModel:
    """A trained (or fresh) language model: network, tokenizer and vocabulary together.

    ``LanguageModel.load(run_dir)`` (or ``mlxrnn.load``) opens a trained run; :meth:`sample`,
    :meth:`score` and :meth:`evaluate` do what ``mlxrnn sample``, ``score`` and ``eval`` do, with
    the same results and field names; :meth:`save` writes a checkpoint those commands read.
    """

    model: SequenceModel
    vocab: Vocabulary
    tokenizer: AnyTokenizer

    def __repr__(self) -> str:
        spec = self.model.config.recurrent
        return (f"LanguageModel(level={self.level!r}, vocabulary={len(self.vocab)}, cell={spec.cell!r}, "
                f"hidden_size={spec.hidden_size}, num_layers={spec.num_layers}; "
                f"{self.model.num_parameters():,} parameters, {self.xp.name} {self.xp.dtype_name})")

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """The network's :meth:`~mlxrnn.models.task.TaskModel.summary`, after the tokens it reads."""
        print_fn(f"{self.level}-level language model over {len(self.vocab)} tokens")
        self.model.summary(print_fn)

    # --- files ------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, backend: Any = None, tag: str = "best") -> LanguageModel:
        """A trained model from a run directory (its ``tag`` checkpoint, "best" or "last") or a
        checkpoint directory, as ``mlxrnn sample RUN`` loads it."""
        return load_language_model(path, backend=backend, tag=tag)[0]

    def save(self, directory: str | Path) -> Path:
        """Write the model (weights, config, vocabulary, tokenizer; no training state) to the new
        checkpoint directory ``directory``, atomically; ``mlxrnn sample`` and :meth:`load` read it."""
        return save_checkpoint(directory, self.model.numpy_parameters(), self.checkpoint_meta())

    # --- what the CLI's sample, score and eval do ---------------------------------------------------
    def sample(self, length: int = 500, *, prime: str = "", num_samples: int | None = None,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               greedy: bool = False, allow_unk: bool = False, seed: int | None = None,
               include_prime: bool = True) -> str | list[str]:
        """Generate ``length`` tokens after ``prime`` (``mlxrnn sample``, with the same options).

        Returns the prime followed by the generated text, as ``mlxrnn sample`` prints it, or only
        the generated text with ``include_prime=False`` (what its ``--json`` lists under
        "samples"). One string; with ``num_samples=k``, a list of k strings drawn as one batch.
        ``seed`` makes the draw reproducible (the CLI's ``--seed`` gives the same text).
        Word models stop a sample at <EOS> (its end of line).
        """
        options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                  allow_unk=allow_unk)
        samples = sampling.sample(self, length=length, num_samples=1 if num_samples is None else num_samples,
                                  prime=prime, options=options, seed=seed, allow_unknown_prime=allow_unk)
        texts = samples.with_prime() if include_prime else samples.texts
        return texts[0] if num_samples is None else texts

    def score(self, texts: str | Sequence[str]) -> Any:
        """log p of each text by the chain rule (``mlxrnn score``): a
        :class:`~mlxrnn.lm.sampling.SentenceScore` (``log_prob``, ``mean_log_prob``, ``perplexity``,
        ``num_tokens``, ``tokens``; ``to_dict()`` is the CLI's JSON), or a list of them, in the
        order given, for a list of texts."""
        return sampling.score(self, [texts])[0] if isinstance(texts, str) else sampling.score(self, texts)

    def evaluate(self, text: str, window: int = 256) -> Any:
        """Loss, perplexity and bits per token of ``text`` (``mlxrnn eval``): an
        :class:`~mlxrnn.lm.evaluation.Evaluation`, whose ``to_dict()`` is the CLI's JSON."""
        return evaluation.evaluate_text(self, text, window=window)

    def evaluate_file(self, path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Any:
        """:meth:`evaluate` of a text file, read as ``mlxrnn eval RUN FILE`` reads it."""
        return self.evaluate(read_text(path, encoding=encoding, errors=errors))

    @property
    def xp(self):
        return self.model.xp

    @property
    def level(self) -> str:
        return self.tokenizer.level

    @property
    def start_id(self) -> int:
        """The token fed before any text (see the module docstring)."""
        start = getattr(self.tokenizer, "start_token", "\n" if self.level == "char" else None)
        if start is not None and start in self.vocab:
            return self.vocab.token_to_id(start)
        return self.vocab.eos_id

    def encode(self, text: str) -> np.ndarray:
        return self.vocab.encode(self.tokenizer.tokenize(text))

    def decode(self, ids) -> str:
        if hasattr(self.tokenizer, "decode_ids"):  # bpe: bytes to text at once (a character may span tokens)
            self.vocab.decode(ids)  # the same checks of the ids (1-D integers in range)
            return self.tokenizer.decode_ids(ids)
        return self.tokenizer.detokenize(self.vocab.decode(ids))

    def next_token_logits(self, ids: np.ndarray, state: Any = None) -> tuple[np.ndarray, Any]:
        """Feed ids (B, T); return the logits after the last step as NumPy (B, V) and the state."""
        # No dtype here: the model checks ids are integers in range (a cast could wrap 2**32 to 0).
        logits, state, _ = self.model.forward(np.asarray(ids), initial_state=state)
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
        logits, state, _ = self.model.forward(np.asarray(ids), initial_state=state)
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


def _damaged(what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint metadata is invalid: {what}; the checkpoint was modified or damaged - load another one"
    )


def _check_fits_weights(config: SequenceModelConfig, weights: Mapping[str, Any]) -> None:
    """Refuse a model_config that cannot belong to these weights, before allocating its model.

    Every genuine language model of the config holds at least these many numbers, so a tampered
    hidden_size of 10**9 is caught here instead of exhausting the memory.
    """
    stored = sum(int(np.prod(np.shape(w))) for w in weights.values())
    hidden, vocab = config.hidden_size, config.input_size
    needs = {"num_layers × hidden_size²": config.num_layers * hidden * hidden}
    needs["hidden_size × vocabulary"] = hidden * max(vocab, config.output_size)
    if config.input_kind == "embedding":
        needs["vocabulary × embed_size"] = vocab * config.embed_size
        needs["embed_size × hidden_size"] = config.embed_size * hidden
    for what, count in needs.items():
        if count > stored:
            raise _damaged(
                f"its model_config needs at least {what} = {count:,} weights but the checkpoint stores {stored:,}"
            )


def language_model_from_meta(
    meta: dict, backend: Any = None, weights: Mapping[str, Any] | None = None
) -> LanguageModel:
    """Rebuild an (untrained) LanguageModel from checkpoint metadata, validating it.

    Every inconsistency is a one-line CheckpointError; only backend problems (unknown name, MLX
    missing) are reported as themselves. With ``weights``, the config is also checked to fit them
    before anything is allocated.
    """
    if not isinstance(meta, dict) or meta.get("kind") != LM_KIND:
        kind = meta.get("kind") if isinstance(meta, dict) else None
        held = f"a {kind!r}" if kind is not None else "no model kind"
        raise CheckpointError(f"this checkpoint holds {held}, not a language model; use the program that wrote it")
    xp = get_backend(backend)
    try:
        config = SequenceModelConfig.from_dict(meta["model_config"])
        vocab = Vocabulary.from_dict(meta["vocab"])
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
    except CheckpointError:
        raise
    except Exception as error:  # any malformed field is a damaged checkpoint, reported in one line
        raise _damaged(f"{type(error).__name__}: {error}") from None
    if config.input_kind == "dense" or config.output != "sequence" or config.loss != "cross_entropy" or (
        config.bidirectional
    ):
        raise _damaged(
            f"a language model reads token ids left to right and predicts the next one, but model_config has "
            f"input_kind={config.input_kind!r}, output={config.output!r}, loss={config.loss!r}, "
            f"bidirectional={config.bidirectional!r}"
        )
    if vocab.level != tokenizer.level:
        raise _damaged(f"the vocabulary is {vocab.level}-level but the tokenizer is {tokenizer.level}-level")
    if hasattr(tokenizer, "decode_ids") and list(vocab.tokens) != tokenizer.tokens:
        raise _damaged("the vocabulary is not the bpe tokenizer's")
    if len(vocab) != config.input_size or len(vocab) != config.output_size:
        raise CheckpointError(
            f"the checkpoint's vocabulary has {len(vocab)} tokens but its model expects {config.input_size}; "
            "the checkpoint was modified or damaged - load another one"
        )
    if weights is not None:
        _check_fits_weights(config, weights)
    try:
        model = SequenceModel(config, backend=xp)
    except (MLXRNNError, TypeError, ValueError, MemoryError) as error:
        raise _damaged(f"its model cannot be built ({type(error).__name__}: {error})") from None
    return LanguageModel(model, vocab, tokenizer)


def load_language_model(path: str | Path, backend: Any = None, tag: str = "best") -> tuple[LanguageModel, Any]:
    """Load a language model from a run directory (``tag`` = best or last) or checkpoint dir.

    Returns (language model, the Checkpoint). Raises CheckpointError on anything unusable.
    """
    checkpoint = load_checkpoint(path, tag=tag)
    return _from_checkpoint(checkpoint, backend), checkpoint


def _from_checkpoint(checkpoint: Checkpoint, backend: Any) -> LanguageModel:
    lm = language_model_from_meta(checkpoint.meta, backend=backend, weights=checkpoint.weights)
    check_weights(checkpoint.weights, lm.model.parameter_shapes())
    lm.model.load_parameters(checkpoint.weights)
    return lm


register_loader(LM_KIND, _from_checkpoint)  # mlxrnn.load opens language models too
