"""PyTorch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` state dicts <-> mlxrnn layers (see the package
docstring for the layout). torch is never imported: tensors are read through ``.numpy()``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop.common import (
    OUR_GATES,
    TORCH_GATES,
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

_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")
_TORCH_MODES = {
    "rnn": ("rnn", None),
    "rnn_tanh": ("rnn", "tanh"),
    "rnn_relu": ("rnn", "relu"),
    "gru": ("gru", None),
    "lstm": ("lstm", None),
}


def _torch_mode(mode: str, nonlinearity: str | None) -> tuple[str, str | None]:
    key = str(mode).lower()
    if key not in _TORCH_MODES:
        raise ConfigError(
            f"unknown PyTorch mode {mode!r}: use 'rnn' (with nonlinearity), 'RNN_TANH', 'RNN_RELU', 'GRU' or 'LSTM'"
        )
    kind, implied = _TORCH_MODES[key]
    if implied is not None and nonlinearity is not None and nonlinearity.lower() != implied:
        raise ConfigError(f"mode {mode!r} implies nonlinearity {implied!r}, but nonlinearity={nonlinearity!r}")
    return kind, implied or nonlinearity


def _module_settings(source: Any, mode: str | None, nonlinearity: str | None, dropout: float | None):
    """(state dict, mode, nonlinearity, dropout) from a state dict or an ``nn.Module`` (duck-typed:
    torch is not imported). An ``nn.RNN``/``GRU``/``LSTM`` says its own mode, nonlinearity and
    dropout; given arguments must agree with them. Any other module (a whole model) gives its
    state dict, from which ``prefix`` selects the recurrent one."""
    if isinstance(source, Mapping):
        return source, mode, nonlinearity, dropout
    if not callable(getattr(source, "state_dict", None)):
        raise ConfigError(
            f"from_torch takes an nn.RNN/nn.GRU/nn.LSTM module or its state_dict(), got {type(source).__name__}"
        )
    state = source.state_dict()
    own_mode = getattr(source, "mode", None)
    if isinstance(own_mode, str) and own_mode.lower() in _TORCH_MODES:  # an nn.RNNBase
        if mode is not None and _torch_mode(mode, None)[0] != _TORCH_MODES[own_mode.lower()][0]:
            raise ConfigError(f"mode={mode!r} contradicts the module, an nn.{type(source).__name__} ({own_mode})")
        implied = _TORCH_MODES[own_mode.lower()][1]
        nonlinearity = agree("nonlinearity", nonlinearity, implied)
        own_dropout = getattr(source, "dropout", None)
        dropout = float(own_dropout) if dropout is None and isinstance(own_dropout, (int, float)) else dropout
        mode = own_mode
    return state, mode, nonlinearity, dropout


def _prefixes(keys: Iterable[str]) -> list[str]:
    """The prefixes under which ``keys`` hold a PyTorch recurrent module (``"encoder.rnn."``)."""
    marker = "weight_ih_l0"
    return sorted({key[: -len(marker)] for key in keys if key.endswith(marker)})


def _prefix_hint(keys: Iterable[str], prefix: str) -> str:
    """How to pick the recurrent module out of a model's state dict, or "" when there is no guess."""
    found = [p for p in _prefixes(keys) if p != prefix]
    if not found:
        return ""
    if len(found) == 1:
        return f"; it holds a recurrent module under {found[0]!r}: pass prefix={found[0]!r}"
    return f"; it holds recurrent modules under {', '.join(map(repr, found))}: pass prefix= one of them"


def from_torch(
    source: Mapping[str, Any] | Any,
    mode: str | None = None,
    *,
    nonlinearity: str | None = None,
    prefix: str = "",
    dropout: float | None = None,
    backend: Any = None,
    dtype: str | None = None,
) -> Recurrent:
    """Build an mlxrnn layer from a PyTorch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` or its state dict.

    Args:
        source: the module itself, a module holding one (select it with ``prefix``), or a state
            dict ``{"weight_ih_l0": (G·H, D), "weight_hh_l0": (G·H, H), "bias_ih_l0": (G·H,),
            "bias_hh_l0": (G·H,), ..., "weight_ih_l1_reverse": ...}`` of NumPy arrays or CPU
            tensors. Sizes, ``num_layers``, ``bidirectional`` and ``bias`` are read from it.
        mode: "rnn", "gru" or "lstm" — or the module's own ``.mode`` ("RNN_TANH", "RNN_RELU",
            "GRU", "LSTM"). Optional: the cell follows from the shapes (G = 1, 3 or 4 gate
            blocks of H rows), and a module says its own.
        nonlinearity: "tanh" or "relu", for an RNN. Weights cannot tell the two apart: with a
            state dict and no ``mode``/``nonlinearity`` saying "relu", an RNN is tanh (PyTorch's
            default). A module's own ``nonlinearity`` is used.
        prefix: read only keys starting with it (``"encoder.rnn."`` in a model's state dict);
            when a model's keys are given without it, the error names the prefixes that hold one.
        dropout: the layer's dropout between layers; None takes a module's (0 for a state dict).
        backend, dtype: where the layer computes; ``dtype`` None is the backend object's own
            dtype (float32 for a backend name), and one that contradicts a backend object is
            refused.
    Returns:
        an :class:`~mlxrnn.nn.layers.RNN` / ``GRU`` (``variant="reset_after"``) / ``LSTM``;
        batch-first (whatever the module's ``batch_first``), states (L·D, B, H) as PyTorch's.
    Raises:
        CheckpointError for missing/unexpected keys, shapes that fit no cell or not ``mode``, or
        ``proj_size`` (an LSTM's ``weight_hr_l*``); ConfigError for a bad or contradicting mode,
        nonlinearity or dtype.
    """
    dtype = resolve_dtype(backend, dtype)
    state_dict, mode, nonlinearity, dropout = _module_settings(source, mode, nonlinearity, dropout)
    kind, activation = _torch_mode(mode, nonlinearity) if mode is not None else (None, nonlinearity)
    what = f"PyTorch {kind.upper()}" if kind else "PyTorch recurrent"
    entries: dict[tuple[str, int, int], np.ndarray] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        match = _TORCH_KEY.match(name)
        if match is None:
            hint = _prefix_hint(state_dict, prefix) or (
                "; expected only weight_ih_l<k>, weight_hh_l<k>, bias_ih_l<k>, bias_hh_l<k> (+ _reverse)"
            )
            raise CheckpointError(f"unexpected key {key!r} in a {what} state dict{hint}")
        if match.group(1) == "weight_hr":
            raise CheckpointError(
                f"{key!r}: PyTorch LSTMs with proj_size > 0 are not supported (mlxrnn's LSTM has no output projection)"
            )
        entries[(match.group(1), int(match.group(2)), 1 if match.group(3) else 0)] = as_numpy(value, key)
    if not entries:
        raise CheckpointError(
            f"no PyTorch recurrent weights found (looked for keys '{prefix}weight_ih_l0', ...)"
            + _prefix_hint(state_dict, prefix)
        )
    num_layers = 1 + max(index for _, index, _ in entries)
    num_directions = 2 if any(direction for _, _, direction in entries) else 1
    has_bias = any(name.startswith("bias") for name, _, _ in entries)

    def get(name: str, index: int, direction: int) -> np.ndarray:
        try:
            return entries[(name, index, direction)]
        except KeyError:
            raise CheckpointError(
                f"missing key {prefix}{name}_l{index}{'_reverse' if direction else ''} in the PyTorch state dict"
            ) from None

    if kind is None:  # the cell from the shapes: weight_hh_l0 is (G·H, H)
        recurrent = get("weight_hh", 0, 0)
        if recurrent.ndim != 2:
            raise CheckpointError(f"'{prefix}weight_hh_l0' has shape {recurrent.shape}; expected (G·H, H)")
        kind = kind_from_gates(recurrent.shape[0], recurrent.shape[1], f"'{prefix}weight_hh_l0' {recurrent.shape}")
    first = get("weight_ih", 0, 0)
    hidden_size = get("weight_hh", 0, 0).shape[-1]
    gates = len(OUR_GATES[kind])
    GH = gates * hidden_size
    if first.ndim != 2 or first.shape[0] != GH:
        raise CheckpointError(
            f"'{prefix}weight_ih_l0' has shape {first.shape}, which does not fit a PyTorch {kind.upper()} with "
            f"hidden size {hidden_size} ({gates}·H = {GH} rows)"
            + (f": is mode={mode!r} right? (or leave mode out)" if mode is not None else "")
        )
    input_size = first.shape[1]
    directions = {}
    for index in range(num_layers):
        layer_input = input_size if index == 0 else hidden_size * num_directions
        for direction in range(num_directions):
            suffix = f"_l{index}{'_reverse' if direction else ''}"
            w_ih, w_hh = get("weight_ih", index, direction), get("weight_hh", index, direction)
            expect_shape(prefix + "weight_ih" + suffix, w_ih, (GH, layer_input))
            expect_shape(prefix + "weight_hh" + suffix, w_hh, (GH, hidden_size))
            if has_bias:
                b_ih, b_hh = get("bias_ih", index, direction), get("bias_hh", index, direction)
                expect_shape(prefix + "bias_ih" + suffix, b_ih, (GH,))
                expect_shape(prefix + "bias_hh" + suffix, b_hh, (GH,))
            else:
                b_ih, b_hh = np.zeros(GH), np.zeros(GH)
            directions[(index, direction)] = from_two_biases(kind, w_ih.T, w_hh.T, b_ih, b_hh, TORCH_GATES[kind])
    options = rnn_activation(kind, activation)
    if kind == "gru":
        options["variant"] = "reset_after"
    return build_layer(
        kind,
        directions,
        input_size,
        hidden_size,
        num_layers,
        num_directions == 2,
        backend,
        dtype,
        dropout=0.0 if dropout is None else dropout,
        **options,
    )


def to_torch(layer: Recurrent, *, bias: bool = True) -> dict[str, np.ndarray]:
    """The state dict of the equivalent PyTorch module, as NumPy arrays in the layer's dtype.

    Load it with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})`` into
    ``nn.RNN(D, H, num_layers, nonlinearity=..., bias=bias, batch_first=True,
    bidirectional=...)`` (or ``nn.GRU`` / ``nn.LSTM``). The whole bias goes into ``bias_ih_l*``;
    ``bias_hh_l*`` is zero except the GRU candidate block (our ``b_hn``).

    Args:
        bias: False writes a ``bias=False`` state dict; refused if any bias is non-zero.
    Raises:
        ConfigError for layers PyTorch cannot express: a GRU variant other than "reset_after",
        a peephole LSTM, or bidirectional ``merge="sum"`` (PyTorch concatenates).
    """
    kind = check_exportable(layer, "PyTorch", ("reset_after",))
    if layer.bidirectional and layer.merge != "concat":
        raise ConfigError("PyTorch concatenates the two directions; this layer has merge='sum'")
    if not bias:
        check_zero_biases(layer, "PyTorch")
    state: dict[str, np.ndarray] = {}
    for index in range(layer.num_layers):
        for direction in range(layer.num_directions):
            suffix = f"_l{index}{'_reverse' if direction else ''}"
            W_x, W_h, b_ih, b_hh = to_two_biases(kind, numpy_direction(layer, index, direction), TORCH_GATES[kind])
            state["weight_ih" + suffix] = np.ascontiguousarray(W_x.T)
            state["weight_hh" + suffix] = np.ascontiguousarray(W_h.T)
            if bias:
                state["bias_ih" + suffix] = b_ih
                state["bias_hh" + suffix] = b_hh
    return state
