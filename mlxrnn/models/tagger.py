"""Many-to-many, same length: :class:`SequenceTagger` (the notes' named-entity recognition).

    "Harry Potter and Hermione Granger invented a new spell"  →  1 1 0 1 1 0 0 0 0

One output per input step:  ŷ⟨t⟩ = σ(W_y y⟨t⟩ + b_y)  (two tags, one logit) or
softmax(W_y y⟨t⟩ + b_y) (K tags), where y⟨t⟩ is the top recurrent layer's output at step t.
Bidirectional by default, y⟨t⟩ = [h→⟨t⟩ ; h←⟨t⟩]: in "Teddy Roosevelt was a great president"
the evidence that "Teddy" is a name comes *after* it, which only the backward direction sees.

This is :class:`mlxrnn.SequenceModel` with output "sequence" — the same parameters, forward,
BPTT and gradient checks — configured for tagging. The tagger adds only what tagging needs:
targets given as tag ids (B, T) for both heads, padded positions ignored (``lengths`` or
``mask``; their tags may hold any value, e.g. −1), and :meth:`SequenceTagger.predict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.blocks import INPUT_KINDS, batch_mask
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.models.spec import (
    RecurrentSpec,
    config_from_dict,
    config_from_settings,
    takes_settings,
    with_recurrent_spec,
)
from mlxrnn.models.task import Sums
from mlxrnn.nn.module import check_positive_int

HEADS = ("auto", "sigmoid", "softmax")


@with_recurrent_spec()
@dataclass
class SequenceTaggerConfig:
    """A tagger's settings; :meth:`sequence_model_config` is the SequenceModel it builds."""

    input_kind: str = "embedding"  #: "embedding", "one_hot" (ids) or "dense" (float features)
    input_size: int = 1000  #: vocabulary size for ids, feature count for dense inputs
    embed_size: int = 64
    #: bidirectional by default: a tag may depend on the words after it
    recurrent: RecurrentSpec = field(default_factory=lambda: RecurrentSpec(hidden_size=64, bidirectional=True))
    num_tags: int = 2
    head: str = "auto"  #: "sigmoid" (2 tags, one logit per step), "softmax", or "auto" (sigmoid iff 2 tags)
    seed: int = 0

    def validate(self) -> SequenceTaggerConfig:
        """Check every field (ConfigError naming it); returns the config."""
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        check_positive_int("num_tags", self.num_tags, minimum=2)
        if self.head == "sigmoid" and self.num_tags != 2:
            raise ConfigError(f"a sigmoid head tags two classes (num_tags=2); use head='softmax' for {self.num_tags}")
        self.sequence_model_config()  # validates the remaining fields
        return self

    @property
    def head_kind(self) -> str:
        """The resolved head: "sigmoid" or "softmax"."""
        if self.head == "auto":
            return "sigmoid" if self.num_tags == 2 else "softmax"
        return self.head

    def sequence_model_config(self) -> SequenceModelConfig:
        """The equivalent SequenceModelConfig (output "sequence")."""
        sigmoid = self.head_kind == "sigmoid"
        return SequenceModelConfig(
            input_kind=self.input_kind, input_size=self.input_size, embed_size=self.embed_size,
            recurrent=self.recurrent, output_size=1 if sigmoid else self.num_tags, output="sequence",
            loss="binary_cross_entropy" if sigmoid else "cross_entropy", seed=self.seed,
        ).validate()

    def to_dict(self) -> dict:
        """The config as JSON-ready fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceTaggerConfig:
        """From :meth:`to_dict`'s form (recurrent settings nested) or the older flat one; validated."""
        return config_from_dict(cls, data)


@takes_settings
class SequenceTagger(SequenceModel):
    """One tag per step. A batch: ``inputs`` (B, T) ids or (B, T, D) floats, ``targets`` (B, T)
    tag ids in [0, num_tags) on valid steps, optional ``lengths`` (B,) or ``mask`` (B, T).

    Logits are (B, T, 1) for the sigmoid head and (B, T, K) for softmax; the loss is the mean
    over valid steps. ``self.config`` is the underlying SequenceModelConfig and
    ``self.tagger_config`` the tagger's own.
    """

    checkpoint_kind = "tagger"
    config_class = SequenceTaggerConfig

    def __init__(self, config: SequenceTaggerConfig | None = None, backend: Any = None, dtype: str = "float32",
                 **settings: Any):
        self.tagger_config = config_from_settings(self.config_class, config, settings).validate()
        super().__init__(self.tagger_config.sequence_model_config(), backend=backend, dtype=dtype)

    def saved_config(self) -> SequenceTaggerConfig:
        return self.tagger_config

    def extra_repr(self) -> str:
        return f"num_tags={self.tagger_config.num_tags}, head={self.tagger_config.head_kind!r}"

    def loss(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, Any, dict, Any]:
        """Tag ids → the SequenceModel loss (padded positions weigh 0): (loss, d_logits, cache, final_state)."""
        return super().loss(self._tag_batch(batch), training=training, rng=rng)

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        """Loss and tag accuracy over the valid steps of ``batch``."""
        return super().metric_sums(self._tag_batch(batch))

    def _tag_batch(self, batch: Mapping[str, Any]) -> dict:
        """``batch`` with its tag ids checked and turned into the SequenceModel's targets."""
        shape = tuple(batch["inputs"].shape) if hasattr(batch["inputs"], "shape") else np.shape(batch["inputs"])
        if len(shape) < 2:
            raise ShapeError(f"inputs must be (batch, time) ids or (batch, time, features); got shape {shape}")
        B, T = int(shape[0]), int(shape[1])
        tags = batch["targets"]
        tags = np.asarray(tags) if isinstance(tags, (np.ndarray, list, tuple)) else self.xp.to_numpy(tags)
        if tags.shape != (B, T):
            raise ShapeError(f"targets must be tag ids of shape (batch, time) = {(B, T)}; got {tags.shape}")
        if tags.dtype.kind not in "iu":
            raise ShapeError(f"targets must be integer tag ids; got dtype {tags.dtype}")
        valid = batch_mask(batch, B, T)
        valid = np.ones((B, T)) if valid is None else valid
        counted = tags[valid > 0]
        if counted.size and (counted.min() < 0 or counted.max() >= self.tagger_config.num_tags):
            raise ConfigError(f"tags on valid steps must lie in [0, {self.tagger_config.num_tags})")
        tags = np.where(valid > 0, tags, 0)  # padded steps: any in-range value, their weight is 0
        targets = tags.astype(np.float64)[:, :, None] if self.tagger_config.head_kind == "sigmoid" else tags
        return {**batch, "targets": targets}

    def predict_proba(self, batch: Any) -> np.ndarray:
        """Tag probabilities (B, T, K) as float64 NumPy (sigmoid head: [1 − σ(z), σ(z)] per step)."""
        batch = batch if isinstance(batch, Mapping) else {"inputs": batch}
        logits, _, _ = self.forward(batch["inputs"], lengths=batch.get("lengths"), mask=batch.get("mask"))
        z = self.xp.to_numpy(logits).astype(np.float64)
        if self.tagger_config.head_kind == "sigmoid":
            p = 0.5 * (1.0 + np.tanh(0.5 * z[..., 0]))
            return np.stack([1.0 - p, p], axis=-1)
        z = z - z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=-1, keepdims=True)

    def predict(self, batch: Any) -> np.ndarray:
        """The most probable tag per step, (B, T) int64, with −1 at padded steps."""
        batch = batch if isinstance(batch, Mapping) else {"inputs": batch}
        tags = self.predict_proba(batch).argmax(axis=-1)
        valid = batch_mask(batch, tags.shape[0], tags.shape[1])
        return tags if valid is None else np.where(valid > 0, tags, -1)
