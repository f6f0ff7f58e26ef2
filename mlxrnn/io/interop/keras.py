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
    activation_name,
    agree,
    as_numpy,
    build_layer,
    check_exportable,
    check_zero_biases,
    expect_shape,
    from_two_biases,
    kind_from_gates,
    numpy_direction,
    resolve_dtype,
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


#: the Keras layer classes read as objects (a generic ``keras.layers.RNN(cell)`` is not one of them)
_LAYER_CLASSES = ("SimpleRNN", "GRU", "LSTM")


def _layer_settings(layer: Any) -> tuple[list, dict[str, Any]]:
    """(weights, settings) of a Keras layer object, read duck-typed (Keras is not imported)."""
    outer = type(layer).__name__
    inner, merge = layer, None
    if outer == "Bidirectional":
        inner, merge = getattr(layer, "forward_layer", None) or getattr(layer, "layer", None), layer.merge_mode
    name = type(inner).__name__
    if name not in _LAYER_CLASSES:
        raise ConfigError(
            f"from_keras takes a Keras SimpleRNN, GRU or LSTM layer (or a Bidirectional one), its get_weights(), or "
            f"a list of those for a stack; got a {outer}"
            + (" (pass the recurrent layer itself: model.get_layer(name))" if name == outer else f" of {name}")
        )
    if outer != "Bidirectional" and getattr(inner, "go_backwards", False):
        raise ConfigError(
            f"this Keras {name} has go_backwards=True (it reads and returns the sequence reversed); mlxrnn layers "
            "run forward, or both ways as Bidirectional"
        )
    settings = {"kind": _keras_kind(name), "activation": activation_name(getattr(inner, "activation", None))}
    if name != "SimpleRNN":
        settings["recurrent_activation"] = activation_name(getattr(inner, "recurrent_activation", None))
    if name == "GRU":
        settings["reset_after"] = bool(getattr(inner, "reset_after", True))
    if merge is not None or outer == "Bidirectional":
        settings["merge"] = merge
    weights = list(layer.get_weights())
    if not weights:
        raise ConfigError(f"this Keras {outer} has no weights yet; build it first (call it on a batch, or layer.build)")
    return weights, settings


def _source_settings(source: Any) -> tuple[Any, dict[str, Any]]:
    """(weights, settings read from layer objects — empty for plain weight lists)."""
    layers = source if isinstance(source, (list, tuple)) else [source]
    objects = [callable(getattr(item, "get_weights", None)) for item in layers]
    if not any(objects):
        return source, {}
    if not all(objects) or not layers:
        raise ConfigError("pass Keras layer objects or weight lists to from_keras, not a mix of the two")
    read = [_layer_settings(layer) for layer in layers]
    for index, (_, settings) in enumerate(read[1:], start=1):
        if settings != read[0][1]:
            raise ConfigError(
                f"the Keras layers of a stack must share their settings; layer 0 has {read[0][1]}, "
                f"layer {index} has {settings}"
            )
    weights = [w for w, _ in read]
    return (weights if isinstance(source, (list, tuple)) else weights[0]), read[0][1]


def from_keras(
    weights: Any,
    kind: str | None = None,
    *,
    activation: str | None = None,
    recurrent_activation: str | None = None,
    reset_after: bool | None = None,
    merge: str | None = None,
    dropout: float = 0.0,
    backend: Any = None,
    dtype: str | None = None,
) -> Recurrent:
    """Build an mlxrnn layer from a Keras ``SimpleRNN`` / ``GRU`` / ``LSTM`` or its weights.

    Args:
        weights: the Keras layer itself (plain or ``Bidirectional``; a list of them for a stack),
            which also gives ``kind``, ``activation``, ``recurrent_activation``, ``reset_after``
            and ``merge``; or what ``get_weights()`` returns: ``[kernel (D, G·H),
            recurrent_kernel (H, G·H), bias]`` (no bias when ``use_bias=False``); for a
            ``Bidirectional`` wrapper the forward layer's list followed by the backward layer's
            (bidirectionality is read from the count). For a stack, a list of such lists, one
            per layer (all with the same units).
        kind: "SimpleRNN", "GRU" or "LSTM"; None reads it from the layer, or from the shapes
            (G = 1, 3 or 4 gate blocks of H columns).
        activation: the layer's ``activation`` ("tanh"; SimpleRNN also "relu"). Weights cannot
            tell: None is a layer's own, else tanh (Keras's default).
        recurrent_activation: must be "sigmoid" (Keras 3 and tf.keras 2 default; Keras 1's
            "hard_sigmoid" is not supported); None is a layer's own, else sigmoid.
        reset_after: GRU only; read from the bias shape ((2, 3H) means True) or the layer.
            Required for weights without bias, since the two variants then differ only in where
            the reset gate acts.
        merge: a Bidirectional wrapper's ``merge_mode``: "concat" or "sum"; None is the
            wrapper's own, else concat.
        backend, dtype: where the layer computes; ``dtype`` None is the backend object's own
            dtype (float32 for a backend name), and one that contradicts a backend object is
            refused. Arguments that contradict a given layer object are refused too.
    Returns:
        an mlxrnn layer; GRU ``reset_after=True`` -> ``variant="reset_after"``, False -> "full".
    """
    dtype = resolve_dtype(backend, dtype)
    weights, found = _source_settings(weights)
    kind = agree("kind", None if kind is None else _keras_kind(kind), found.get("kind"))
    activation = agree("activation", activation_name(activation), found.get("activation")) or "tanh"
    recurrent_activation = agree(
        "recurrent_activation", activation_name(recurrent_activation), found.get("recurrent_activation")
    )
    reset_after = agree("reset_after", reset_after, found.get("reset_after"))
    merge = agree("merge", merge, found.get("merge")) or "concat"
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
    recurrent_first = as_numpy(per_layer[0][1], "recurrent_kernel")
    hidden_size = recurrent_first.shape[0]
    if kind is None:  # the cell from the shapes: recurrent_kernel is (H, G·H)
        if recurrent_first.ndim != 2:
            raise CheckpointError(f"recurrent_kernel has shape {recurrent_first.shape}; expected (H, G·H)")
        kind = kind_from_gates(recurrent_first.shape[1], hidden_size, f"recurrent_kernel {recurrent_first.shape}")
    options = rnn_activation(kind, activation)
    if kind != "rnn" and (recurrent_activation or "sigmoid") != "sigmoid":
        raise ConfigError(f"only recurrent_activation='sigmoid' is supported, got {recurrent_activation!r}")
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
