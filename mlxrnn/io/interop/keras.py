"""Keras ``SimpleRNN`` / ``GRU`` / ``LSTM`` (and ``Bidirectional``) weight lists <-> mlxrnn layers
(see the package docstring for the layout). Keras is never imported: weights are the arrays
``layer.get_weights()`` returns."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop.common import (
    KERAS_GATES,
    OUR_GATES,
    as_numpy,
    build_layer,
    check_exportable,
    check_zero_biases,
    expect_shape,
    from_two_biases,
    numpy_direction,
    rnn_activation,
    to_two_biases,
)
from mlxrnn.nn.layers import Recurrent

_KERAS_KINDS = {"simplernn": "rnn", "simple_rnn": "rnn", "rnn": "rnn", "gru": "gru", "lstm": "lstm"}


def _keras_kind(kind: str) -> str:
    key = str(kind).lower()
    if key not in _KERAS_KINDS:
        raise ConfigError(f"unknown Keras layer kind {kind!r}: use 'SimpleRNN', 'GRU' or 'LSTM'")
    return _KERAS_KINDS[key]


def from_keras(
    weights: list,
    kind: str,
    *,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    reset_after: bool | None = None,
    merge: str = "concat",
    dropout: float = 0.0,
    backend: Any = None,
    dtype: str = "float32",
) -> Recurrent:
    """Build an mlxrnn layer from Keras ``SimpleRNN`` / ``GRU`` / ``LSTM`` weights.

    Args:
        weights: what ``get_weights()`` returns: ``[kernel (D, G·H), recurrent_kernel (H, G·H),
            bias]`` (no bias when ``use_bias=False``); for a ``Bidirectional`` wrapper the forward
            layer's list followed by the backward layer's (bidirectionality is read from the
            count). For a stack, a list of such lists, one per layer (all with the same units).
        kind: "SimpleRNN", "GRU" or "LSTM".
        activation: the layer's ``activation`` ("tanh"; SimpleRNN also "relu").
        recurrent_activation: must be "sigmoid" (Keras 3 and tf.keras 2 default; Keras 1's
            "hard_sigmoid" is not supported).
        reset_after: GRU only; read from the bias shape ((2, 3H) means True). Required when the
            GRU has no bias, since the two variants then differ only in where the reset gate acts.
        merge: a Bidirectional wrapper's ``merge_mode``: "concat" or "sum".
    Returns:
        an mlxrnn layer; GRU ``reset_after=True`` -> ``variant="reset_after"``, False -> "full".
    """
    kind = _keras_kind(kind)
    options = rnn_activation(kind, activation)
    if recurrent_activation != "sigmoid" and kind != "rnn":
        raise ConfigError(f"only recurrent_activation='sigmoid' is supported, got {recurrent_activation!r}")
    if merge not in ("concat", "sum"):
        raise ConfigError(f"Bidirectional merge_mode {merge!r} is not supported: use 'concat' or 'sum'")
    if not isinstance(weights, (list, tuple)) or not weights:
        raise CheckpointError("Keras weights must be a non-empty list (from layer.get_weights())")
    per_layer = [list(w) for w in weights] if isinstance(weights[0], (list, tuple)) else [list(weights)]
    count = len(per_layer[0])
    if count not in (2, 3, 4, 6) or any(len(w) != count for w in per_layer):
        raise CheckpointError(
            f"expected 2 or 3 arrays per direction ([kernel, recurrent_kernel(, bias)]) for every layer; got "
            f"{[len(w) for w in per_layer]}"
        )
    num_directions = 2 if count in (4, 6) else 1
    has_bias = count in (3, 6)
    per_direction = count // num_directions
    first = as_numpy(per_layer[0][0], "kernel")
    hidden_size = as_numpy(per_layer[0][1], "recurrent_kernel").shape[0]
    gates = len(OUR_GATES[kind])
    GH = gates * hidden_size
    if first.ndim != 2 or first.shape[1] != GH:
        raise CheckpointError(
            f"kernel has shape {first.shape}, which does not fit a Keras {kind.upper()} with {hidden_size} units"
        )
    input_size = first.shape[0]
    if kind == "gru":
        if has_bias:
            inferred = as_numpy(per_layer[0][2], "bias").ndim == 2
            if reset_after is not None and bool(reset_after) != inferred:
                raise ConfigError(f"reset_after={reset_after} contradicts the bias shape (reset_after={inferred})")
            reset_after = inferred
        elif reset_after is None:
            raise ConfigError("a Keras GRU without bias needs reset_after=True or False (the layer's setting)")
        options["variant"] = "reset_after" if reset_after else "full"
    output_size = hidden_size * (2 if num_directions == 2 and merge == "concat" else 1)
    directions = {}
    for index, arrays in enumerate(per_layer):
        layer_input = input_size if index == 0 else output_size
        for direction in range(num_directions):
            part = arrays[direction * per_direction : (direction + 1) * per_direction]
            where = f"layer {index}{' backward' if direction else ''}"
            kernel = as_numpy(part[0], f"{where} kernel")
            recurrent = as_numpy(part[1], f"{where} recurrent_kernel")
            expect_shape(f"{where} kernel", kernel, (layer_input, GH))
            expect_shape(f"{where} recurrent_kernel", recurrent, (hidden_size, GH))
            two_biases = kind == "gru" and reset_after
            if has_bias:
                bias = as_numpy(part[2], f"{where} bias")
                expect_shape(f"{where} bias", bias, (2, GH) if two_biases else (GH,))
            else:
                bias = np.zeros((2, GH) if two_biases else (GH,))
            b_in, b_rec = (bias[0], bias[1]) if two_biases else (bias, np.zeros(GH))
            params = from_two_biases(kind, kernel, recurrent, b_in, b_rec, KERAS_GATES[kind])
            if kind == "gru" and not reset_after:
                del params["b_hn"]  # the "full" GRU has no recurrent candidate bias (b_rec was zero)
            directions[(index, direction)] = params
    return build_layer(
        kind,
        directions,
        input_size,
        hidden_size,
        len(per_layer),
        num_directions == 2,
        backend,
        dtype,
        merge=merge,
        dropout=dropout,
        **options,
    )


def to_keras(layer: Recurrent, *, use_bias: bool = True) -> list:
    """Keras weights for the layer, in the layer's dtype, ready for ``keras_layer.set_weights``.

    One layer: ``[kernel, recurrent_kernel, bias]`` (forward then backward for a bidirectional
    layer, the order of ``Bidirectional.get_weights()``). Several layers: a list of such lists,
    one per Keras layer. The Keras layers to build: ``SimpleRNN(H, activation=...)``,
    ``GRU(H, reset_after=True)`` for variant "reset_after" (bias (2, 3H): the whole bias in the
    input row, the recurrent row zero except the candidate block) or ``GRU(H, reset_after=False)``
    for variant "full", ``LSTM(H)``; wrapped in ``Bidirectional(..., merge_mode=layer.merge)``.

    Args:
        use_bias: False omits the biases (for ``use_bias=False`` layers); refused if any is non-zero.
    """
    kind = check_exportable(layer, "Keras", ("full", "reset_after"))
    if not use_bias:
        check_zero_biases(layer, "Keras")
    reset_after = kind == "gru" and layer.cell_options.get("variant") == "reset_after"
    stack = []
    for index in range(layer.num_layers):
        arrays: list[np.ndarray] = []
        for direction in range(layer.num_directions):
            params = numpy_direction(layer, index, direction)
            if kind == "gru" and not reset_after:
                params = {**params, "b_hn": np.zeros(layer.hidden_size, dtype=params["b"].dtype)}
            kernel, recurrent, b_in, b_rec = to_two_biases(kind, params, KERAS_GATES[kind])
            arrays += [kernel, recurrent]
            if use_bias:
                arrays.append(np.stack([b_in, b_rec]) if reset_after else b_in)
        stack.append(arrays)
    return stack[0] if layer.num_layers == 1 else stack
