"""Models composed of layers: input encoding → recurrent stack → linear head → loss.

:class:`SequenceModel` covers the notes' many-to-many (one output per step: tagging, language
modelling) and many-to-one (one output per sequence from the final hidden state:
classification) shapes with any cell, depth and direction, and any of the three losses. It is
what :class:`mlxrnn.training.trainer.Trainer` trains: anything with ``parameters``, ``load_parameters``
and ``loss_and_grads(batch, training)`` can be trained the same way.

A batch is a dict:
    inputs   (B, T) int ids (input "embedding"/"one_hot") or (B, T, D) floats (input "dense")
    targets  (B, T) ids / (B, T, F) floats for output "sequence"; (B,) ids / (B, F) for "last"
    lengths  optional (B,) valid lengths (right padding), or mask (B, T)
    initial_state  optional recurrent state (e.g. carried over from the previous window)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.models.blocks import INPUT_KINDS, InputEncoder, top_final_hidden, top_final_hidden_backward
from mlxrnn.models.spec import (
    RecurrentSpec,
    config_from_dict,
    config_from_settings,
    takes_settings,
    with_recurrent_spec,
)
from mlxrnn.models.task import METRIC_SUMS, Sums, TaskModel
from mlxrnn.nn.dense import check_init_range
from mlxrnn.nn.dropout import dropout_mask
from mlxrnn.nn.layers import Linear, lengths_to_mask
from mlxrnn.nn.losses import get_loss
from mlxrnn.nn.module import Module, check_positive_int, check_probability

OUTPUT_KINDS = ("sequence", "last")
#: float32 weights, gradients and two optimizer moments (Adam): what training needs at least
_TRAINING_BYTES_PER_PARAMETER = 16


def _physical_memory() -> int:
    """Bytes of RAM on this machine (1 TiB where the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 2**40


@with_recurrent_spec()
@dataclass
class SequenceModelConfig:
    """Everything needed to rebuild a :class:`SequenceModel` (stored in checkpoints).

    The recurrent settings are one :class:`~mlxrnn.models.spec.RecurrentSpec`; the flat names
    work too: ``SequenceModelConfig(cell="gru", hidden_size=64)``, ``config.hidden_size``.
    """

    input_kind: str = "embedding"  #: "embedding", "one_hot" (ids) or "dense" (float features)
    input_size: int = 65  #: vocabulary size for ids, feature count for dense inputs
    embed_size: int = 64  #: embedding width (input_kind "embedding" only)
    recurrent: RecurrentSpec = field(default_factory=lambda: RecurrentSpec(hidden_size=128))
    output_size: int = 65  #: classes (cross-entropy), logits (binary) or features (mse)
    output: str = "sequence"  #: "sequence" (many-to-many) or "last" (many-to-one)
    loss: str = "cross_entropy"
    tie_weights: bool = False  #: share the embedding with the output layer (needs embed = hidden)
    seed: int = 0
    embed_dropout: float = 0.0  #: dropout on the stack's input (the embedding output), training only
    output_dropout: float = 0.0  #: dropout on the features the head reads, training only
    #: the embedding table's initial values: None N(0, 1) (PyTorch's nn.Embedding), r U(−r, r), also
    #: as the tied output layer (:mod:`mlxrnn.lm.initialisation` for word models; older configs: None)
    embed_init_range: float | None = None

    def validate(self) -> SequenceModelConfig:
        """Check every field (ConfigError naming it); returns the config."""
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {self.output!r}")
        for label in ("input_size", "embed_size", "output_size"):
            check_positive_int(label, getattr(self, label))
        check_positive_int("seed", self.seed, minimum=0)
        if not isinstance(self.tie_weights, (bool, np.bool_)):
            raise ConfigError(f"tie_weights must be True or False, got {self.tie_weights!r}")
        check_probability("embed_dropout", self.embed_dropout)
        check_probability("output_dropout", self.output_dropout)
        check_init_range(self.embed_init_range, "embed_init_range")
        self.recurrent.validate()
        self._check_size()
        if self.tie_weights:
            if self.input_kind != "embedding" or self.output != "sequence":
                raise ConfigError("tie_weights needs an embedding input and sequence output")
            width = self.recurrent.output_size
            if self.embed_size != width or self.input_size != self.output_size:
                raise ConfigError(
                    f"tie_weights needs embed size = recurrent output size ({self.embed_size} vs {width}) "
                    f"and input vocabulary = output classes ({self.input_size} vs {self.output_size})"
                )
        return self

    def _parameter_count_bound(self) -> int:
        """An upper bound on the parameter count, computed without allocating anything."""
        spec = self.recurrent
        gates, directions, H = spec.num_gates(), spec.num_directions, int(spec.hidden_size)
        width = spec.output_size
        layer_input = int(self.embed_size) if self.input_kind == "embedding" else int(self.input_size)
        total = int(self.input_size) * int(self.embed_size) if self.input_kind == "embedding" else 0
        per_layer = directions * (H * gates * H + 2 * gates * H + 3 * H)  # recurrent weights, biases, peepholes
        total += int(spec.num_layers) * per_layer + directions * gates * H * layer_input  # input weights: layer 0
        total += (int(spec.num_layers) - 1) * directions * gates * H * width  # ... and the layers above it
        head_input = width if self.output == "sequence" else spec.final_size
        return total + head_input * int(self.output_size) + int(self.output_size)

    def _check_size(self) -> None:
        # Refuse before allocating: a typo such as --hidden 5000000 or --layers 100000000 would
        # otherwise fill the memory (and wake the OOM killer) instead of failing.
        count = self._parameter_count_bound()
        needed = count * _TRAINING_BYTES_PER_PARAMETER
        if needed > _physical_memory():
            raise ConfigError(
                f"this model would have about {count:.3g} parameters and need about {needed / 1e9:.3g} GB to train, "
                f"more than this machine's {_physical_memory() / 1e9:.3g} GB; use a smaller hidden_size, "
                "num_layers or embed_size (--hidden, --layers, --embed)"
            )

    def to_dict(self) -> dict:
        """The JSON form: every field, the recurrent settings as a nested "recurrent" object."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceModelConfig:
        """From :meth:`to_dict`'s form or the flat one of older checkpoints; validated."""
        return config_from_dict(cls, data)


@takes_settings
class SequenceModel(TaskModel, Module):
    """input encoding → recurrent stack → linear head, trained with a per-step or final loss.

    Shapes: inputs (B, T) or (B, T, D) → logits (B, T, O) for output "sequence", (B, O) for
    "last" (the top layer's final hidden state; both directions concatenated when bidirectional).
    Parameters: ``embedding.weight`` (input "embedding" only), ``rnn.*``, ``head.W`` (unless the
    weights are tied), ``head.b``. ``model(inputs, ...)`` returns ``(logits, final_state)``.

    Build it from a :class:`SequenceModelConfig` or from the config's settings as keywords:
    ``SequenceModel(input_kind="dense", input_size=1, hidden_size=16, output="last", ...)``.

    Dropout (training only, :mod:`mlxrnn.nn.dropout`): ``embed_dropout`` on the stack's input x,
    ``recurrent.dropout`` between stacked layers, ``output_dropout`` on the features f the head
    reads; each mask per step, or per sequence with ``recurrent.locked_dropout``:

        x̃ = x ⊙ m_x      f̃ = f ⊙ m_f      logits = f̃ W + b      dL/df = (dL/dlogits Wᵀ) ⊙ m_f

    An embedding is then looked up before the stack rather than folded into layer 0 (the mask
    sits between the two); tied weights read f̃ like an untied head does.
    """

    checkpoint_kind = "sequence_model"
    config_class = SequenceModelConfig

    def __init__(self, config: SequenceModelConfig | None = None, backend: Any = None, dtype: str = "float32",
                 **settings: Any):
        super().__init__(backend, dtype)
        self.config = c = config_from_settings(SequenceModelConfig, config, settings).validate()  # also a tagger's
        self.add_child("embedding", InputEncoder(c.input_kind, c.input_size, c.embed_size, seed=c.seed,
                                                 backend=self.xp, init_range=c.embed_init_range))
        self.add_child("rnn", c.recurrent.build(self.embedding.output_size, seed=c.seed + 1, backend=self.xp))
        head_input = self.rnn.output_size if c.output == "sequence" else c.recurrent.final_size
        head = Linear(head_input, c.output_size, seed=c.seed + 2, backend=self.xp)
        if c.tie_weights:
            del head.params["W"]  # the head uses embedding.weight transposed
        self.add_child("head", head)
        self.loss_fn = get_loss(c.loss)
        self._dropout_rng = np.random.default_rng(c.seed + 3)  # when the caller passes no generator

    def _dropout(self, rng: Any, p: float, batch: int, steps: int, features: int) -> Any:
        """The scaled keep-mask of a batch-first activation: (B, T or 1, F) on the backend, or
        (B, F) when ``steps`` is 0 (the final-state features of output "last").

        ``rng`` is a NumPy generator, or a source with ``dropout_mask(xp, shape, p)`` that hands
        out masks drawn before a compiled step (:mod:`mlxrnn.training.compiled`), time-major.
        """
        source = rng if rng is not None else self._dropout_rng
        locked = self.config.recurrent.locked_dropout
        supply = getattr(source, "dropout_mask", None)
        if supply is not None:
            mask = supply(self.xp, (1 if locked else max(steps, 1), batch, features), p)  # (T or 1, B, F)
            return mask[0] if steps == 0 else self.xp.permute_dims(mask, (1, 0, 2))
        mask = dropout_mask(source, p, max(steps, 1), batch, features, locked)  # (T or 1, B, F): time-major
        mask = mask[0] if steps == 0 else np.ascontiguousarray(mask.transpose(1, 0, 2))
        return self.xp.from_numpy(mask)

    def extra_repr(self) -> str:
        c = self.config
        return f"output={c.output!r}, loss={c.loss!r}" + (", tie_weights=True" if c.tie_weights else "")

    def _head_weight(self) -> Any:
        if self.config.tie_weights:
            return self.xp.permute_dims(self.embedding.params["weight"], (1, 0))
        return self.head.params["W"]

    def forward(self, inputs: Any, initial_state: Any = None, lengths: Any = None, mask: Any = None,
                training: bool = False, rng: np.random.Generator | None = None,
                keep_cache: bool = True) -> tuple[Any, Any, dict | None]:
        """Returns (logits, final_state, cache). Logits are (B, T, O) or (B, O); see the class doc.

        ``keep_cache=False``: forward only (evaluation, scoring, prediction), no gradient buffers;
        the same logits and state, and the cache is None."""
        xp, c = self.xp, self.config
        embed_p = c.embed_dropout if training else 0.0
        # Without input dropout an embedding stays TokenInputs: the stack may fold the lookup.
        x, encoded = self.embedding.forward(inputs, as_tokens=not embed_p)
        embed_mask = output_mask = None
        if embed_p:
            embed_mask = self._dropout(rng, embed_p, int(x.shape[0]), int(x.shape[1]), int(x.shape[2]))
            x = x * embed_mask  # (B, T, D)
        hidden, final_state, rnn_cache = self.rnn.forward(
            x, initial_state=initial_state, lengths=lengths, mask=mask, training=training, rng=rng,
            keep_cache=keep_cache,
        )
        if c.output == "sequence":
            features = hidden  # (B, T, H_out)
        else:  # the top layer's final h, directions side by side: (B, D·H)
            features = top_final_hidden(xp, self.rnn, final_state)
        if training and c.output_dropout:
            steps = int(features.shape[1]) if c.output == "sequence" else 0
            output_mask = self._dropout(rng, c.output_dropout, int(features.shape[0]), steps, int(features.shape[-1]))
            features = features * output_mask
        # One (B·T, F) × (F, O) product: NumPy runs a stacked (B, T, F) product as B small GEMMs,
        # several times slower for a large vocabulary (the reshapes are free: features are row-major).
        logits = xp.matmul(xp.reshape(features, (-1, features.shape[-1])), self._head_weight())
        logits = xp.reshape(logits, (*features.shape[:-1], logits.shape[-1]))
        if "b" in self.head.params:
            logits = logits + self.head.params["b"]
        if not keep_cache:
            return logits, final_state, None
        cache = {"encoded": encoded, "rnn": rnn_cache, "features": features, "final_state": final_state,
                 "embed_mask": embed_mask, "output_mask": output_mask}
        return logits, final_state, cache

    def _loss_weights(self, batch: Mapping[str, Any], time_steps: int) -> Any:
        if self.config.output != "sequence":
            return None
        if batch.get("lengths") is not None:
            return lengths_to_mask(batch["lengths"], time_steps)
        return batch.get("mask")

    def loss(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, Any, dict, Any]:
        """Forward and loss: returns (loss, d_logits, cache, final_state)."""
        if not isinstance(batch, Mapping) or "inputs" not in batch or "targets" not in batch:
            got = sorted(map(str, batch)) if isinstance(batch, Mapping) else type(batch).__name__
            raise ConfigError(f"a batch must be a dict with 'inputs' and 'targets' entries; got {got}")
        logits, final_state, cache = self.forward(
            batch["inputs"], initial_state=batch.get("initial_state"), lengths=batch.get("lengths"),
            mask=batch.get("mask"), training=training, rng=rng,
        )
        weights = self._loss_weights(batch, int(logits.shape[1]) if self.config.output == "sequence" else 0)
        loss, d_logits = self.loss_fn(self.xp, logits, batch["targets"], weights=weights)
        return loss, d_logits, cache, final_state

    # --- backward -----------------------------------------------------------------------------
    def backward(self, d_logits: Any, cache: dict) -> tuple[dict, dict]:
        """Gradients of every parameter, plus {"inputs": dx (dense inputs), "initial_state": ...}."""
        xp, c = self.xp, self.config
        features = cache["features"]
        feat2 = xp.reshape(features, (-1, features.shape[-1]))
        d2 = xp.reshape(d_logits, (-1, d_logits.shape[-1]))
        d_weight = xp.matmul(xp.permute_dims(feat2, (1, 0)), d2)  # (F, O)
        grads: dict[str, Any] = {}
        if "b" in self.head.params:
            grads["head.b"] = xp.sum(d2, axis=0)
        if not c.tie_weights:
            grads["head.W"] = d_weight
        d_features = xp.reshape(xp.matmul(d2, xp.permute_dims(self._head_weight(), (1, 0))), features.shape)
        if cache.get("output_mask") is not None:
            d_features = d_features * cache["output_mask"]
        if c.output == "sequence":
            d_hidden, d_final = d_features, None
        else:
            d_hidden, d_final = None, top_final_hidden_backward(xp, self.rnn, d_features, cache["final_state"])
        d_x, d_initial, rnn_grads = self.rnn.backward(d_hidden, d_final, cache["rnn"])
        grads.update({f"rnn.{name}": g for name, g in rnn_grads.items()})
        if cache.get("embed_mask") is not None:
            d_x = d_x * cache["embed_mask"]  # (B, T, D): the lookup was not folded
        embed_grads, d_inputs = self.embedding.backward(d_x, cache["encoded"])
        grads.update({f"embedding.{name}": g for name, g in embed_grads.items()})
        if c.tie_weights:
            grads["embedding.weight"] = grads["embedding.weight"] + xp.permute_dims(d_weight, (1, 0))
        extras = {"initial_state": d_initial}
        if d_inputs is not None:
            extras["inputs"] = d_inputs
        return {name: grads[name] for name in self.parameters()}, extras

    def loss_and_grads(self, batch: Mapping[str, Any], training: bool = True, rng=None) -> tuple[Any, dict, dict]:
        """The trainer's entry point: (loss, grads keyed like parameters(), aux with final_state)."""
        loss, d_logits, cache, final_state = self.loss(batch, training=training, rng=rng)
        grads, extras = self.backward(d_logits, cache)
        return loss, grads, {"final_state": final_state, **extras}

    # --- fit / evaluate / predict -------------------------------------------------------------------
    def time_keys(self) -> dict[str, tuple[str, ...]]:
        padded = ("inputs", "mask") + (("targets",) if self.config.output == "sequence" else ())
        return {"lengths": padded}

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        logits, _, _ = self.forward(batch["inputs"], initial_state=batch.get("initial_state"),
                                    lengths=batch.get("lengths"), mask=batch.get("mask"), keep_cache=False)
        weights = self._loss_weights(batch, int(logits.shape[1]) if self.config.output == "sequence" else 0)
        return METRIC_SUMS[self.config.loss](self.xp, logits, batch["targets"], weights)

    def predict(self, batch: Any) -> np.ndarray:
        """Predictions as NumPy: class ids (cross-entropy: argmax over O), 0/1 (binary: σ(z) > ½,
        per output) or the outputs themselves (MSE); shaped like the targets. ``batch`` is a dict
        or the inputs alone."""
        batch = batch if isinstance(batch, Mapping) else {"inputs": batch}
        logits, _, _ = self.forward(batch["inputs"], initial_state=batch.get("initial_state"),
                                    lengths=batch.get("lengths"), mask=batch.get("mask"), keep_cache=False)
        z = self.xp.to_numpy(logits)
        if self.config.loss == "cross_entropy":
            return z.argmax(axis=-1)
        return (z > 0).astype(np.int64) if self.config.loss == "binary_cross_entropy" else z.astype(np.float64)
