"""Starting a new run from another run's weights (``init_from``): fine-tuning, another corpus.

The policy, in three parts:

* **Architecture**: the new run takes every ``architecture`` setting (cell and its options,
  layers, hidden, embed, tie, level, lowercase) from the source's checkpoint; a different one
  given explicitly is refused (:meth:`TrainOptions.initialized_from`). Everything else (lr,
  dropout, seq_len, budget, ...) is the new run's own, as for any new run.
* **Vocabulary**: the source's vocabulary, with the new corpus's tokens it lacks appended
  (:meth:`Vocabulary.extended`: most frequent first, ``min_count`` applies to them,
  ``max_vocab`` caps the total). Old ids keep their meaning, so every weight carries over.
  ``max_vocab`` = the source's size keeps its vocabulary exactly (new tokens become <UNK>).
* **Weights**: every parameter is copied from the source's best checkpoint (its last when it
  has no best); the rows of new tokens (embedding rows, one-hot input rows, output-layer
  columns and biases) keep the new model's fresh initialisation (seeded by `seed`). The
  optimizer, schedule and counters start fresh: it is a new run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.lm.model import LanguageModel, load_language_model
from mlxrnn.text.tokenizers import DEFAULT_UNK_TOKEN

__all__ = ["load_source", "load_weights_of", "source_architecture", "transplant_weights"]


def load_source(path: str | Path, run_dir: str | Path) -> tuple[LanguageModel, int | None]:
    """The language model a new run in ``run_dir`` starts from (on NumPy: only its numbers are
    needed), and the step its checkpoint was saved at (None when unknown)."""
    source, target = Path(path), Path(run_dir)
    try:
        same = source.resolve() == target.resolve() or target.resolve() in source.resolve().parents
    except (OSError, RuntimeError):
        same = False
    if same:  # starting would replace (with `force`) the very run it starts from
        raise ConfigError(f"`init_from` {source} lies in `run_dir` {target}, which the new run takes; choose another")
    lm, checkpoint = load_language_model(source, backend="numpy", tag="best")
    training = checkpoint.meta.get("training")
    state = training.get("state") if isinstance(training, dict) else None
    step = state.get("step") if isinstance(state, dict) else None
    return lm, step if isinstance(step, int) else None


def source_architecture(lm: LanguageModel) -> dict[str, Any]:
    """The ``architecture`` settings of :class:`TrainOptions` that made ``lm``, read from its
    model config and tokenizer (so any language-model checkpoint can be a source)."""
    config, described = lm.model.config, lm.tokenizer.to_dict()
    word = lm.level == "word"
    return {
        "level": lm.level,
        "tokenizer": described.get("kind", "words" if word else "chars"),
        # a character model has no unknown-word literal: its setting stays the default
        "unk_token": (described.get("unk_token") or "") if word else DEFAULT_UNK_TOKEN,
        "lowercase": bool(lm.tokenizer.to_dict().get("lowercase", False)),
        "cell": config.cell,
        "cell_options": dict(config.cell_options or {}),
        "layers": int(config.num_layers),
        "hidden": int(config.hidden_size),
        "embed": int(config.embed_size) if config.input_kind == "embedding" else 0,
        "tie": bool(config.tie_weights),
    }


def transplant_weights(
    fresh: dict[str, np.ndarray], source: dict[str, np.ndarray], old_vocab: int, new_vocab: int
) -> dict[str, np.ndarray]:
    """``fresh`` (the new model's initial parameters) with the ``source`` parameters copied in.

    The two models differ only in vocabulary size, so a parameter's axes either match or are
    the vocabulary axis (``old_vocab`` → ``new_vocab``: (V, E) embeddings, (V, G·H) one-hot
    input weights, (H, V) output weights, (V,) output biases); the first ``old_vocab``
    entries along it come from the source, the rest stay fresh.
    """
    if set(fresh) != set(source):
        raise CheckpointError(
            f"the source run's parameters ({', '.join(sorted(set(source) - set(fresh)) or ['-'])} extra, "
            f"{', '.join(sorted(set(fresh) - set(source)) or ['-'])} missing) do not fit the new model"
        )
    merged = {}
    for name, new in fresh.items():
        old = np.asarray(source[name])
        fits = old.ndim == new.ndim and all(
            o == n or (o, n) == (old_vocab, new_vocab) for o, n in zip(old.shape, new.shape)
        )
        if not fits:
            raise CheckpointError(
                f"the source run's {name!r} has shape {old.shape}, which does not fit the new model's {new.shape}"
            )
        block = np.array(new, copy=True)
        block[tuple(slice(0, size) for size in old.shape)] = old
        merged[name] = block
    return merged


def load_weights_of(source: LanguageModel, lm: LanguageModel) -> int:
    """Load ``source``'s weights into ``lm`` (built on ``source``'s vocabulary, grown); returns how
    many tokens ``lm``'s vocabulary adds, whose rows keep ``lm``'s initialisation."""
    if lm.vocab.tokens[: len(source.vocab)] != source.vocab.tokens:
        raise ConfigError("the new run's vocabulary must start with the source run's tokens, in their order")
    fresh, old = lm.model.numpy_parameters(), source.model.numpy_parameters()
    lm.model.load_parameters(transplant_weights(fresh, old, len(source.vocab), len(lm.vocab)))
    return len(lm.vocab) - len(source.vocab)
