"""Language models as people use them: load a trained one, sample, score, evaluate, save.

:class:`LanguageModel` is a :class:`~mlxrnn.lm.network.LanguageNetwork` (network, tokenizer and
vocabulary, and the start token; see that module) with the methods behind ``mlxrnn sample``,
``score`` and ``eval``, which call :mod:`mlxrnn.lm.sampling` and :mod:`mlxrnn.lm.evaluation`.

Checkpoints hold the model config, the tokenizer and the vocabulary (JSON) beside the weights
(safetensors), so :func:`load_language_model` rebuilds everything on any backend.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.backend import get_backend
from mlxrnn.errors import CheckpointError, ConfigError, MLXRNNError
from mlxrnn.io.checkpoint import Checkpoint, check_weights, load_checkpoint, save_checkpoint
from mlxrnn.io.model_files import MODEL_KINDS, register_loader
from mlxrnn.lm import evaluation, sampling
from mlxrnn.lm.network import LM_KIND, LanguageNetwork
from mlxrnn.lm.network import language_model_config as language_model_config  # its documented home too
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.text.corpus import read_text
from mlxrnn.text.tokenizers import tokenizer_from_dict
from mlxrnn.text.vocabulary import Vocabulary


class LanguageModel(LanguageNetwork):
    """A trained (or fresh) language model: network, tokenizer and vocabulary together.

    ``LanguageModel.load(run_dir)`` (or ``mlxrnn.load``) opens a trained run; :meth:`sample`,
    :meth:`score` and :meth:`evaluate` do what ``mlxrnn sample``, ``score`` and ``eval`` do, with
    the same results and field names; :meth:`save` writes a checkpoint those commands read.
    """

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

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write the model (weights, config, vocabulary, tokenizer; no training state) to the new
        checkpoint directory ``directory``, atomically; ``mlxrnn sample`` and :meth:`load` read it.
        ``overwrite=True`` replaces a model saved there before, in one step (never anything else)."""
        return save_checkpoint(directory, self.model.numpy_parameters(), self.checkpoint_meta(), overwrite=overwrite)

    # --- what the CLI's sample, score and eval do ---------------------------------------------------
    def sample(self, length: int = 500, *, prime: str = "", num_samples: int | None = None,
               temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
               greedy: bool = False, allow_unk: bool = False, seed: int | None = None,
               include_prime: bool = True, sentences: int | None = None) -> str | list[str]:
        """Generate ``length`` tokens after ``prime`` (``mlxrnn sample``, with the same options).

        Returns the prime followed by the generated text, as ``mlxrnn sample`` prints it, or only
        the generated text with ``include_prime=False`` (what its ``--json`` lists under
        "samples"). One string; with ``num_samples=k``, a list of k strings drawn as one batch.
        ``seed`` makes the draw reproducible (the CLI's ``--seed`` gives the same text).
        Word models stop a sample at <EOS> (its end of line); ``sentences=n`` goes on to the n-th
        (character models: n lines), as ``--sentences`` does, ``length`` still bounding the tokens.
        """
        options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                  allow_unk=allow_unk)
        samples = sampling.sample(self, length=length, num_samples=1 if num_samples is None else num_samples,
                                  prime=prime, options=options, seed=seed, allow_unknown_prime=allow_unk,
                                  sentences=sentences)
        texts = samples.with_prime() if include_prime else samples.texts
        return texts[0] if num_samples is None else texts

    def score(self, texts: str | Sequence[str]) -> Any:
        """log p of each text by the chain rule (``mlxrnn score``): a
        :class:`~mlxrnn.lm.sampling.SentenceScore` (``log_prob``, ``mean_log_prob``, ``perplexity``,
        ``num_tokens``, ``tokens``; ``to_dict()`` is the CLI's JSON), or a list of them, in the
        order given, for a list of texts."""
        return sampling.score(self, [texts])[0] if isinstance(texts, str) else sampling.score(self, texts)

    def evaluate(self, text: str | os.PathLike[str], window: int = 256) -> Any:
        """Loss, perplexity and bits per token of ``text`` (``mlxrnn eval``): an
        :class:`~mlxrnn.lm.evaluation.Evaluation`, whose ``to_dict()`` is the CLI's JSON.

        ``text`` is the text itself, or a file: a :class:`pathlib.Path`, or a string naming an
        existing file (read as :meth:`evaluate_file` reads it). A one-word string that looks
        like a path to a file that does not exist is refused: scoring the path's own characters
        would be a wrong answer given without a word.
        """
        if isinstance(text, os.PathLike) or _names_a_file(text):
            return self.evaluate_file(text)
        if _looks_like_a_path(text):
            raise ConfigError(
                f"`text` {text!r} looks like a file path, but there is no such file; pass the text itself, or an "
                "existing file (a pathlib.Path, or evaluate_file(path))"
            )
        return evaluation.evaluate_text(self, text, window=window)

    def evaluate_file(self, path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Any:
        """:meth:`evaluate` of a text file, read as ``mlxrnn eval RUN FILE`` reads it."""
        return evaluation.evaluate_text(self, read_text(path, encoding=encoding, errors=errors))


def _names_a_file(text: Any) -> bool:
    """Whether a string is the name of an existing file (one line, no NUL: never a text's body)."""
    return isinstance(text, str) and 0 < len(text) < 4096 and "\n" not in text and "\0" not in text and (
        os.path.isfile(text))


def _looks_like_a_path(text: Any) -> bool:
    """One word with a directory separator or a file suffix ("data/test.txt", "valid.tokens")."""
    return isinstance(text, str) and bool(_PATH_LIKE.match(text.strip())) and not any(c.isspace() for c in text.strip())


_PATH_LIKE = re.compile(r"^(?:\S*[/\\]\S+|\S+\.[A-Za-z][A-Za-z0-9]{0,5})$")


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
        vocab = Vocabulary.from_dict(meta["vocab"]).check_entries()  # e.g. no 300,000-character "character"
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
    kind = checkpoint.meta.get("kind") if isinstance(checkpoint.meta, dict) else None
    if isinstance(kind, str) and kind in MODEL_KINDS:  # e.g. `mlxrnn sample` on a classifier's directory
        raise CheckpointError(
            f"{path} holds a {MODEL_KINDS[kind].__name__} (a model saved with .save), not a language model: "
            f"`mlxrnn sample`, `score` and `eval` read what `mlxrnn train` writes; open it in Python with "
            f"mlxrnn.load({str(path)!r})"
        )
    return _from_checkpoint(checkpoint, backend), checkpoint


def _from_checkpoint(checkpoint: Checkpoint, backend: Any) -> LanguageModel:
    lm = language_model_from_meta(checkpoint.meta, backend=backend, weights=checkpoint.weights)
    check_weights(checkpoint.weights, lm.model.parameter_shapes())
    lm.model.load_parameters(checkpoint.weights)
    return lm


register_loader(LM_KIND, _from_checkpoint)  # mlxrnn.load opens language models too
