"""Many-to-many, different lengths: :class:`Seq2Seq`, the notes' encoder–decoder (translation).

Encoder and decoder are separate recurrent stacks with separate embeddings (separate weights):

    encoder:  s = final state of RNN_enc(E_src[x⟨1⟩] … E_src[x⟨T_x⟩])   (h, and c for an LSTM, per layer;
              a bidirectional encoder's two directions are summed per layer)
    decoder:  a⟨0⟩ = s,   a⟨t⟩ = RNN_dec(E_tgt[y⟨t−1⟩], a⟨t−1⟩),   y⟨0⟩ = <start> (default <EOS>)
              ŷ⟨t⟩ = softmax(a⟨t⟩ W_y + b_y)
    loss:     L = −(1/N) Σ_b Σ_{t ≤ T_y,b} log ŷ⟨t⟩[y⟨t⟩]     over every target token, the closing <EOS> included

Training feeds the true previous token y⟨t−1⟩ (teacher forcing). With scheduled sampling
probability p (Bengio et al., 2015) each sequence's input at each step t ≥ 2 is instead, with
probability p, the model's own greedy prediction argmax ŷ⟨t−1⟩; no gradient flows through that
discrete choice. p = 0 runs the decoder over the whole target in one layer call.

Backward: the decoder's BPTT ends with dL/da⟨0⟩, its ``d_initial_state``; that is exactly the
encoder's ``d_final_state``, so the encoder's BPTT continues from it — the encoder learns only
through the decoder's loss.

Decoding (``max_length`` bounds the output; ``<EOS>`` ends it and is not returned; <PAD> and a
distinct start token are never emitted):
    greedy:       y⟨t⟩ = argmax ŷ⟨t⟩, fed back as the next input
    beam search:  keep the k most probable prefixes by log p; a candidate ending in <EOS> among
                  the top k of a step is finished; stop when k hypotheses have finished (or at
                  ``max_length``, where unfinished prefixes compete too). The winner maximises
                  the length-normalised score log p(y) / |y|^α, |y| counting the <EOS>, α =
                  ``length_penalty`` (0: raw log p, which favours short outputs; 1: mean per token).

A batch is a dict: ``source`` (B, S) ids, optional ``source_lengths`` (B,); ``target`` (B, T)
ids ending with <EOS> (see :func:`seq2seq_batch`), optional ``target_lengths`` (B,); optional
``sampling_probability`` overriding the config's scheduled-sampling p.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.models.blocks import EncodedInputs, InputEncoder, batch_mask, bridge_state, bridge_state_backward
from mlxrnn.models.seq2seq_decoding import Seq2SeqDecoding, as_ids, log_softmax
from mlxrnn.models.spec import (
    RecurrentSpec,
    config_from_dict,
    config_from_settings,
    takes_settings,
    with_recurrent_spec,
)
from mlxrnn.models.task import Sums, TaskModel, class_metric_sums
from mlxrnn.nn.layers import Linear
from mlxrnn.nn.losses import softmax_cross_entropy
from mlxrnn.nn.module import Module, check_positive_int
from mlxrnn.nn.sequences import EOS_ID, PAD_ID, pad_sequences


@with_recurrent_spec(aliases={"bidirectional_encoder": "bidirectional"})
@dataclass
class Seq2SeqConfig:
    """Everything needed to rebuild a :class:`Seq2Seq` (flat recurrent names work too, and
    ``bidirectional_encoder`` is ``recurrent.bidirectional``)."""

    source_vocab_size: int = 64
    target_vocab_size: int = 64
    embed_size: int = 32  #: width of both embeddings
    #: encoder and decoder share cell, H and depth (layer ℓ's state initialises layer ℓ); only the
    #: encoder may be bidirectional (its directions are summed), the decoder runs forward
    recurrent: RecurrentSpec = field(default_factory=lambda: RecurrentSpec(hidden_size=128))
    scheduled_sampling: float = 0.0  #: p in [0, 1]; a batch's "sampling_probability" overrides it
    start_id: int = EOS_ID  #: the decoder's first input (the previous sentence's <EOS>, as in the LM)
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    seed: int = 0

    def validate(self) -> Seq2SeqConfig:
        """Check every field (ConfigError naming it); returns the config."""
        for label in ("source_vocab_size", "target_vocab_size", "embed_size"):
            check_positive_int(label, getattr(self, label))
        self.recurrent.validate()
        _check_sampling_probability(self.scheduled_sampling)
        for label in ("start_id", "eos_id", "pad_id"):
            value = getattr(self, label)
            check_positive_int(label, value, minimum=0)
            if value >= self.target_vocab_size:
                raise ConfigError(f"{label}={value} is outside the target vocabulary of {self.target_vocab_size}")
        if self.pad_id == self.eos_id:
            raise ConfigError("pad_id and eos_id must differ (<PAD> is never emitted, <EOS> ends the output)")
        return self

    def to_dict(self) -> dict:
        """The config as JSON-ready fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Seq2SeqConfig:
        """From :meth:`to_dict`'s form (recurrent settings nested) or the older flat one; validated."""
        return config_from_dict(cls, data)


def _check_sampling_probability(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"scheduled-sampling probability must be a number in [0, 1], got {p!r}")
    return float(p)


def seq2seq_batch(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], eos_id: int = EOS_ID,
                  pad_id: int = PAD_ID) -> dict:
    """Pad id sequences into a :class:`Seq2Seq` batch, appending <EOS> to every target.

    Returns {"source" (B, S), "source_lengths" (B,), "target" (B, T), "target_lengths" (B,)}.
    """
    if len(sources) != len(targets):
        raise ConfigError(f"got {len(sources)} sources but {len(targets)} targets")
    source, source_lengths = pad_sequences(sources, pad_id=pad_id)
    target, target_lengths = pad_sequences([list(t) + [eos_id] for t in targets], pad_id=pad_id)
    return {"source": source, "source_lengths": source_lengths, "target": target, "target_lengths": target_lengths}


@takes_settings
class Seq2Seq(Seq2SeqDecoding, TaskModel, Module):
    """Encoder–decoder; see the module docstring for the equations, batch format and decoding.

    Parameters: ``source_embedding.weight`` (V_src, E), ``encoder.*``, ``target_embedding.weight``
    (V_tgt, E), ``decoder.*``, ``head.W`` (H, V_tgt), ``head.b``. Logits are (B, T, V_tgt);
    ``model(batch)`` returns them. Build it from a config or its settings as keywords.
    """

    checkpoint_kind = "seq2seq"
    config_class = Seq2SeqConfig
    pair_keys = ("source", "target")

    def __init__(self, config: Seq2SeqConfig | None = None, backend: Any = None, dtype: str = "float32",
                 **settings: Any):
        super().__init__(backend, dtype)
        self.config = c = config_from_settings(self.config_class, config, settings).validate()
        self.add_child("source_embedding", InputEncoder("embedding", c.source_vocab_size, c.embed_size, seed=c.seed,
                                                        backend=self.xp))
        self.add_child("encoder", c.recurrent.build(c.embed_size, seed=c.seed + 1, backend=self.xp))
        self.add_child("target_embedding", InputEncoder("embedding", c.target_vocab_size, c.embed_size,
                                                        seed=c.seed + 2, backend=self.xp))
        decoder = replace(c.recurrent, bidirectional=False)  # it generates left to right
        self.add_child("decoder", decoder.build(c.embed_size, seed=c.seed + 3, backend=self.xp))
        self.add_child("head", Linear(c.hidden_size, c.target_vocab_size, seed=c.seed + 4, backend=self.xp))
        self._sampling_rng = np.random.default_rng(c.seed + 5)
        banned = {c.pad_id} | ({c.start_id} if c.start_id != c.eos_id else set())
        self.banned_ids = sorted(banned)  #: never emitted by greedy or beam decoding

    def extra_repr(self) -> str:
        return f"source_vocab_size={self.config.source_vocab_size}, target_vocab_size={self.config.target_vocab_size}"

    def time_keys(self) -> dict[str, tuple[str, ...]]:
        return {"source_lengths": ("source",), "target_lengths": ("target", "target_mask")}

    def metric_sums(self, batch: Mapping[str, Any]) -> Sums:
        """Teacher-forced loss and next-token accuracy over the valid target tokens."""
        logits, _ = self.forward(batch)
        return class_metric_sums(self.xp, logits, *self._targets(batch))

    def predict(self, batch: Any, beam_size: int = 1, max_length: int = 100, length_penalty: float = 1.0
                ) -> list[list[int]]:
        """:meth:`translate` of a batch dict (``source``, optional ``source_lengths``) or of the source ids."""
        batch = batch if isinstance(batch, Mapping) else {"source": batch}
        return self.translate(batch["source"], batch.get("source_lengths"), beam_size=beam_size,
                              max_length=max_length, length_penalty=length_penalty)

    # --- encoder --------------------------------------------------------------------------------
    def _encode(self, ids: np.ndarray, source_lengths: Any, training: bool, rng) -> tuple[Any, dict]:
        B, S = ids.shape
        if S < 1:
            raise ShapeError("source must have at least one time step")
        mask = batch_mask({"source_lengths": source_lengths}, B, S, lengths_key="source_lengths")
        x, encoded = self.source_embedding.forward(ids)  # TokenInputs: the encoder may fold the lookup
        _, final_state, rnn_cache = self.encoder.forward(x, mask=mask, training=training, rng=rng)
        initial = bridge_state(self.xp, self.encoder, final_state)
        return initial, {"encoded": encoded, "rnn": rnn_cache}

    def encode(self, source: Any, source_lengths: Any = None) -> Any:
        """source (B, S) ids → the decoder's initial state (backend arrays, the layer's state layout)."""
        return self._encode(as_ids(self.xp, source, "source"), source_lengths, training=False, rng=None)[0]

    # --- training forward ------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, dict]:
        """Teacher-forced (or scheduled-sampling) pass: (logits (B, T, V_tgt), cache)."""
        c = self.config
        source, (target, _) = as_ids(self.xp, batch["source"], "source"), self._targets(batch)
        B, T = target.shape
        if source.shape[0] != B:
            raise ShapeError(f"source and target must have the same batch size; got {source.shape[0]} and {B}")
        initial, enc_cache = self._encode(source, batch.get("source_lengths"), training, rng)
        p = _check_sampling_probability(batch.get("sampling_probability", c.scheduled_sampling))
        if training and p > 0 and T > 1:
            logits, dec_cache = self._decode_sampled(target, initial, p, rng)
        else:
            inputs = np.concatenate([np.full((B, 1), c.start_id), target[:, :-1]], axis=1).astype(np.int32)
            x, encoded = self.target_embedding.forward(inputs)
            outputs, _, rnn_cache = self.decoder.forward(x, initial_state=initial, training=training, rng=rng)
            logits, _ = self.head.forward(outputs)
            dec_cache = {"ids": encoded.ids, "encoded": encoded, "outputs": outputs, "steps": [rnn_cache]}
        return logits, {"encoder": enc_cache, "decoder": dec_cache}

    def _targets(self, batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """The batch's target ids (B, T), <PAD> at padded steps, and their loss weights (B, T) or None."""
        target = as_ids(self.xp, batch["target"], "target")
        if target.shape[1] < 1:
            raise ShapeError("target must have at least one step (its <EOS>)")
        weights = batch_mask(batch, *target.shape, lengths_key="target_lengths", mask_key="target_mask")
        if weights is not None:  # padded steps may hold anything (e.g. −1); they are neither fed nor counted
            target = np.where(weights > 0, target, self.config.pad_id)
        return target, weights

    def _decode_sampled(self, target: np.ndarray, initial: Any, p: float, rng) -> tuple[Any, dict]:
        """Step-by-step decoder pass feeding the model's own prediction with probability p."""
        xp, c = self.xp, self.config
        rng = rng if rng is not None else self._sampling_rng
        B, T = target.shape
        state, tokens = initial, np.full(B, c.start_id, dtype=np.int32)
        predicted = tokens
        outputs, logits, steps, fed = [], [], [], []
        for t in range(T):
            if t > 0:
                use_model = rng.random(B) < p
                tokens = np.where(use_model, predicted, target[:, t - 1]).astype(np.int32)
            fed.append(tokens)
            x, _ = self.target_embedding.forward(tokens[:, None], as_tokens=False)  # one scatter in backward
            out, state, rnn_cache = self.decoder.forward(x, initial_state=state, training=True, rng=rng)
            step_logits, _ = self.head.forward(out)  # (B, 1, V)
            z = xp.to_numpy(step_logits[:, 0]).astype(np.float64)
            z[:, self.banned_ids] = -np.inf
            predicted = z.argmax(axis=1)
            outputs.append(out)
            logits.append(step_logits)
            steps.append(rnn_cache)
        ids = xp.from_numpy(np.stack(fed, axis=1).astype(np.int32))
        encoded = EncodedInputs(ids, B, T, as_tokens=False)
        cache = {"ids": ids, "encoded": encoded, "outputs": xp.concat(outputs, axis=1), "steps": steps}
        return xp.concat(logits, axis=1), cache

    def loss(self, batch: Mapping[str, Any], training: bool = False, rng=None) -> tuple[Any, Any, dict]:
        """(mean cross-entropy over valid target tokens, d_logits, cache)."""
        logits, cache = self.forward(batch, training=training, rng=rng)
        target, weights = self._targets(batch)
        loss, d_logits = softmax_cross_entropy(self.xp, logits, target, weights=weights)
        return loss, d_logits, cache

    # --- backward ---------------------------------------------------------------------------------
    def backward(self, d_logits: Any, cache: dict) -> dict:
        """Gradients of every parameter: head → decoder BPTT → d a⟨0⟩ → encoder BPTT → embeddings."""
        xp = self.xp
        dec, enc = cache["decoder"], cache["encoder"]
        d_outputs, head_grads = self.head.backward(d_logits, dec["outputs"])  # (B, T, H)
        grads = {f"head.{k}": v for k, v in head_grads.items()}
        if len(dec["steps"]) == 1:  # one call over the whole target
            d_x, d_initial, dec_grads = self.decoder.backward(d_outputs, None, dec["steps"][0])
        else:  # one call per step: chain each step's d_initial_state into the previous step
            d_initial, dec_grads, d_xs = None, {}, []
            for t in range(len(dec["steps"]) - 1, -1, -1):
                d_x_t, d_initial, step_grads = self.decoder.backward(d_outputs[:, t:t + 1], d_initial, dec["steps"][t])
                d_xs.append(d_x_t)
                dec_grads = step_grads if not dec_grads else {k: dec_grads[k] + g for k, g in step_grads.items()}
            d_x = xp.concat(d_xs[::-1], axis=1)
        grads.update({f"decoder.{k}": v for k, v in dec_grads.items()})
        grads["target_embedding.weight"] = self.target_embedding.backward(d_x, dec["encoded"])[0]["weight"]
        # The decoder's d_initial_state is the encoder's d_final_state.
        d_final = bridge_state_backward(xp, self.encoder, d_initial)
        d_source, _, enc_grads = self.encoder.backward(None, d_final, enc["rnn"])
        grads.update({f"encoder.{k}": v for k, v in enc_grads.items()})
        grads["source_embedding.weight"] = self.source_embedding.backward(d_source, enc["encoded"])[0]["weight"]
        return {name: grads[name] for name in self.parameters()}

    def loss_and_grads(self, batch: Mapping[str, Any], training: bool = True, rng=None) -> tuple[Any, dict, dict]:
        """The trainer's entry point: (loss, grads keyed like parameters(), aux)."""
        loss, d_logits, cache = self.loss(batch, training=training, rng=rng)
        return loss, self.backward(d_logits, cache), {}

    # --- inference ----------------------------------------------------------------------------------
    def step(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """One decoder step: tokens (B,) ids and state → (log ŷ (B, V_tgt) float64 NumPy, new state)."""
        # one row per sequence: a plain lookup (folding would project the whole table every step)
        x, _ = self.target_embedding.forward(np.asarray(tokens, dtype=np.int32)[:, None], as_tokens=False)
        out, state, _ = self.decoder.forward(x, initial_state=state)
        logits, _ = self.head.forward(out[:, 0])
        return log_softmax(self.xp.to_numpy(logits).astype(np.float64)), state

    def log_prob(self, batch: Mapping[str, Any]) -> np.ndarray:
        """log p(target | source) per sequence, (B,) float64, summed over valid target tokens."""
        logits, _ = self.forward(batch, training=False)
        target, weights = self._targets(batch)
        log_probs = log_softmax(self.xp.to_numpy(logits).astype(np.float64))
        picked = np.take_along_axis(log_probs, target[..., None].astype(np.intp), axis=-1)[..., 0]
        return (picked if weights is None else picked * weights).sum(axis=1)

    def translate(self, source: Any, source_lengths: Any = None, beam_size: int = 1, max_length: int = 100,
                  length_penalty: float = 1.0) -> list[list[int]]:
        """Output ids per source sequence: greedy for ``beam_size`` 1, else beam search."""
        if beam_size == 1:
            return self.greedy_decode(source, source_lengths, max_length=max_length)
        hyps = self.beam_search(source, source_lengths, beam_size=beam_size, max_length=max_length,
                                length_penalty=length_penalty)
        return [h.tokens for h in hyps]
