"""One-to-many: :class:`SequenceGenerator` (the notes' music generation).

One input — a class id k or a feature vector v — and a whole sequence out, each output fed
back in as the next input:

    x⟨1⟩ = C[k]               (class: a learned table C (K, E))
         = v W_c + b_c         (vector: v (F,), W_c (F, E))
    x⟨t⟩ = E[y⟨t−1⟩]  t ≥ 2     (the previous token's embedding, E (V, E))
    a⟨t⟩ = RNN(x⟨t⟩, a⟨t−1⟩),  a⟨0⟩ = 0
    ŷ⟨t⟩ = softmax(a⟨t⟩ W_y + b_y)

Training uses teacher forcing (y⟨t−1⟩ is the true previous token) and the mean cross-entropy
over every target token, the closing <EOS> included. Generation draws y⟨t⟩ from ŷ⟨t⟩ with the
language model's controls (:class:`mlxrnn.models.decoding.SamplingOptions`: temperature, top-k, top-p,
greedy; <PAD> is never drawn, <UNK> only with ``allow_unk``), feeds it back, and stops a
sequence at <EOS> (not returned) or after ``max_length`` tokens.

A batch is a dict: ``conditions`` (B,) class ids or (B, F) floats, ``targets`` (B, T) ids
ending with <EOS> (see :func:`generator_batch`), optional ``lengths`` (B,) or ``mask`` (B, T).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.blocks import InputEncoder, batch_mask
from mlxrnn.models.decoding import SamplingOptions, draw_tokens, next_token_distribution
from mlxrnn.models.spec import (
    RecurrentSpec,
    config_from_dict,
    config_from_settings,
    takes_settings,
    with_recurrent_spec,
)
from mlxrnn.models.task import Sums, TaskModel, class_metric_sums
from mlxrnn.nn.layers import Embedding, Linear, check_token_ids
from mlxrnn.nn.losses import softmax_cross_entropy
from mlxrnn.nn.module import Module, check_positive_int
from mlxrnn.nn.sequences import EOS_ID, PAD_ID, UNK_ID, pad_sequences

CONDITION_KINDS = ("class", "vector")


@with_recurrent_spec()
@dataclass
class SequenceGeneratorConfig:
    """Everything needed to rebuild a :class:`SequenceGenerator` (flat recurrent names work too)."""

    condition_kind: str = "class"  #: "class" (an id in [0, condition_size)) or "vector" (condition_size floats)
    condition_size: int = 4  #: K classes, or F features
    vocab_size: int = 32  #: V output tokens (with <PAD>, <UNK>, <EOS> at their ids)
    embed_size: int = 32  #: E, width of the condition input and the token embeddings
    #: unidirectional: each output is fed back as the next input
    recurrent: RecurrentSpec = field(default_factory=lambda: RecurrentSpec(hidden_size=64))
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    unk_id: int | None = UNK_ID  #: None if the vocabulary has no <UNK>
    seed: int = 0

    def validate(self) -> SequenceGeneratorConfig:
        """Check every field (ConfigError naming it); returns the config."""
        if self.condition_kind not in CONDITION_KINDS:
            raise ConfigError(f"condition_kind must be 'class' or 'vector', got {self.condition_kind!r}")
        for label in ("condition_size", "vocab_size", "embed_size"):
            check_positive_int(label, getattr(self, label))
        if self.recurrent.validate().bidirectional:
            raise ConfigError("a generator feeds each output back as the next input, so its recurrent stack "
                              "cannot be bidirectional")
        for label in ("eos_id", "pad_id", "unk_id"):
            value = getattr(self, label)
            if value is None and label == "unk_id":
                continue
            check_positive_int(label, value, minimum=0)
            if value >= self.vocab_size:
                raise ConfigError(f"{label}={value} is outside the vocabulary of {self.vocab_size}")
        if self.pad_id == self.eos_id:
            raise ConfigError("pad_id and eos_id must differ (<PAD> is never drawn, <EOS> ends a sequence)")
        return self

    def to_dict(self) -> dict:
        """The config as JSON-ready fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceGeneratorConfig:
        """From :meth:`to_dict`'s form (recurrent settings nested) or the older flat one; validated."""
        return config_from_dict(cls, data)


def generator_batch(conditions: Any, sequences: Sequence[Sequence[int]], eos_id: int = EOS_ID,
                    pad_id: int = PAD_ID) -> dict:
    """Pad sequences into a :class:`SequenceGenerator` batch, appending <EOS> to each.

    Returns {"conditions": conditions as given, "targets" (B, T), "lengths" (B,)}.
    """
    targets, lengths = pad_sequences([list(s) + [eos_id] for s in sequences], pad_id=pad_id)
    return {"conditions": np.asarray(conditions), "targets": targets, "lengths": lengths}


@takes_settings
class SequenceGenerator(TaskModel, Module):
    """One-to-many generator; see the module docstring for the equations and batch format.

    Parameters: ``condition.weight`` (K, E) for class conditions or ``condition.W`` (F, E) and
    ``condition.b`` for vectors; ``embedding.weight`` (V, E); ``rnn.*``; ``head.W`` (H, V), ``head.b``.
    Logits are (B, T, V); ``model(conditions, targets)`` returns them (teacher-forced).
    Build it from a config or its settings as keywords.
    """

    checkpoint_kind = "generator"
    config_class = SequenceGeneratorConfig
    pair_keys = ("conditions", "targets")

    def __init__(self, config: SequenceGeneratorConfig | None = None, backend: Any = None, dtype: str = "float32",
                 **settings: Any):
        super().__init__(backend, dtype)
        self.config = c = config_from_settings(self.config_class, config, settings).validate()
        if c.condition_kind == "class":
            condition = Embedding(c.condition_size, c.embed_size, seed=c.seed, backend=self.xp)
        else:
            condition = Linear(c.condition_size, c.embed_size, seed=c.seed, backend=self.xp)
        self.add_child("condition", condition)
        self.add_child("embedding", InputEncoder("embedding", c.vocab_size, c.embed_size, seed=c.seed + 1,
                                                 backend=self.xp))
        self.add_child("rnn", c.recurrent.build(c.embed_size, seed=c.seed + 2, backend=self.xp))
        self.add_child("head", Linear(c.hidden_size, c.vocab_size, seed=c.seed + 3, backend=self.xp))

    def extra_repr(self) -> str:
        c = self.config
        return f"condition_kind={c.condition_kind!r}, condition_size={c.condition_size}, vocab_size={c.vocab_size}"

    # --- fit / evaluate / predict ------------------------------------------------------------------
    def time_keys(self) -> dict[str, tuple[str, ...]]:
        return {"lengths": ("targets", "mask")}

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        """Teacher-forced loss and next-token accuracy over the valid target tokens (the <EOS> included)."""
        targets, weights = self._batch_targets(batch)
        logits, _ = self.forward(batch["conditions"], targets)
        return class_metric_sums(self.xp, logits, targets, weights)

    def predict(self, conditions: Any, max_length: int = 50, options: SamplingOptions | None = None,
                seed: int | None = None) -> list[list[int]]:
        """:meth:`generate` (``conditions`` may also be a batch dict holding them)."""
        if isinstance(conditions, Mapping):
            conditions = conditions["conditions"]
        return self.generate(conditions, max_length=max_length, options=options, seed=seed)

    # --- forward ------------------------------------------------------------------------------
    def _condition_input(self, conditions: Any) -> tuple[Any, Any]:
        """conditions (B,) ids or (B, F) floats → (x⟨1⟩ (B, E), what the backward needs)."""
        c, xp = self.config, self.xp
        if c.condition_kind == "class":
            ids = np.asarray(conditions) if isinstance(conditions, (np.ndarray, list, tuple)) else xp.to_numpy(
                conditions)
            if ids.ndim != 1:
                raise ShapeError(f"class conditions must have shape (batch,); got {ids.shape}")
            ids = check_token_ids(xp, ids, c.condition_size)
            return self.condition.forward(ids)
        v = xp.from_numpy(np.asarray(conditions)) if isinstance(conditions, (np.ndarray, list, tuple)) else conditions
        if len(v.shape) != 2 or int(v.shape[1]) != c.condition_size:
            raise ShapeError(f"vector conditions must have shape (batch, {c.condition_size}); got {tuple(v.shape)}")
        return self.condition.forward(v)

    def forward(self, conditions: Any, targets: Any, training: bool = False, rng=None) -> tuple[Any, dict]:
        """Teacher-forced pass: conditions and targets (B, T) → (logits (B, T, V), cache)."""
        xp = self.xp
        first, condition_cache = self._condition_input(conditions)
        targets = self._targets(targets, int(first.shape[0]))
        T = targets.shape[1]
        x, encoded = first[:, None, :], None
        if T > 1:  # looked up here (not TokenInputs): the condition step goes in front of the tokens
            tokens, encoded = self.embedding.forward(targets[:, :-1].astype(np.int32), as_tokens=False)  # (B, T−1, E)
            x = xp.concat([x, tokens], axis=1)
        hidden, _, rnn_cache = self.rnn.forward(x, training=training, rng=rng)
        logits, _ = self.head.forward(hidden)
        return logits, {"condition": condition_cache, "encoded": encoded, "rnn": rnn_cache, "hidden": hidden}

    def _targets(self, targets: Any, batch_size: int | None = None) -> np.ndarray:
        """Validated target ids (B, T) as NumPy; ``batch_size``, when given, must equal B."""
        targets = np.asarray(targets) if isinstance(targets, (np.ndarray, list, tuple)) else self.xp.to_numpy(targets)
        shape_ok = targets.ndim == 2 and targets.shape[1] >= 1 and batch_size in (None, targets.shape[0])
        if not shape_ok or targets.dtype.kind not in "iu":
            expected = "(batch, time)" if batch_size is None else f"({batch_size}, time), one row per condition"
            raise ShapeError(f"targets must be integer token ids of shape {expected}; got {targets.dtype} "
                             f"{targets.shape}")
        return targets

    def loss(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, Any, dict]:
        """(mean cross-entropy over valid tokens, d_logits, cache)."""
        targets, weights = self._batch_targets(batch)
        logits, cache = self.forward(batch["conditions"], targets, training=training, rng=rng)
        loss, d_logits = softmax_cross_entropy(self.xp, logits, targets, weights=weights)
        return loss, d_logits, cache

    def _batch_targets(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch's targets (B, T), <PAD> at padded steps, and their weights (B, T) or None."""
        targets = self._targets(batch["targets"])
        weights = batch_mask(batch, *targets.shape)
        if weights is not None:  # padded steps may hold anything (e.g. −1); they are neither fed nor counted
            targets = np.where(weights > 0, targets, self.config.pad_id)
        return targets, weights

    # --- backward -----------------------------------------------------------------------------
    def backward(self, d_logits: Any, cache: dict) -> tuple[dict, dict]:
        """Gradients of every parameter, plus {"conditions": dL/dv} for vector conditions."""
        d_hidden, head_grads = self.head.backward(d_logits, cache["hidden"])
        d_x, _, rnn_grads = self.rnn.backward(d_hidden, None, cache["rnn"])
        grads = {f"head.{k}": v for k, v in head_grads.items()}
        grads.update({f"rnn.{k}": v for k, v in rnn_grads.items()})
        d_tokens = d_x[:, 1:]
        if cache["encoded"] is not None:
            grads["embedding.weight"] = self.embedding.backward(d_tokens, cache["encoded"])[0]["weight"]
        else:  # a one-step target feeds no token back
            grads["embedding.weight"] = self.xp.zeros_like(self.embedding.params["weight"])
        extras = {}
        if self.config.condition_kind == "class":
            grads["condition.weight"] = self.condition.backward(d_x[:, 0], cache["condition"])["weight"]
        else:
            d_vector, condition_grads = self.condition.backward(d_x[:, 0], cache["condition"])
            grads.update({f"condition.{k}": v for k, v in condition_grads.items()})
            extras["conditions"] = d_vector
        return {name: grads[name] for name in self.parameters()}, extras

    def loss_and_grads(self, batch: Mapping[str, Any], training: bool = True, rng=None) -> tuple[Any, dict, dict]:
        """The trainer's entry point: (loss, grads keyed like parameters(), aux)."""
        loss, d_logits, cache = self.loss(batch, training=training, rng=rng)
        grads, extras = self.backward(d_logits, cache)
        return loss, grads, extras

    # --- generation -----------------------------------------------------------------------------
    def generate(self, conditions: Any, max_length: int = 50, options: SamplingOptions | None = None,
                 seed: int | None = None) -> list[list[int]]:
        """One sequence per condition (B,) or (B, F), as token ids without the closing <EOS>.

        ``options`` are the LM's sampling controls (default: temperature 1, no truncation);
        ``seed`` makes the draws reproducible. Repeat a condition to draw several sequences.
        """
        options = (options or SamplingOptions()).validate()
        max_length = check_positive_int("max_length", max_length)
        c, xp = self.config, self.xp
        rng = np.random.default_rng(seed)
        banned = [c.pad_id] + ([c.unk_id] if c.unk_id is not None and not options.allow_unk else [])
        x = self._condition_input(conditions)[0][:, None, :]  # (B, 1, E)
        B = int(x.shape[0])
        state, generated, done = None, [[] for _ in range(B)], np.zeros(B, dtype=bool)
        for _ in range(max_length):
            hidden, state, _ = self.rnn.forward(x, initial_state=state)
            logits, _ = self.head.forward(hidden[:, 0])
            probs = next_token_distribution(xp.to_numpy(logits).astype(np.float64), options, banned)
            tokens = draw_tokens(probs, rng, options.greedy).astype(np.int32)
            for i in np.flatnonzero(~done):
                if tokens[i] == c.eos_id:
                    done[i] = True
                else:
                    generated[i].append(int(tokens[i]))
            if done.all():
                break
            x, _ = self.embedding.forward(tokens[:, None], as_tokens=False)
        return generated

    def log_prob(self, batch: Mapping[str, Any]) -> np.ndarray:
        """log p(sequence | condition) per row, (B,) float64, over valid tokens (the <EOS> included)."""
        targets, weights = self._batch_targets(batch)
        logits, _ = self.forward(batch["conditions"], targets)
        z = self.xp.to_numpy(logits).astype(np.float64)
        z = z - z.max(axis=-1, keepdims=True)
        log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(log_probs, targets[..., None].astype(np.intp), axis=-1)[..., 0]
        return (picked if weights is None else picked * weights).sum(axis=1)
