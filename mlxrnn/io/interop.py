"""Load and save recurrent weights in the layouts of PyTorch, Keras and ``mlx.nn``.

Everything here is NumPy: a PyTorch state dict is a mapping of names to arrays (CPU tensors
are accepted too, converted with ``.detach().cpu().numpy()``), a Keras layer's weights are the
list ``layer.get_weights()`` returns, an ``mlx.nn`` layer's parameters are a (flat or nested)
dict such as ``dict(tree_flatten(module.parameters()))``. Neither torch, TensorFlow nor MLX is
imported by this module. ``from_*`` returns an mlxrnn layer on any backend; ``to_*`` returns
NumPy arrays in the layer's dtype.

How the layouts map onto ours (row vectors: W_x (D, G·H), W_h (H, G·H), b (G·H,); gate blocks
GRU [u, r, c], LSTM [u, f, c̃, o]):

================  ==========================  =================================  ============
                  PyTorch nn.RNN/GRU/LSTM     Keras SimpleRNN/GRU/LSTM           mlx.nn
================  ==========================  =================================  ============
matrices          (G·H, D), (G·H, H): W.T     kernel (D, G·H), recurrent (H,G·H)  as PyTorch
GRU gate order    r, z, n                     z, r, h                            r, z, n
LSTM gate order   i, f, g, o                  i, f, c, o                         i, f, g, o
biases            b_ih + b_hh (two)           one; GRU reset_after: (2, 3H)      one (+ bhn)
================  ==========================  =================================  ============

* GRU: all three frameworks write h = z ∗ h_prev + (1 − z) ∗ ñ, so their z is our 1 − Γ_u and
  σ(−a) = 1 − σ(a): the z block's weights and bias are negated. PyTorch, mlx.nn and Keras
  ``reset_after=True`` are our ``variant="reset_after"`` (the recurrent candidate bias is our
  ``b_hn``); Keras ``reset_after=False`` is our ``variant="full"``.
* Two biases (PyTorch; Keras GRU ``reset_after=True``): b = b_ih + b_hh on every block except
  the GRU candidate, where b_c = b_ih_n and b_hn = b_hh_n. The split cannot be recovered, so
  saving puts the whole bias on the input side and zeros on the recurrent side (except b_hn).
  The round trip source → mlxrnn → source therefore gives identical outputs always, and
  bit-identical weights when the source's recurrent bias was zero (outside the GRU candidate
  block); mlxrnn → source → mlxrnn is bit-identical always. Keras single-bias layouts and
  mlx.nn round-trip bit-identically.
* Not representable, refused with a one-line error: PyTorch ``proj_size`` (``weight_hr_l*``),
  activations other than tanh/ReLU (RNN) or tanh/sigmoid (GRU, LSTM), our peephole LSTM,
  ``simple`` GRU, minGRU and minLSTM (no framework has them), our ``full`` GRU in PyTorch/mlx.nn, Keras
  Bidirectional ``merge_mode`` other than concat/sum, multi-layer or bidirectional mlx.nn.
* ``bias=False`` sources load with zero biases (which training may change); saving with
  ``bias=False`` omits the biases and refuses when any of them is non-zero.
* Our layers are batch-first, output zeros at padded steps, and take states as (L·D, B, H) —
  exactly what PyTorch returns; Keras returns one state per direction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.layers import DIRECTION_NAMES, Recurrent, make_recurrent

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras", "from_mlx_nn", "to_mlx_nn"]

#: Gate blocks in our order and in each framework's, named with our letters (u = 1 − z).
OUR_GATES = {name: CELLS[name].gate_names for name in ("rnn", "gru", "lstm")}  # the cells the peers have
TORCH_GATES = {"rnn": ("c",), "gru": ("r", "u", "c"), "lstm": ("u", "f", "c", "o")}  # also mlx.nn
KERAS_GATES = {"rnn": ("c",), "gru": ("u", "r", "c"), "lstm": ("u", "f", "c", "o")}
NEGATED = {"rnn": (), "gru": ("u",), "lstm": ()}  # blocks stored as z = −(our u pre-activation)


# --- shared helpers ---------------------------------------------------------------------------
def _as_numpy(value: Any, name: str) -> np.ndarray:
    """An array-like (NumPy, MLX array, CPU torch tensor) -> float64 NumPy copy."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as error:
        raise CheckpointError(f"{name!r} cannot be converted to a NumPy array ({error})") from error
    if array.dtype.kind not in "fiu":
        raise CheckpointError(f"{name!r} must hold real numbers; got dtype {array.dtype}")
    return array.astype(np.float64)


def _expect_shape(name: str, array: np.ndarray, shape: tuple[int, ...], hint: str = "") -> None:
    if array.shape != shape:
        raise CheckpointError(f"{name!r} has shape {array.shape}; expected {shape}{hint}")


def _permute_gates(array: np.ndarray, src: tuple, dst: tuple, negate: Iterable[str], axis: int) -> np.ndarray:
    """Reorder the gate blocks of ``array`` along ``axis`` from ``src`` to ``dst`` order, negating
    the blocks in ``negate``. Negation is its own inverse, so the same call converts both ways."""
    blocks = dict(zip(src, np.split(array, len(src), axis=axis)))
    negate = set(negate)
    return np.concatenate([-blocks[g] if g in negate else blocks[g] for g in dst], axis=axis)


def _layer_kind(layer: Recurrent) -> str:
    if not isinstance(layer, Recurrent):
        raise ConfigError(f"expected an mlxrnn RNN, GRU or LSTM layer, got {type(layer).__name__}")
    if layer.cell_name not in OUR_GATES:
        raise ConfigError(f"PyTorch, Keras and mlx.nn have no {layer.cell_name!r} cell: only {', '.join(OUR_GATES)} "
                          "layers convert")
    return layer.cell_name


def _check_exportable(layer: Recurrent, target: str, gru_variants: tuple[str, ...]) -> str:
    kind = _layer_kind(layer)
    options = layer.cell_options
    if kind == "lstm" and options.get("peephole"):
        raise ConfigError(f"{target} has no peephole LSTM; this layer (peephole=True) cannot be exported")
    if kind == "gru" and options.get("variant", "full") not in gru_variants:
        raise ConfigError(
            f"{target} GRU layers correspond to variant {' or '.join(map(repr, gru_variants))}; this layer has "
            f"variant={options.get('variant', 'full')!r}"
        )
    return kind


def _numpy_direction(layer: Recurrent, layer_index: int, direction: int) -> dict[str, np.ndarray]:
    prefix = f"l{layer_index}.{DIRECTION_NAMES[direction]}."
    return {
        name[len(prefix) :]: np.asarray(layer.xp.to_numpy(value))
        for name, value in layer.params.items()
        if name.startswith(prefix)
    }


def _check_zero_biases(layer: Recurrent, target: str) -> None:
    for name, value in layer.params.items():
        if name.rsplit(".", 1)[-1] in ("b", "b_hn") and np.any(np.asarray(layer.xp.to_numpy(value)) != 0):
            raise ConfigError(f"cannot export to {target} without biases: {name!r} is non-zero (export with bias=True)")


def _build_layer(
    kind: str,
    directions: dict[tuple[int, int], dict[str, np.ndarray]],
    input_size: int,
    hidden_size: int,
    num_layers: int,
    bidirectional: bool,
    backend: Any,
    dtype: str,
    **options: Any,
) -> Recurrent:
    """An mlxrnn layer whose parameters are ``directions[(layer, direction)]`` (float64, our layout)."""
    layer = make_recurrent(
        kind,
        input_size,
        hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        backend=backend,
        dtype=dtype,
        **options,
    )
    flat = {
        f"l{index}.{DIRECTION_NAMES[direction]}.{name}": value
        for (index, direction), params in directions.items()
        for name, value in params.items()
    }
    layer.load_parameters(flat)
    return layer


def _rnn_activation(kind: str, activation: str | None) -> dict[str, Any]:
    """The cell options for ``kind``; RNN activation must be tanh or relu, others tanh."""
    if kind == "rnn":
        activation = "tanh" if activation is None else str(activation).lower()
        if activation not in ("tanh", "relu"):
            raise ConfigError(f"RNN nonlinearity must be 'tanh' or 'relu', got {activation!r}")
        return {"activation": activation}
    if activation not in (None, "tanh"):
        raise ConfigError(f"{kind.upper()} layers support only the tanh activation, got {activation!r}")
    return {}


# --- PyTorch ------------------------------------------------------------------------------------
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


def from_torch(
    state_dict: Mapping[str, Any],
    mode: str,
    *,
    nonlinearity: str | None = None,
    prefix: str = "",
    dropout: float = 0.0,
    backend: Any = None,
    dtype: str = "float32",
) -> Recurrent:
    """Build an mlxrnn layer from a PyTorch ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` state dict.

    Args:
        state_dict: ``{"weight_ih_l0": (G·H, D), "weight_hh_l0": (G·H, H), "bias_ih_l0": (G·H,),
            "bias_hh_l0": (G·H,), ..., "weight_ih_l1_reverse": ...}`` as NumPy arrays (or CPU
            tensors). Sizes, ``num_layers``, ``bidirectional`` and ``bias`` are read from it.
        mode: "rnn", "gru" or "lstm" — or the module's own ``.mode`` ("RNN_TANH", "RNN_RELU",
            "GRU", "LSTM").
        nonlinearity: "tanh" (default) or "relu", for mode "rnn".
        prefix: read only keys starting with it (e.g. ``"encoder.rnn."`` in a model's state dict).
        dropout, backend, dtype: passed to the layer (dropout is not part of a state dict).
    Returns:
        an :class:`~mlxrnn.nn.layers.RNN` / ``GRU`` (``variant="reset_after"``) / ``LSTM``;
        batch-first, states (L·D, B, H) as PyTorch's.
    Raises:
        CheckpointError for missing/unexpected keys, shapes that do not fit ``mode``, or
        ``proj_size`` (an LSTM's ``weight_hr_l*``); ConfigError for a bad mode.
    """
    kind, activation = _torch_mode(mode, nonlinearity)
    entries: dict[tuple[str, int, int], np.ndarray] = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        match = _TORCH_KEY.match(name)
        if match is None:
            raise CheckpointError(f"unexpected key {key!r} in a PyTorch {kind.upper()} state dict")
        if match.group(1) == "weight_hr":
            raise CheckpointError(
                f"{key!r}: PyTorch LSTMs with proj_size > 0 are not supported (mlxrnn's LSTM has no output projection)"
            )
        entries[(match.group(1), int(match.group(2)), 1 if match.group(3) else 0)] = _as_numpy(value, key)
    if not entries:
        raise CheckpointError(f"no PyTorch recurrent weights found (looked for keys '{prefix}weight_ih_l0', ...)")
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

    first = get("weight_ih", 0, 0)
    hidden_size = get("weight_hh", 0, 0).shape[-1]
    gates = len(OUR_GATES[kind])
    GH = gates * hidden_size
    if first.ndim != 2 or first.shape[0] != GH:
        raise CheckpointError(
            f"'{prefix}weight_ih_l0' has shape {first.shape}, which does not fit a PyTorch {kind.upper()} with "
            f"hidden size {hidden_size} ({gates}·H = {GH} rows): is mode={mode!r} right?"
        )
    input_size = first.shape[1]
    directions = {}
    for index in range(num_layers):
        layer_input = input_size if index == 0 else hidden_size * num_directions
        for direction in range(num_directions):
            suffix = f"_l{index}{'_reverse' if direction else ''}"
            w_ih, w_hh = get("weight_ih", index, direction), get("weight_hh", index, direction)
            _expect_shape(prefix + "weight_ih" + suffix, w_ih, (GH, layer_input))
            _expect_shape(prefix + "weight_hh" + suffix, w_hh, (GH, hidden_size))
            if has_bias:
                b_ih, b_hh = get("bias_ih", index, direction), get("bias_hh", index, direction)
                _expect_shape(prefix + "bias_ih" + suffix, b_ih, (GH,))
                _expect_shape(prefix + "bias_hh" + suffix, b_hh, (GH,))
            else:
                b_ih, b_hh = np.zeros(GH), np.zeros(GH)
            directions[(index, direction)] = _from_two_biases(kind, w_ih.T, w_hh.T, b_ih, b_hh, TORCH_GATES[kind])
    options = _rnn_activation(kind, activation)
    if kind == "gru":
        options["variant"] = "reset_after"
    return _build_layer(
        kind,
        directions,
        input_size,
        hidden_size,
        num_layers,
        num_directions == 2,
        backend,
        dtype,
        dropout=dropout,
        **options,
    )


def _from_two_biases(kind: str, W_x, W_h, b_in, b_rec, src_gates: tuple) -> dict[str, np.ndarray]:
    """Input-major matrices (·, G·H) and input/recurrent biases in ``src_gates`` order -> our params."""
    ours, negate = OUR_GATES[kind], NEGATED[kind]
    params = {
        "W_x": _permute_gates(W_x, src_gates, ours, negate, axis=1),
        "W_h": _permute_gates(W_h, src_gates, ours, negate, axis=1),
    }
    b_in = _permute_gates(b_in, src_gates, ours, negate, axis=0)
    b_rec = _permute_gates(b_rec, src_gates, ours, negate, axis=0)
    if kind == "gru":
        H = b_in.shape[0] // 3
        params["b"] = np.concatenate([b_in[: 2 * H] + b_rec[: 2 * H], b_in[2 * H :]])
        params["b_hn"] = b_rec[2 * H :]
    else:
        params["b"] = b_in + b_rec
    return params


def _to_two_biases(kind: str, params: dict[str, np.ndarray], dst_gates: tuple):
    """Our params -> (W_x, W_h, b_in, b_rec) in ``dst_gates`` order; the recurrent bias holds only b_hn."""
    ours, negate = OUR_GATES[kind], NEGATED[kind]
    b = params["b"]
    b_rec = np.zeros_like(b)
    if kind == "gru":
        H = b.shape[0] // 3
        b_rec[2 * H :] = params["b_hn"]
    return tuple(
        _permute_gates(a, ours, dst_gates, negate, axis=a.ndim - 1) for a in (params["W_x"], params["W_h"], b, b_rec)
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
    kind = _check_exportable(layer, "PyTorch", ("reset_after",))
    if layer.bidirectional and layer.merge != "concat":
        raise ConfigError("PyTorch concatenates the two directions; this layer has merge='sum'")
    if not bias:
        _check_zero_biases(layer, "PyTorch")
    state: dict[str, np.ndarray] = {}
    for index in range(layer.num_layers):
        for direction in range(layer.num_directions):
            suffix = f"_l{index}{'_reverse' if direction else ''}"
            W_x, W_h, b_ih, b_hh = _to_two_biases(kind, _numpy_direction(layer, index, direction), TORCH_GATES[kind])
            state["weight_ih" + suffix] = np.ascontiguousarray(W_x.T)
            state["weight_hh" + suffix] = np.ascontiguousarray(W_h.T)
            if bias:
                state["bias_ih" + suffix] = b_ih
                state["bias_hh" + suffix] = b_hh
    return state


# --- Keras --------------------------------------------------------------------------------------
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
    options = _rnn_activation(kind, activation)
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
    first = _as_numpy(per_layer[0][0], "kernel")
    hidden_size = _as_numpy(per_layer[0][1], "recurrent_kernel").shape[0]
    gates = len(OUR_GATES[kind])
    GH = gates * hidden_size
    if first.ndim != 2 or first.shape[1] != GH:
        raise CheckpointError(
            f"kernel has shape {first.shape}, which does not fit a Keras {kind.upper()} with {hidden_size} units"
        )
    input_size = first.shape[0]
    if kind == "gru":
        if has_bias:
            inferred = _as_numpy(per_layer[0][2], "bias").ndim == 2
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
            kernel = _as_numpy(part[0], f"{where} kernel")
            recurrent = _as_numpy(part[1], f"{where} recurrent_kernel")
            _expect_shape(f"{where} kernel", kernel, (layer_input, GH))
            _expect_shape(f"{where} recurrent_kernel", recurrent, (hidden_size, GH))
            two_biases = kind == "gru" and reset_after
            if has_bias:
                bias = _as_numpy(part[2], f"{where} bias")
                _expect_shape(f"{where} bias", bias, (2, GH) if two_biases else (GH,))
            else:
                bias = np.zeros((2, GH) if two_biases else (GH,))
            b_in, b_rec = (bias[0], bias[1]) if two_biases else (bias, np.zeros(GH))
            params = _from_two_biases(kind, kernel, recurrent, b_in, b_rec, KERAS_GATES[kind])
            if kind == "gru" and not reset_after:
                del params["b_hn"]  # the "full" GRU has no recurrent candidate bias (b_rec was zero)
            directions[(index, direction)] = params
    return _build_layer(
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
    kind = _check_exportable(layer, "Keras", ("full", "reset_after"))
    if not use_bias:
        _check_zero_biases(layer, "Keras")
    reset_after = kind == "gru" and layer.cell_options.get("variant") == "reset_after"
    stack = []
    for index in range(layer.num_layers):
        arrays: list[np.ndarray] = []
        for direction in range(layer.num_directions):
            params = _numpy_direction(layer, index, direction)
            if kind == "gru" and not reset_after:
                params = {**params, "b_hn": np.zeros(layer.hidden_size, dtype=params["b"].dtype)}
            kernel, recurrent, b_in, b_rec = _to_two_biases(kind, params, KERAS_GATES[kind])
            arrays += [kernel, recurrent]
            if use_bias:
                arrays.append(np.stack([b_in, b_rec]) if reset_after else b_in)
        stack.append(arrays)
    return stack[0] if layer.num_layers == 1 else stack


# --- mlx.nn -------------------------------------------------------------------------------------
_MLX_NAMES = {
    "rnn": {"W_x": "Wxh", "W_h": "Whh", "b": "bias"},
    "gru": {"W_x": "Wx", "W_h": "Wh", "b": "b", "b_hn": "bhn"},
    "lstm": {"W_x": "Wx", "W_h": "Wh", "b": "bias"},
}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict/list of arrays, or a list of (name, array) pairs, -> {"a.b.name": array}."""
    if isinstance(tree, Mapping):
        items: Iterable = tree.items()
    elif (
        isinstance(tree, (list, tuple))
        and tree
        and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in tree)
    ):
        items = tree  # tree_flatten output: [(name, array), ...]
    elif isinstance(tree, (list, tuple)):
        items = ((str(i), value) for i, value in enumerate(tree))
    else:
        return {prefix[:-1]: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _mlx_params(parameters: Any, prefix: str | None) -> dict[str, np.ndarray]:
    flat = _flatten(parameters)
    if prefix is not None:
        flat = {key[len(prefix) :]: value for key, value in flat.items() if key.startswith(prefix)}
    if not flat:
        raise CheckpointError(f"no mlx.nn parameters found{f' under prefix {prefix!r}' if prefix else ''}")
    modules = {key.rpartition(".")[0] for key in flat}
    if len(modules) != 1:
        raise ConfigError(
            f"the parameters hold several modules ({', '.join(sorted(m or '<top>' for m in modules))}); "
            "pass prefix='<module path>.' to choose one"
        )
    (module,) = modules
    strip = len(module) + 1 if module else 0
    return {key[strip:]: _as_numpy(value, key) for key, value in flat.items()}


def from_mlx_nn(
    parameters: Any,
    kind: str | None = None,
    *,
    nonlinearity: str = "tanh",
    prefix: str | None = None,
    backend: Any = None,
    dtype: str = "float32",
) -> Recurrent:
    """Build an mlxrnn layer from an ``mlx.nn.RNN`` / ``GRU`` / ``LSTM`` parameter tree.

    Args:
        parameters: ``module.parameters()`` (nested), ``tree_flatten(module.parameters())`` (pairs)
            or a dict of them; values are anything ``np.asarray`` takes (MLX arrays do).
            RNN: Wxh (H, D), Whh (H, H), bias (H,); GRU: Wx (3H, D) [r, z, n], Wh (3H, H), b (3H,),
            bhn (H,); LSTM: Wx (4H, D) [i, f, g, o], Wh (4H, H), bias (4H,). Biases may be absent.
        kind: "rnn", "gru" or "lstm"; inferred from the names and shapes when None.
        nonlinearity: the RNN's ``nonlinearity``: "tanh" (``None`` in mlx.nn) or "relu" (``nn.relu``).
        prefix: selects one module in a model's parameters (``"encoder.rnn."``).
    Returns:
        a single-layer unidirectional mlxrnn layer (GRU: ``variant="reset_after"``).
    """
    params = _mlx_params(parameters, prefix)
    if kind is None:
        if "Wxh" in params:
            kind = "rnn"
        elif "Wx" in params and "Wh" in params:
            kind = "gru" if params["Wx"].shape[0] == 3 * params["Wh"].shape[-1] else "lstm"
        else:
            raise CheckpointError(f"cannot tell the mlx.nn layer from parameters {sorted(params)}; pass kind=")
    kind = str(kind).lower()
    if kind not in _MLX_NAMES:
        raise ConfigError(f"unknown mlx.nn layer kind {kind!r}: use 'rnn', 'gru' or 'lstm'")
    names = _MLX_NAMES[kind]
    bias_names = [n for ours, n in names.items() if ours.startswith("b")]
    present = [n for n in bias_names if n in params]
    expected = {names["W_x"], names["W_h"], *present}
    if set(params) != expected or present not in ([], bias_names):
        raise CheckpointError(
            f"mlx.nn {kind.upper()} parameters must be {sorted(names.values())} (biases optional); got {sorted(params)}"
        )
    W_x, W_h = params[names["W_x"]], params[names["W_h"]]
    hidden_size = W_h.shape[-1]
    GH = len(OUR_GATES[kind]) * hidden_size
    if W_x.ndim != 2 or W_x.shape[0] != GH:
        raise CheckpointError(f"{names['W_x']!r} has shape {W_x.shape}; an mlx.nn {kind.upper()} needs ({GH}, D)")
    _expect_shape(names["W_h"], W_h, (GH, hidden_size))
    b = params.get(names["b"], np.zeros(GH))
    _expect_shape(names["b"], b, (GH,))
    b_rec = np.zeros(GH)
    if kind == "gru":
        b_rec[2 * hidden_size :] = params.get("bhn", np.zeros(hidden_size))
        _expect_shape("bhn", b_rec[2 * hidden_size :], (hidden_size,))
    directions = {(0, 0): _from_two_biases(kind, W_x.T, W_h.T, b, b_rec, TORCH_GATES[kind])}
    options = _rnn_activation(kind, nonlinearity if kind == "rnn" else None)
    if kind == "gru":
        options["variant"] = "reset_after"
    return _build_layer(kind, directions, W_x.shape[1], hidden_size, 1, False, backend, dtype, **options)


def to_mlx_nn(layer: Recurrent, *, bias: bool = True) -> dict[str, np.ndarray]:
    """The flat parameter dict of the equivalent ``mlx.nn`` layer (NumPy, the layer's dtype).

    Load with ``module.update(tree_map(mx.array, to_mlx_nn(layer)))`` into
    ``nn.RNN(D, H, bias=bias, nonlinearity=nn.relu or None)``, ``nn.GRU(D, H, bias=bias)`` or
    ``nn.LSTM(D, H, bias=bias)``. The layer must be single-layer and unidirectional (mlx.nn has
    no stacked or bidirectional layers), a GRU must be variant "reset_after".

    Args:
        bias: False omits the biases (for ``bias=False`` modules); refused if any is non-zero.
    """
    kind = _check_exportable(layer, "mlx.nn", ("reset_after",))
    if layer.num_layers != 1 or layer.bidirectional:
        raise ConfigError(
            f"mlx.nn recurrent layers are single-layer and unidirectional; this layer has num_layers="
            f"{layer.num_layers}, bidirectional={layer.bidirectional} (export each direction separately)"
        )
    if not bias:
        _check_zero_biases(layer, "mlx.nn")
    params = _numpy_direction(layer, 0, 0)
    W_x, W_h, b, b_rec = _to_two_biases(kind, params, TORCH_GATES[kind])
    names = _MLX_NAMES[kind]
    out = {names["W_x"]: np.ascontiguousarray(W_x.T), names["W_h"]: np.ascontiguousarray(W_h.T)}
    if bias:
        out[names["b"]] = b
        if kind == "gru":
            out["bhn"] = b_rec[2 * layer.hidden_size :]
    return out
