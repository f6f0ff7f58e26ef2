"""``mlx.nn.RNN`` / ``GRU`` / ``LSTM`` parameter trees <-> mlxrnn layers (see the package docstring
for the layout). MLX is never imported: values are read with ``np.asarray``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop.common import (
    OUR_GATES,
    TORCH_GATES,
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
    return {key[strip:]: as_numpy(value, key) for key, value in flat.items()}


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
    expect_shape(names["W_h"], W_h, (GH, hidden_size))
    b = params.get(names["b"], np.zeros(GH))
    expect_shape(names["b"], b, (GH,))
    b_rec = np.zeros(GH)
    if kind == "gru":
        b_rec[2 * hidden_size :] = params.get("bhn", np.zeros(hidden_size))
        expect_shape("bhn", b_rec[2 * hidden_size :], (hidden_size,))
    directions = {(0, 0): from_two_biases(kind, W_x.T, W_h.T, b, b_rec, TORCH_GATES[kind])}
    options = rnn_activation(kind, nonlinearity if kind == "rnn" else None)
    if kind == "gru":
        options["variant"] = "reset_after"
    return build_layer(kind, directions, W_x.shape[1], hidden_size, 1, False, backend, dtype, **options)


def to_mlx_nn(layer: Recurrent, *, bias: bool = True) -> dict[str, np.ndarray]:
    """The flat parameter dict of the equivalent ``mlx.nn`` layer (NumPy, the layer's dtype).

    Load with ``module.update(tree_map(mx.array, to_mlx_nn(layer)))`` into
    ``nn.RNN(D, H, bias=bias, nonlinearity=nn.relu or None)``, ``nn.GRU(D, H, bias=bias)`` or
    ``nn.LSTM(D, H, bias=bias)``. The layer must be single-layer and unidirectional (mlx.nn has
    no stacked or bidirectional layers), a GRU must be variant "reset_after".

    Args:
        bias: False omits the biases (for ``bias=False`` modules); refused if any is non-zero.
    """
    kind = check_exportable(layer, "mlx.nn", ("reset_after",))
    if layer.num_layers != 1 or layer.bidirectional:
        raise ConfigError(
            f"mlx.nn recurrent layers are single-layer and unidirectional; this layer has num_layers="
            f"{layer.num_layers}, bidirectional={layer.bidirectional} (export each direction separately)"
        )
    if not bias:
        check_zero_biases(layer, "mlx.nn")
    params = numpy_direction(layer, 0, 0)
    W_x, W_h, b, b_rec = to_two_biases(kind, params, TORCH_GATES[kind])
    names = _MLX_NAMES[kind]
    out = {names["W_x"]: np.ascontiguousarray(W_x.T), names["W_h"]: np.ascontiguousarray(W_h.T)}
    if bias:
        out[names["b"]] = b
        if kind == "gru":
            out["bhn"] = b_rec[2 * layer.hidden_size :]
    return out
