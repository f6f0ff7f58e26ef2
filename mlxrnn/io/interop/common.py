"""What the three frameworks' converters share: gate orders, the gate permutation, checks on
the arrays they are given and on the layers they export, and building the mlxrnn layer.

Our parameters per direction are row-vector matrices W_x (D, G·H), W_h (H, G·H) and a bias
b (G·H,) (+ b_hn (H,) for the reset-after GRU), gate blocks in :data:`OUR_GATES` order. A
framework's matrices, once transposed to input-major, differ from ours only in the order of
their gate blocks (and the sign of the GRU's z block): :func:`permute_gates`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.layers import DIRECTION_NAMES, Recurrent, make_recurrent

#: Gate blocks in our order and in each framework's, named with our letters (u = 1 − z).
OUR_GATES = {name: CELLS[name].gate_names for name in ("rnn", "gru", "lstm")}  # the cells the peers have
TORCH_GATES = {"rnn": ("c",), "gru": ("r", "u", "c"), "lstm": ("u", "f", "c", "o")}  # also mlx.nn
KERAS_GATES = {"rnn": ("c",), "gru": ("u", "r", "c"), "lstm": ("u", "f", "c", "o")}
NEGATED = {"rnn": (), "gru": ("u",), "lstm": ()}  # blocks stored as z = −(our u pre-activation)


#: the number of gate blocks of each cell the frameworks have: how weight shapes tell the cell
KIND_BY_GATES = {len(gates): kind for kind, gates in OUR_GATES.items()}


def resolve_dtype(backend: Any, dtype: str | None) -> str:
    """The dtype to build in: ``dtype``, or a backend object's own (float32 for a backend name).

    A backend *object* computes in the dtype it was made with, so a different ``dtype=`` would
    be ignored without a word: refused instead (ConfigError).
    """
    own = None if backend is None or isinstance(backend, str) else getattr(backend, "dtype_name", None)
    if dtype is None:
        return own or "float32"
    if own is not None and str(dtype) != own:
        raise ConfigError(
            f"the backend object {backend!r} computes in {own} but dtype={dtype!r}; pass dtype={own!r} (or leave it "
            f"out), or a backend made for {dtype} (get_backend(name, {str(dtype)!r}))"
        )
    return str(dtype)


def kind_from_gates(rows: int, hidden_size: int, where: str) -> str:
    """The cell whose fused matrices have ``rows`` = G·H rows for ``hidden_size`` = H (G = 1, 3, 4)."""
    gates, remainder = divmod(rows, hidden_size) if hidden_size else (0, 1)
    if remainder or gates not in KIND_BY_GATES:
        raise CheckpointError(
            f"{where}: {rows} gate rows for hidden size {hidden_size} is not 1 (RNN), 3 (GRU) or 4 (LSTM) blocks"
        )
    return KIND_BY_GATES[gates]


def activation_name(function: Any) -> str | None:
    """A framework's activation (a function such as ``keras.activations.tanh`` or ``nn.relu``, or
    its name) -> its lower-case name; None stays None."""
    if function is None or isinstance(function, str):
        return None if function is None else function.lower()
    name = getattr(function, "__name__", None)
    return name.lower() if isinstance(name, str) else repr(function)


def agree(what: str, given: Any, found: Any) -> Any:
    """The value of a setting given both as an argument and by the source object: they must agree."""
    if given is not None and found is not None and given != found:
        raise ConfigError(f"{what}={given!r} contradicts the source, which has {what}={found!r}; leave {what} out")
    return found if given is None else given


def as_numpy(value: Any, name: str) -> np.ndarray:
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


def expect_shape(name: str, array: np.ndarray, shape: tuple[int, ...], hint: str = "") -> None:
    if array.shape != shape:
        raise CheckpointError(f"{name!r} has shape {array.shape}; expected {shape}{hint}")


def permute_gates(array: np.ndarray, src: tuple, dst: tuple, negate: Iterable[str], axis: int) -> np.ndarray:
    """Reorder the gate blocks of ``array`` along ``axis`` from ``src`` to ``dst`` order, negating
    the blocks in ``negate``. Negation is its own inverse, so the same call converts both ways."""
    blocks = dict(zip(src, np.split(array, len(src), axis=axis)))
    negate = set(negate)
    return np.concatenate([-blocks[g] if g in negate else blocks[g] for g in dst], axis=axis)


def layer_kind(layer: Recurrent) -> str:
    if not isinstance(layer, Recurrent):
        raise ConfigError(f"expected an mlxrnn RNN, GRU or LSTM layer, got {type(layer).__name__}")
    if layer.cell_name not in OUR_GATES:
        raise ConfigError(f"PyTorch, Keras and mlx.nn have no {layer.cell_name!r} cell: only {', '.join(OUR_GATES)} "
                          "layers convert")
    return layer.cell_name


def check_exportable(layer: Recurrent, target: str, gru_variants: tuple[str, ...]) -> str:
    kind = layer_kind(layer)
    options = layer.cell_options
    if kind == "lstm" and options.get("peephole"):
        raise ConfigError(f"{target} has no peephole LSTM; this layer (peephole=True) cannot be exported")
    if kind == "gru" and options.get("variant", "full") not in gru_variants:
        raise ConfigError(
            f"{target} GRU layers correspond to variant {' or '.join(map(repr, gru_variants))}; this layer has "
            f"variant={options.get('variant', 'full')!r}"
        )
    return kind


def numpy_direction(layer: Recurrent, layer_index: int, direction: int) -> dict[str, np.ndarray]:
    prefix = f"l{layer_index}.{DIRECTION_NAMES[direction]}."
    return {
        name[len(prefix) :]: np.asarray(layer.xp.to_numpy(value))
        for name, value in layer.params.items()
        if name.startswith(prefix)
    }


def check_zero_biases(layer: Recurrent, target: str) -> None:
    for name, value in layer.params.items():
        if name.rsplit(".", 1)[-1] in ("b", "b_hn") and np.any(np.asarray(layer.xp.to_numpy(value)) != 0):
            raise ConfigError(f"cannot export to {target} without biases: {name!r} is non-zero (export with bias=True)")


def build_layer(
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


def rnn_activation(kind: str, activation: str | None) -> dict[str, Any]:
    """The cell options for ``kind``; RNN activation must be tanh or relu, others tanh."""
    if kind == "rnn":
        activation = "tanh" if activation is None else str(activation).lower()
        if activation not in ("tanh", "relu"):
            raise ConfigError(f"RNN nonlinearity must be 'tanh' or 'relu', got {activation!r}")
        return {"activation": activation}
    if activation not in (None, "tanh"):
        raise ConfigError(f"{kind.upper()} layers support only the tanh activation, got {activation!r}")
    return {}


def from_two_biases(kind: str, W_x, W_h, b_in, b_rec, src_gates: tuple) -> dict[str, np.ndarray]:
    """Input-major matrices (·, G·H) and input/recurrent biases in ``src_gates`` order -> our params."""
    ours, negate = OUR_GATES[kind], NEGATED[kind]
    params = {
        "W_x": permute_gates(W_x, src_gates, ours, negate, axis=1),
        "W_h": permute_gates(W_h, src_gates, ours, negate, axis=1),
    }
    b_in = permute_gates(b_in, src_gates, ours, negate, axis=0)
    b_rec = permute_gates(b_rec, src_gates, ours, negate, axis=0)
    if kind == "gru":
        H = b_in.shape[0] // 3
        params["b"] = np.concatenate([b_in[: 2 * H] + b_rec[: 2 * H], b_in[2 * H :]])
        params["b_hn"] = b_rec[2 * H :]
    else:
        params["b"] = b_in + b_rec
    return params


def to_two_biases(kind: str, params: dict[str, np.ndarray], dst_gates: tuple):
    """Our params -> (W_x, W_h, b_in, b_rec) in ``dst_gates`` order; the recurrent bias holds only b_hn."""
    ours, negate = OUR_GATES[kind], NEGATED[kind]
    b = params["b"]
    b_rec = np.zeros_like(b)
    if kind == "gru":
        H = b.shape[0] // 3
        b_rec[2 * H :] = params["b_hn"]
    return tuple(
        permute_gates(a, ours, dst_gates, negate, axis=a.ndim - 1) for a in (params["W_x"], params["W_h"], b, b_rec)
    )
