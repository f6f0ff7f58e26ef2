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


def _recurrent_modules(flat: Mapping[str, Any]) -> list[str]:
    """The module paths (``"encoder.rnn."``) whose parameters look like an mlx.nn RNN/GRU/LSTM."""
    modules: dict[str, set[str]] = {}
    for key in flat:
        module, _, name = key.rpartition(".")
        modules.setdefault(f"{module}." if module else "", set()).add(name)
    return sorted(m for m, names in modules.items() if "Wxh" in names or {"Wx", "Wh"} <= names)


def _mlx_params(parameters: Any, prefix: str | None) -> dict[str, np.ndarray]:
    flat = _flatten(parameters)
    selected = flat
    if prefix is not None:
        selected = {key[len(prefix) :]: value for key, value in flat.items() if key.startswith(prefix)}
    candidates = [m for m in _recurrent_modules(flat) if m != (prefix or "")]
    hint = ""
    if len(candidates) == 1:
        hint = f"; pass prefix={candidates[0]!r} (the recurrent module there)"
    elif candidates:
        hint = f"; pass prefix= one of {', '.join(map(repr, candidates))} (the recurrent modules there)"
    if not selected:
        raise CheckpointError(f"no mlx.nn parameters found{f' under prefix {prefix!r}' if prefix else ''}{hint}")
    modules = {key.rpartition(".")[0] for key in selected}
    if len(modules) != 1:
        raise ConfigError(
            f"the parameters hold several modules ({', '.join(sorted(m or '<top>' for m in modules))})"
            + (hint or "; pass prefix='<module path>.' to choose one")
        )
    (module,) = modules
    strip = len(module) + 1 if module else 0
    return {key[strip:]: as_numpy(value, key) for key, value in selected.items()}


def _submodule(module: Any, prefix: str | None) -> Any:
    """The child of an mlx.nn module at ``prefix`` ("encoder.layers.0."), or None if not found."""
    for part in (prefix or "").split(".")[:-1] if prefix else []:
        if isinstance(module, Mapping) and part in module:
            module = module[part]
        elif isinstance(module, (list, tuple)) and part.isdigit() and int(part) < len(module):
            module = module[int(part)]
        else:
            return None
    return module


def _module_settings(source: Any, kind: str | None, nonlinearity: str | None, prefix: str | None):
    """(parameters, kind, nonlinearity) from a parameter tree or an ``mlx.nn.Module`` (duck-typed:
    MLX is not imported). A recurrent module (the whole source, or the one at ``prefix``) says its
    own kind and nonlinearity; given arguments must agree with them."""
    if not callable(getattr(source, "parameters", None)):
        return source, kind, nonlinearity
    module = _submodule(source, prefix)
    own_kind = type(module).__name__.lower() if module is not None else None
    if own_kind in _MLX_NAMES:
        kind = agree("kind", None if kind is None else str(kind).lower(), own_kind)
        if own_kind == "rnn":
            nonlinearity = agree("nonlinearity", activation_name(nonlinearity), activation_name(module.nonlinearity))
    return source.parameters(), kind, nonlinearity


def from_mlx_nn(
    parameters: Any,
    kind: str | None = None,
    *,
    nonlinearity: str | None = None,
    prefix: str | None = None,
    backend: Any = None,
    dtype: str | None = None,
) -> Recurrent:
    """Build an mlxrnn layer from an ``mlx.nn.RNN`` / ``GRU`` / ``LSTM`` or its parameter tree.

    Args:
        parameters: the module itself (or a model holding one: select it with ``prefix``),
            ``module.parameters()`` (nested), ``tree_flatten(module.parameters())`` (pairs) or a
            dict of them; values are anything ``np.asarray`` takes (MLX arrays do).
            RNN: Wxh (H, D), Whh (H, H), bias (H,); GRU: Wx (3H, D) [r, z, n], Wh (3H, H), b (3H,),
            bhn (H,); LSTM: Wx (4H, D) [i, f, g, o], Wh (4H, H), bias (4H,). Biases may be absent.
        kind: "rnn", "gru" or "lstm"; when None, a module's class says it, else the names and
            shapes (Wh has G·H rows: 3 for a GRU, 4 for an LSTM).
        nonlinearity: the RNN's ``nonlinearity``: "tanh" (``None`` in mlx.nn) or "relu" (``nn.relu``).
            Weights cannot tell the two apart: None takes a module's own, and is tanh for a
            parameter tree.
        prefix: selects one module in a model's parameters (``"encoder.rnn."``); a model's
            parameters given without it fail naming the prefixes that hold a recurrent module.
        backend, dtype: where the layer computes; ``dtype`` None is the backend object's own
            dtype (float32 for a backend name), and one that contradicts a backend object is
            refused.
    Returns:
        a single-layer unidirectional mlxrnn layer (GRU: ``variant="reset_after"``).
    """
    dtype = resolve_dtype(backend, dtype)
    parameters, kind, nonlinearity = _module_settings(parameters, kind, nonlinearity, prefix)
    params = _mlx_params(parameters, prefix)
    if kind is None:
        if "Wxh" in params:
            kind = "rnn"
        elif "Wx" in params and "Wh" in params and params["Wh"].ndim == 2:
            kind = kind_from_gates(params["Wh"].shape[0], params["Wh"].shape[1], f"'Wh' {params['Wh'].shape}")
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
