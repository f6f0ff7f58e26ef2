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
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError
from mlxrnn.nn.cells import CELLS, cell_option_names, make_cell
from mlxrnn.nn.layers import Embedding, Linear, TokenInputs, check_token_ids, lengths_to_mask, make_recurrent
from mlxrnn.nn.losses import get_loss
from mlxrnn.nn.module import Module, check_positive_int

INPUT_KINDS = ("embedding", "one_hot", "dense")
OUTPUT_KINDS = ("sequence", "last")
#: float32 weights, gradients and two optimizer moments (Adam): what training needs at least
_TRAINING_BYTES_PER_PARAMETER = 16


def _physical_memory() -> int:
    """Bytes of RAM on this machine (1 TiB where the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 2**40


@dataclass
class SequenceModelConfig:
    """Everything needed to rebuild a :class:`SequenceModel` (stored in checkpoints)."""

    input_kind: str = "embedding"  #: "embedding", "one_hot" (ids) or "dense" (float features)
    input_size: int = 65  #: vocabulary size for ids, feature count for dense inputs
    embed_size: int = 64  #: embedding width (input_kind "embedding" only)
    cell: str = "lstm"  #: "rnn", "gru" or "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout: float = 0.0
    output_size: int = 65  #: classes (cross-entropy), logits (binary) or features (mse)
    output: str = "sequence"  #: "sequence" (many-to-many) or "last" (many-to-one)
    loss: str = "cross_entropy"
    tie_weights: bool = False  #: share the embedding with the output layer (needs embed = hidden)
    cell_options: dict | None = None  #: e.g. {"variant": "reset_after"}, {"peephole": True}
    seed: int = 0

    def validate(self) -> SequenceModelConfig:
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {self.input_kind!r}")
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {self.output!r}")
        for label in ("input_size", "embed_size", "hidden_size", "num_layers", "output_size"):
            check_positive_int(label, getattr(self, label))
        check_positive_int("seed", self.seed, minimum=0)
        for label in ("bidirectional", "tie_weights"):
            if not isinstance(getattr(self, label), (bool, np.bool_)):
                raise ConfigError(f"{label} must be True or False, got {getattr(self, label)!r}")
        self._check_cell_options()
        self._check_size()
        if self.tie_weights:
            if self.input_kind != "embedding" or self.output != "sequence":
                raise ConfigError("tie_weights needs an embedding input and sequence output")
            width = self.hidden_size * (2 if self.bidirectional and self.merge == "concat" else 1)
            if self.embed_size != width or self.input_size != self.output_size:
                raise ConfigError(
                    f"tie_weights needs embed size = recurrent output size ({self.embed_size} vs {width}) "
                    f"and input vocabulary = output classes ({self.input_size} vs {self.output_size})"
                )
        return self

    def _check_cell_options(self) -> None:
        options = self.cell_options
        if options is None:
            return
        if not isinstance(options, Mapping):
            raise ConfigError(f"cell_options must be a dict such as {{'peephole': True}}, got {options!r}")
        if self.cell not in CELLS:  # unknown cells are reported by make_recurrent with the valid names
            return
        valid = cell_option_names(self.cell)
        unknown = sorted(str(k) for k in options if k not in valid)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for cell {self.cell!r}; valid: {', '.join(valid) or 'none'}"
            )

    def _parameter_count_bound(self) -> int:
        """An upper bound on the parameter count, computed without allocating anything."""
        # a 1×1 cell is free to build and knows its gate count (a GRU's depends on its variant)
        gates = make_cell(self.cell, 1, 1, **(self.cell_options or {})).num_gates if self.cell in CELLS else 4
        directions = 2 if self.bidirectional else 1
        H = int(self.hidden_size)
        width = H * directions if self.merge == "concat" else H
        layer_input = int(self.embed_size) if self.input_kind == "embedding" else int(self.input_size)
        total = int(self.input_size) * int(self.embed_size) if self.input_kind == "embedding" else 0
        per_layer = directions * (H * gates * H + 2 * gates * H + 3 * H)  # recurrent weights, biases, peepholes
        total += int(self.num_layers) * per_layer + directions * gates * H * layer_input  # input weights: layer 0
        total += (int(self.num_layers) - 1) * directions * gates * H * width  # ... and the layers above it
        head_input = width if self.output == "sequence" else H * directions
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
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequenceModelConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known).validate()


def _check_dense_numpy(x: np.ndarray, features: int) -> np.ndarray:
    """Dense NumPy inputs must be real numbers and finite: one NaN would silently poison training.

    One pass over (B, T, D) values, negligible next to the recurrent matmuls over the same steps.
    """
    if x.dtype.kind not in "fiub":
        raise ShapeError(
            f"dense inputs must be numbers of shape (batch, time, {features}); got dtype {x.dtype}"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise DataError(
            f"dense inputs contain NaN or Inf (first at index {where}, value {x[where]}); "
            "clean or impute the data before passing it to the model"
        )
    return x


class SequenceModel(Module):
    """input encoding → recurrent stack → linear head, trained with a per-step or final loss.

    Shapes: inputs (B, T) or (B, T, D) → logits (B, T, O) for output "sequence", (B, O) for
    "last" (the top layer's final hidden state; both directions concatenated when bidirectional).
    """

    def __init__(self, config: SequenceModelConfig, backend: Any = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        self.config = config.validate()
        c = config
        seed = c.seed
        if c.input_kind == "embedding":
            self.add_child("embedding", Embedding(c.input_size, c.embed_size, seed=seed, backend=self.xp))
            rnn_input = c.embed_size
        else:
            rnn_input = c.input_size
        try:
            rnn = make_recurrent(
                c.cell, rnn_input, c.hidden_size, num_layers=c.num_layers, bidirectional=c.bidirectional,
                merge=c.merge, dropout=c.dropout, seed=seed + 1, backend=self.xp, **(c.cell_options or {}),
            )
        except (TypeError, ValueError) as error:  # e.g. cell_options={"forget_bias": "high"}
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"invalid cell_options {c.cell_options!r} for cell {c.cell!r}: {error}") from None
        self.add_child("rnn", rnn)
        head_input = self.rnn.output_size if c.output == "sequence" else c.hidden_size * self.rnn.num_directions
        head = Linear(head_input, c.output_size, seed=seed + 2, backend=self.xp)
        if c.tie_weights:
            del head.params["W"]  # the head uses embedding.weight transposed
        self.add_child("head", head)
        self.loss_fn = get_loss(c.loss)

    # --- forward ------------------------------------------------------------------------------
    def _encode_inputs(self, inputs: Any) -> tuple[Any, Any]:
        c, xp = self.config, self.xp
        if c.input_kind == "dense":
            if isinstance(inputs, (np.ndarray, list, tuple)):
                try:
                    array = np.asarray(inputs)
                except ValueError:  # ragged nested lists
                    raise ShapeError(
                        f"dense inputs must be a rectangular (batch, time, {c.input_size}) array; pad the sequences "
                        "to one length and pass lengths="
                    ) from None
                x = xp.from_numpy(_check_dense_numpy(array, c.input_size))
            elif hasattr(inputs, "shape"):
                x = inputs  # already a backend array: not inspected (that would cost a device sync)
            else:
                raise ShapeError(
                    f"dense inputs must be a float array of shape (batch, time, {c.input_size}); "
                    f"got {type(inputs).__name__}"
                )
            if len(x.shape) != 3:
                raise ShapeError(f"dense inputs must have shape (batch, time, {c.input_size}); got {tuple(x.shape)}")
            return x, None
        if isinstance(inputs, (list, tuple)):
            try:
                inputs = np.asarray(inputs)
            except ValueError:  # ragged nested lists
                raise ShapeError(
                    "token ids must be a rectangular (batch, time) array; pad the sequences to one length "
                    "(mlxrnn.nn.sequences.pad_sequences) and pass lengths="
                ) from None
        ids = check_token_ids(xp, inputs, c.input_size)
        if len(ids.shape) != 2:
            raise ShapeError(f"inputs must be token ids of shape (batch, time); got {tuple(ids.shape)}")
        if c.input_kind == "one_hot":
            return xp.one_hot(ids, c.input_size), ids
        # The recurrent stack may fold the lookup into layer 0's input projection (fewer FLOPs).
        return TokenInputs(self.embedding.params["weight"], ids), ids

    def _head_weight(self) -> Any:
        if self.config.tie_weights:
            return self.xp.permute_dims(self.embedding.params["weight"], (1, 0))
        return self.head.params["W"]

    def forward(self, inputs: Any, initial_state: Any = None, lengths: Any = None, mask: Any = None,
                training: bool = False, rng: np.random.Generator | None = None) -> tuple[Any, Any, dict]:
        """Returns (logits, final_state, cache). Logits are (B, T, O) or (B, O); see the class doc."""
        xp = self.xp
        x, ids = self._encode_inputs(inputs)
        hidden, final_state, rnn_cache = self.rnn.forward(
            x, initial_state=initial_state, lengths=lengths, mask=mask, training=training, rng=rng
        )
        if self.config.output == "sequence":
            features = hidden
        else:  # the top layer's final h, directions side by side: (B, D·H)
            h_final = final_state[0] if isinstance(final_state, tuple) else final_state
            top = h_final[-self.rnn.num_directions :]
            features = xp.concat([top[d] for d in range(self.rnn.num_directions)], axis=1)
        logits = xp.matmul(features, self._head_weight())
        if "b" in self.head.params:
            logits = logits + self.head.params["b"]
        cache = {"ids": ids, "rnn": rnn_cache, "features": features, "final_state": final_state}
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
        d_features = xp.matmul(d_logits, xp.permute_dims(self._head_weight(), (1, 0)))
        if c.output == "sequence":
            d_hidden, d_final = d_features, None
        else:
            H, D = c.hidden_size, self.rnn.num_directions
            final = cache["final_state"]
            h_final = final[0] if isinstance(final, tuple) else final
            zeros_below = [xp.zeros_like(h_final[i]) for i in range(int(h_final.shape[0]) - D)]
            d_h = xp.stack(zeros_below + [d_features[:, d * H : (d + 1) * H] for d in range(D)], axis=0)
            d_final = (d_h, xp.zeros_like(d_h)) if isinstance(final, tuple) else d_h
            d_hidden = None
        d_x, d_initial, rnn_grads = self.rnn.backward(d_hidden, d_final, cache["rnn"])
        grads.update({f"rnn.{name}": g for name, g in rnn_grads.items()})
        extras = {"initial_state": d_initial}
        if c.input_kind == "embedding":
            d_embed = d_x  # with TokenInputs the stack returns the embedding table's gradient
            if c.tie_weights:
                d_embed = d_embed + xp.permute_dims(d_weight, (1, 0))
            grads["embedding.weight"] = d_embed
        elif c.input_kind == "dense":
            extras["inputs"] = d_x
        return {name: grads[name] for name in self.parameters()}, extras

    def loss_and_grads(self, batch: Mapping[str, Any], training: bool = True, rng=None) -> tuple[Any, dict, dict]:
        """The trainer's entry point: (loss, grads keyed like parameters(), aux with final_state)."""
        loss, d_logits, cache, final_state = self.loss(batch, training=training, rng=rng)
        grads, extras = self.backward(d_logits, cache)
        return loss, grads, {"final_state": final_state, **extras}
