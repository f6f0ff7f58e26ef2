"""Many-to-one: :class:`SequenceClassifier` (the notes' sentiment classification).

    x⟨1⟩ … x⟨T_b⟩ → embedding → RNN/GRU/LSTM stack → pooling → e (B, E) → z = e W_y + b_y
    ŷ = σ(z)               binary labels (one logit, "sigmoid" head)
    ŷ = softmax(z)         C ≥ 2 classes, e.g. ratings 1–5 ("softmax" head)

The sentence embedding e pools the top layer over each sequence's valid steps t < T_b
(padded batches: right padding, ``lengths`` (B,) or ``mask`` (B, T)); with outputs y⟨t⟩ (B, H_out):

    "last": e = [h→⟨T_b⟩ ; h←⟨1⟩]            the forward direction's state after the last valid
            step, beside the backward direction's after reading back to the first (E = D·H)
    "mean": e = (1 / T_b) Σ_{t<T_b} y⟨t⟩       (E = H_out)
    "max":  e_j = max_{t<T_b} y⟨t⟩_j          (E = H_out; the gradient goes to the arg-max
            step of each feature, shared equally by exact ties — a subgradient)

H_out is 2H for a bidirectional "concat" stack, else H. Losses: binary cross-entropy on the
logit (sigmoid head) or softmax cross-entropy (softmax head), averaged over the batch.

A batch is a dict: ``inputs`` (B, T) ids or (B, T, D) floats, ``targets`` (B,) class ids
(0/1, or soft labels in [0, 1], for the sigmoid head), optional ``lengths`` (B,) or ``mask``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.blocks import INPUT_KINDS, InputEncoder, batch_mask, top_final_hidden, top_final_hidden_backward
from mlxrnn.models.spec import (
    RecurrentSpec,
    config_from_dict,
    config_from_settings,
    takes_settings,
    with_recurrent_spec,
)
from mlxrnn.models.task import Sums, TaskModel, binary_metric_sums, class_metric_sums
from mlxrnn.nn.layers import Linear
from mlxrnn.nn.losses import binary_cross_entropy_with_logits, softmax_cross_entropy
from mlxrnn.nn.module import Module, check_positive_int

POOLINGS = ("last", "mean", "max")
HEADS = ("auto", "sigmoid", "softmax")


@with_recurrent_spec()
@dataclass
class SequenceClassifierConfig:
    """Everything needed to rebuild a :class:`SequenceClassifier` (flat recurrent names work too,
    see :class:`~mlxrnn.models.sequence_model.SequenceModelConfig`)."""

    input_kind: str = "embedding"  #: "embedding", "one_hot" (ids) or "dense" (float features)
    input_size: int = 1000  #: vocabulary size for ids, feature count for dense inputs
    embed_size: int = 64  #: embedding width (input_kind "embedding" only)
    #: the stack; its ``merge`` combines the directions' outputs for "mean"/"max" pooling
    recurrent: RecurrentSpec = field(default_factory=lambda: RecurrentSpec(hidden_size=64))
    pooling: str = "last"  #: "last", "mean" or "max" (see the module docstring)
    num_classes: int = 2
    head: str = "auto"  #: "sigmoid" (binary, one logit), "softmax", or "auto" (sigmoid iff 2 classes)
    seed: int = 0

    def validate(self) -> SequenceClassifierConfig:
        """Check every field (ConfigError naming it); returns the config."""
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        for label in ("input_size", "embed_size"):
            check_positive_int(label, getattr(self, label))
        self.recurrent.validate()
        check_positive_int("num_classes", self.num_classes, minimum=2)
        if self.head == "sigmoid" and self.num_classes != 2:
            raise ConfigError(f"a sigmoid head is binary (num_classes=2); use head='softmax' for {self.num_classes}")
        return self

    @property
    def head_kind(self) -> str:
        """The resolved head: "sigmoid" or "softmax"."""
        if self.head == "auto":
            return "sigmoid" if self.num_classes == 2 else "softmax"
        return self.head

    def to_dict(self) -> dict:
        """The config as JSON-ready fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceClassifierConfig:
        """From :meth:`to_dict`'s form (recurrent settings nested) or the older flat one; validated."""
        return config_from_dict(cls, data)


def _as_batch(batch: Any) -> Mapping[str, Any]:
    return batch if isinstance(batch, Mapping) else {"inputs": batch}


@takes_settings
class SequenceClassifier(TaskModel, Module):
    """Many-to-one: a sequence in, one label out (see the module docstring for the equations).

    Shapes: inputs (B, T) ids or (B, T, D) → embeddings (B, E) → logits (B, 1) for the sigmoid
    head, (B, C) for softmax; ``model(inputs, lengths=...)`` returns the logits. Parameters:
    ``embedding.weight`` (embedding input only), ``rnn.*``, ``head.W`` (E, O), ``head.b`` (O,).
    Build it from a config or its settings as keywords: ``SequenceClassifier(input_size=43)``.
    """

    checkpoint_kind = "classifier"
    config_class = SequenceClassifierConfig

    def __init__(self, config: SequenceClassifierConfig | None = None, backend: Any = None, dtype: str = "float32",
                 **settings: Any):
        super().__init__(backend, dtype)
        self.config = c = config_from_settings(self.config_class, config, settings).validate()
        self.add_child("embedding", InputEncoder(c.input_kind, c.input_size, c.embed_size, seed=c.seed,
                                                 backend=self.xp))
        self.add_child("rnn", c.recurrent.build(self.embedding.output_size, seed=c.seed + 1, backend=self.xp))
        self.add_child("head", Linear(self.embedding_size, self.num_outputs, seed=c.seed + 2, backend=self.xp))

    def extra_repr(self) -> str:
        c = self.config
        return f"pooling={c.pooling!r}, num_classes={c.num_classes}, head={c.head_kind!r}"

    @property
    def embedding_size(self) -> int:
        """E, the width of a sentence embedding."""
        spec = self.config.recurrent
        return spec.final_size if self.config.pooling == "last" else spec.output_size

    @property
    def num_outputs(self) -> int:
        """Logits per sequence: 1 for a sigmoid head, else ``num_classes``."""
        return 1 if self.config.head_kind == "sigmoid" else self.config.num_classes

    # --- forward ------------------------------------------------------------------------------
    def forward(self, inputs: Any, lengths: Any = None, mask: Any = None, training: bool = False,
                rng: np.random.Generator | None = None) -> tuple[Any, dict]:
        """inputs (B, T) or (B, T, D) → (logits (B, O), cache). Every sequence needs ≥ 1 valid step."""
        x, encoded = self.embedding.forward(inputs)
        mask_np = batch_mask({"lengths": lengths, "mask": mask}, encoded.batch_size, encoded.time_steps,
                             require_nonempty=True)
        hidden, final_state, rnn_cache = self.rnn.forward(x, mask=mask_np, training=training, rng=rng)
        features, pool_cache = self._pool(hidden, final_state, mask_np)
        logits, _ = self.head.forward(features)
        cache = {"encoded": encoded, "rnn": rnn_cache, "features": features, "final_state": final_state,
                 "pool": pool_cache}
        return logits, cache

    def _pool(self, hidden: Any, final_state: Any, mask_np: np.ndarray | None) -> tuple[Any, dict]:
        """hidden (B, T, H_out) → e (B, E) and what the backward needs."""
        xp, pooling = self.xp, self.config.pooling
        if pooling == "last":
            return top_final_hidden(xp, self.rnn, final_state), {}
        mask = None if mask_np is None else xp.from_numpy(mask_np[:, :, None])  # (B, T, 1)
        if pooling == "mean":
            if mask is None:
                mask = xp.ones((1, int(hidden.shape[1]), 1))
            scale = mask / xp.sum(mask, axis=1, keepdims=True)  # (B, T, 1): 1/T_b on valid steps, else 0
            return xp.sum(hidden * scale, axis=1), {"scale": scale}
        masked = hidden if mask is None else xp.where(mask > 0, hidden, float("-inf"))
        pooled = xp.max(masked, axis=1)  # (B, H_out)
        hits = xp.astype(masked == pooled[:, None, :], hidden.dtype)  # 1 at each feature's arg-max step(s)
        return pooled, {"route": hits / xp.sum(hits, axis=1, keepdims=True)}

    def _pool_backward(self, d_features: Any, cache: dict) -> tuple[Any, Any]:
        """d e (B, E) → (d hidden (B, T, H_out) or None, d final_state or None)."""
        xp, pooling = self.xp, self.config.pooling
        if pooling == "last":
            return None, top_final_hidden_backward(xp, self.rnn, d_features, cache["final_state"])
        weights = cache["pool"]["scale"] if pooling == "mean" else cache["pool"]["route"]
        return weights * d_features[:, None, :], None

    def loss(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, Any, dict]:
        """Forward and loss: (mean loss, d_logits, cache)."""
        logits, cache = self.forward(batch["inputs"], lengths=batch.get("lengths"), mask=batch.get("mask"),
                                     training=training, rng=rng)
        targets = self._head_targets(batch["targets"], int(logits.shape[0]))
        if self.config.head_kind == "sigmoid":
            loss, d_logits = binary_cross_entropy_with_logits(self.xp, logits, targets)
        else:
            loss, d_logits = softmax_cross_entropy(self.xp, logits, targets)
        return loss, d_logits, cache

    def _head_targets(self, targets: Any, batch_size: int) -> np.ndarray:
        """Labels (B,) checked, as the head's loss takes them: (B, 1) floats for sigmoid, (B,) ids for softmax."""
        B = batch_size
        targets = np.asarray(targets) if isinstance(targets, (np.ndarray, list, tuple)) else self.xp.to_numpy(targets)
        if targets.shape != (B,):
            raise ShapeError(f"targets must have shape (batch,) = ({B},), one label per sequence; got {targets.shape}")
        if self.config.head_kind == "sigmoid":
            if targets.dtype.kind not in "iufb" or np.any((targets < 0) | (targets > 1)):
                raise ConfigError("targets of a sigmoid (binary) head must lie in [0, 1]")
            return targets.astype(np.float64)[:, None]
        return targets

    # --- backward -----------------------------------------------------------------------------
    def backward(self, d_logits: Any, cache: dict) -> tuple[dict, dict]:
        """Gradients of every parameter, plus {"inputs": dL/dx} for dense inputs."""
        d_features, head_grads = self.head.backward(d_logits, cache["features"])
        d_hidden, d_final = self._pool_backward(d_features, cache)
        d_x, _, rnn_grads = self.rnn.backward(d_hidden, d_final, cache["rnn"])
        embed_grads, d_inputs = self.embedding.backward(d_x, cache["encoded"])
        grads = {f"head.{k}": v for k, v in head_grads.items()}
        grads.update({f"rnn.{k}": v for k, v in rnn_grads.items()})
        grads.update({f"embedding.{k}": v for k, v in embed_grads.items()})
        extras = {} if d_inputs is None else {"inputs": d_inputs}
        return {name: grads[name] for name in self.parameters()}, extras

    def loss_and_grads(self, batch: Mapping[str, Any], training: bool = True, rng=None) -> tuple[Any, dict, dict]:
        """The trainer's entry point: (loss, grads keyed like parameters(), aux)."""
        loss, d_logits, cache = self.loss(batch, training=training, rng=rng)
        grads, extras = self.backward(d_logits, cache)
        return loss, grads, extras

    # --- fit / evaluate ---------------------------------------------------------------------------
    def time_keys(self) -> dict[str, tuple[str, ...]]:
        return {"lengths": ("inputs", "mask")}

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        logits, _ = self.forward(batch["inputs"], lengths=batch.get("lengths"), mask=batch.get("mask"))
        targets = self._head_targets(batch["targets"], int(logits.shape[0]))
        sums = binary_metric_sums if self.config.head_kind == "sigmoid" else class_metric_sums
        return sums(self.xp, logits, targets)

    # --- inference (NumPy results) ----------------------------------------------------------------
    def embed(self, batch: Any) -> np.ndarray:
        """Sentence embeddings e (B, E) as float64 NumPy; ``batch`` is a dict or the inputs alone."""
        batch = _as_batch(batch)
        _, cache = self.forward(batch["inputs"], lengths=batch.get("lengths"), mask=batch.get("mask"))
        return self.xp.to_numpy(cache["features"]).astype(np.float64)

    def predict_proba(self, batch: Any) -> np.ndarray:
        """Class probabilities (B, C) as float64 NumPy (for the sigmoid head: [1 − σ(z), σ(z)])."""
        batch = _as_batch(batch)
        logits, _ = self.forward(batch["inputs"], lengths=batch.get("lengths"), mask=batch.get("mask"))
        z = self.xp.to_numpy(logits).astype(np.float64)
        if self.config.head_kind == "sigmoid":
            p = 0.5 * (1.0 + np.tanh(0.5 * z[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, batch: Any) -> np.ndarray:
        """The most probable class per sequence, (B,) int64."""
        return self.predict_proba(batch).argmax(axis=1)
