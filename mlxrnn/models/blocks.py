"""Building blocks the task models share: the input encoder, the final-state head, masks, bridges.

* :class:`InputEncoder` turns a batch's inputs into what a recurrent stack reads: token ids
  through a learned embedding (handed over as :class:`~mlxrnn.nn.layers.TokenInputs`, so the
  stack may fold the lookup into layer 0's input projection) or as one-hot vectors, or dense
  features as they are; and routes the gradient back (to the table, or to the dense inputs).
* :func:`top_final_hidden` / :func:`top_final_hidden_backward` read the top layer's final
  hidden state with both directions side by side, the many-to-one "last state" of the notes.
* :func:`batch_mask` validates ``lengths`` / ``mask`` once and gives the (B, T) float mask.
* :func:`bridge_state` / :func:`bridge_state_backward` turn an encoder's final state into a
  decoder's initial state (summing the two directions of a bidirectional encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.checks import check_finite
from mlxrnn.nn.dense import initial_table
from mlxrnn.nn.layers import Recurrent, TokenInputs, check_token_ids, lengths_to_mask
from mlxrnn.nn.module import Module, check_positive_int

INPUT_KINDS = ("embedding", "one_hot", "dense")


@dataclass(frozen=True)
class EncodedInputs:
    """What :meth:`InputEncoder.backward` needs from a forward pass."""

    ids: Any  #: (B, T) backend token ids; None for dense inputs
    batch_size: int
    time_steps: int
    as_tokens: bool  #: handed to the stack as TokenInputs: its backward returns the table's gradient


class InputEncoder(Module):
    """ids or features → the recurrent stack's (B, T, D) input, and the way back.

    ``kind``:
        "embedding": ids (B, T) int → x = E[ids] (B, T, E), a learned table E (V, E) ~ N(0, 1),
                     or U(−r, r) with ``init_range=r`` (parameter ``weight``, drawn exactly like
                     :class:`mlxrnn.Embedding`);
        "one_hot":   ids (B, T) int → x = onehot(ids) (B, T, V), no parameters;
        "dense":     floats (B, T, D) pass through; the backward returns dL/dx.
    ``input_size`` is V (vocabulary) for ids and D for dense inputs; :attr:`output_size` is the
    stack's input width (E, V or D).

    An embedding's x is returned as ``TokenInputs(E, ids)`` unless ``as_tokens=False``: the
    stack then either projects the table once, (E[ids]) W_x = (E W_x)[ids], or gathers the rows
    itself, whichever needs fewer FLOPs, and its backward returns dL/dE (V, E) in place of dx.
    """

    def __init__(self, kind: str, input_size: int, embed_size: int = 32, seed: int = 0, backend: Any = None,
                 dtype: str = "float32", init_range: float | None = None):
        super().__init__(backend, dtype)
        if kind not in INPUT_KINDS:
            raise ConfigError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
        self.kind = kind
        self.input_size = check_positive_int("input_size", input_size)
        if kind == "embedding":
            self.output_size = check_positive_int("embed_size", embed_size)
            table = initial_table(np.random.default_rng(seed), (self.input_size, self.output_size), init_range)
            self._set_numpy_params({"weight": table})
        else:
            self.output_size = self.input_size

    def extra_repr(self) -> str:
        sizes = f"input_size={self.input_size}"
        return f"{self.kind!r}, " + (sizes + f", embed_size={self.output_size}" if self.kind == "embedding" else sizes)

    def io_sizes(self) -> tuple[int, int]:
        return self.input_size, self.output_size

    def __call__(self, inputs: Any) -> Any:
        """The stack's input x (B, T, output_size) as an array (never TokenInputs)."""
        return self.forward(inputs, as_tokens=False)[0]

    def forward(self, inputs: Any, as_tokens: bool = True) -> tuple[Any, EncodedInputs]:
        """inputs (B, T) ids or (B, T, D) floats → (x for the stack, cache for :meth:`backward`).

        x is TokenInputs for an embedding with ``as_tokens`` (see the class doc), else a backend
        array (B, T, output_size).
        """
        xp = self.xp
        if self.kind == "dense":
            x = self._dense(inputs)
            return x, EncodedInputs(None, int(x.shape[0]), int(x.shape[1]), False)
        if isinstance(inputs, (list, tuple)):
            try:
                inputs = np.asarray(inputs)
            except ValueError:  # ragged nested lists
                raise ShapeError(
                    "token ids must be a rectangular (batch, time) array; pad the sequences to one length "
                    "(mlxrnn.nn.sequences.pad_sequences) and pass lengths="
                ) from None
        ids = check_token_ids(xp, inputs, self.input_size)
        if len(ids.shape) != 2:
            raise ShapeError(f"inputs must be token ids of shape (batch, time); got {tuple(ids.shape)}")
        B, T = int(ids.shape[0]), int(ids.shape[1])
        if self.kind == "one_hot":
            return xp.one_hot(ids, self.input_size), EncodedInputs(ids, B, T, False)
        if as_tokens:
            return TokenInputs(self.params["weight"], ids), EncodedInputs(ids, B, T, True)
        return xp.take(self.params["weight"], ids, axis=0), EncodedInputs(ids, B, T, False)

    def _dense(self, inputs: Any) -> Any:
        D = self.input_size
        if isinstance(inputs, (np.ndarray, list, tuple)):
            try:
                array = np.asarray(inputs)
            except ValueError:  # ragged nested lists
                raise ShapeError(
                    f"dense inputs must be a rectangular (batch, time, {D}) array; pad the sequences "
                    "to one length and pass lengths="
                ) from None
            x = self.xp.from_numpy(check_dense_numpy(array, D, self.xp.dtype_name))
        elif hasattr(inputs, "shape"):
            x = inputs  # already a backend array: not inspected (that would cost a device sync)
        else:
            raise ShapeError(f"dense inputs must be a float array of shape (batch, time, {D}); "
                             f"got {type(inputs).__name__}")
        if len(x.shape) != 3 or int(x.shape[2]) != D:
            raise ShapeError(f"dense inputs must have shape (batch, time, {D}); got {tuple(x.shape)}")
        return x

    def backward(self, d_x: Any, cache: EncodedInputs) -> tuple[dict, Any]:
        """d_x from the stack → (grads keyed like ``params``, dL/dinputs for dense inputs else None).

        ``d_x`` is the stack's first backward result: (B, T, output_size), or the table's
        gradient (V, E) when the inputs went in as TokenInputs.
        """
        if self.kind == "dense":
            return {}, d_x
        if self.kind == "one_hot":
            return {}, None
        if cache.as_tokens:
            return {"weight": d_x}, None
        flat = self.xp.reshape(d_x, (-1, self.output_size))
        weight = self.xp.scatter_add_rows(self.input_size, self.xp.reshape(cache.ids, (-1,)), flat)
        return {"weight": weight}, None


def check_dense_numpy(x: np.ndarray, features: int, dtype: str = "float32") -> np.ndarray:
    """Dense NumPy inputs must be real numbers, finite and within the range of the model's
    ``dtype``: one NaN (or a 1e300 that becomes inf in float32) would silently poison training.

    One pass over (B, T, D) values, negligible next to the recurrent matmuls over the same steps.
    """
    if x.dtype.kind not in "fiub":
        raise ShapeError(f"dense inputs must be numbers of shape (batch, time, {features}); got dtype {x.dtype}")
    check_finite(x, "dense inputs", "clean or impute the data before passing it to the model", dtype)
    return x


def batch_mask(batch: Mapping[str, Any], batch_size: int, time_steps: int, lengths_key: str = "lengths",
               mask_key: str = "mask", require_nonempty: bool = False) -> np.ndarray | None:
    """The (B, T) float64 mask (1 on valid steps) from ``batch[lengths_key]`` or ``batch[mask_key]``.

    None when the batch has neither (every step valid). ``require_nonempty`` rejects sequences
    with no valid step (a many-to-one model has nothing to read from them).
    """
    lengths, mask = batch.get(lengths_key), batch.get(mask_key)
    if lengths is not None and mask is not None:
        raise ConfigError(f"give either {lengths_key} or {mask_key}, not both")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (batch_size,):
            raise ShapeError(f"{lengths_key} must have shape (batch,) = ({batch_size},); got {lengths.shape}")
        result = lengths_to_mask(lengths, time_steps)
    elif mask is not None:
        result = np.asarray(mask, dtype=np.float64)
        if result.shape != (batch_size, time_steps):
            raise ShapeError(f"{mask_key} must have shape (batch, time) = {(batch_size, time_steps)}; "
                             f"got {result.shape}")
    else:
        return None
    check_finite(result, mask_key, "a mask is 1 on valid steps and 0 on padding")
    if require_nonempty and np.any(result.sum(axis=1) == 0):
        raise ConfigError(f"every sequence needs at least one valid step; {lengths_key} has a 0")
    return result


def top_final_hidden(xp: Any, rnn: Recurrent, final_state: Any) -> Any:
    """The top layer's final h with directions side by side: (B, D·H).

    With a mask, the forward direction's final h is its state after each sequence's last valid
    step and the backward direction's is its state after reading back to t = 0, so both have
    seen the whole sequence.
    """
    h_final = final_state[0] if isinstance(final_state, tuple) else final_state  # (L·D, B, H)
    top = h_final[-rnn.num_directions:]
    return xp.concat([top[d] for d in range(rnn.num_directions)], axis=1)


def top_final_hidden_backward(xp: Any, rnn: Recurrent, d_features: Any, final_state: Any) -> Any:
    """d (B, D·H) w.r.t. :func:`top_final_hidden` → d_final_state in the layer's state layout."""
    H, D = rnn.hidden_size, rnn.num_directions
    h_final = final_state[0] if isinstance(final_state, tuple) else final_state
    zeros_below = [xp.zeros_like(h_final[i]) for i in range(int(h_final.shape[0]) - D)]
    d_h = xp.stack(zeros_below + [d_features[:, d * H:(d + 1) * H] for d in range(D)], axis=0)
    if isinstance(final_state, tuple):  # an LSTM's c gets no gradient from a head that reads h
        return (d_h,) + tuple(xp.zeros_like(d_h) for _ in final_state[1:])
    return d_h


def bridge_state(xp: Any, encoder: Recurrent, final_state: Any) -> Any:
    """Encoder final state (L·D, B, H) → decoder initial state (L, B, H).

    s_dec[ℓ] = Σ_d s_enc[ℓ·D + d] for every state part (h, and c for an LSTM): one direction
    passes through unchanged; a bidirectional encoder's two directions are summed.
    """
    parts = list(final_state) if isinstance(final_state, tuple) else [final_state]
    D, L = encoder.num_directions, encoder.num_layers
    if D == 1:
        bridged = parts
    else:
        bridged = [xp.stack([part[2 * layer] + part[2 * layer + 1] for layer in range(L)], axis=0) for part in parts]
    return tuple(bridged) if isinstance(final_state, tuple) else bridged[0]


def bridge_state_backward(xp: Any, encoder: Recurrent, d_initial: Any) -> Any:
    """d (decoder initial state) → d (encoder final state): each direction receives the sum's gradient."""
    if encoder.num_directions == 1:
        return d_initial
    parts = list(d_initial) if isinstance(d_initial, tuple) else [d_initial]
    spread = [xp.stack([part[layer] for layer in range(encoder.num_layers) for _ in range(2)], axis=0)
              for part in parts]
    return tuple(spread) if isinstance(d_initial, tuple) else spread[0]
