"""Interop: PyTorch, Keras and mlx.nn recurrent weights load into mlxrnn layers, give the source
framework's outputs and final states, and save back to the source layout.

* PyTorch (skipped if torch is missing): random ``nn.RNN`` (tanh, relu) / ``nn.GRU`` / ``nn.LSTM``
  with 1–2 layers × uni/bidirectional × bias on/off, in float64 (≤ 1e-5) and float32 (≤ 1e-4),
  on full batches with random initial states and on padded batches against
  ``pack_padded_sequence(enforce_sorted=False)``; the same weights on the MLX backend.
* mlx.nn (skipped if MLX is missing): ``nn.RNN`` / ``GRU`` / ``LSTM``, bias on/off, float32.
* Keras: real Keras 3 layers (plain, ``Bidirectional`` and stacked) on its JAX backend, no
  TensorFlow (CI installs keras and jax from .ci/requirements-peers.txt; skipped where either is
  missing); and, on every layout with and without bias, ``keras_reference`` below, an
  independent NumPy transcription of Keras's documented cell equations and weight layout.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlxrnn import make_recurrent
from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop import from_keras, from_mlx_nn, from_torch, to_keras, to_mlx_nn, to_torch


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAS_TORCH = _importable("torch")
HAS_MLX = _importable("mlx") and _importable("mlx.core")
HAS_KERAS = _importable("keras") and _importable("jax")
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed (pip install torch, CPU build)")
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="MLX is not installed (pip install 'mlx[cpu]' on Linux)")
needs_keras = pytest.mark.skipif(
    not HAS_KERAS, reason="Keras 3 on JAX is not installed (pip install -r .ci/requirements-peers.txt)"
)



TOLERANCE = {"float64": 1e-5, "float32": 1e-4}
TORCH_MODES = ["RNN_TANH", "RNN_RELU", "GRU", "LSTM"]
D, H, B, T = 4, 6, 3, 7


def _max_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)))


def _run_ours(layer, x, initial_state=None, lengths=None):
    """Forward on any backend -> (outputs, [h] or [h, c]) as NumPy."""
    outputs, state, _ = layer.forward(x, initial_state=initial_state, lengths=lengths)
    parts = list(state) if isinstance(state, tuple) else [state]
    return layer.xp.to_numpy(outputs), [layer.xp.to_numpy(p) for p in parts]


# --- PyTorch ------------------------------------------------------------------------------------
def _torch_module(mode, num_layers=1, bidirectional=False, bias=True, dtype="float64", seed=0, **extra):
    import torch

    torch.manual_seed(seed)
    classes = {"RNN_TANH": torch.nn.RNN, "RNN_RELU": torch.nn.RNN, "GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=True, **extra)
    if mode.startswith("RNN"):
        kwargs["nonlinearity"] = mode[4:].lower()
    module = classes[mode](D, H, **kwargs).to(getattr(torch, dtype))
    if bias:  # PyTorch draws both biases at random already; make sure b_hh is clearly non-zero
        with torch.no_grad():
            for name, value in module.named_parameters():
                if name.startswith("bias_hh"):
                    value.add_(0.1)
    return module


def _numpy_state_dict(module) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in module.state_dict().items()}


def _run_torch(module, x, initial_state=None, lengths=None):
    """PyTorch forward on a NumPy batch (packed when ``lengths`` is given) -> NumPy, like _run_ours."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    dtype = next(module.parameters()).dtype
    inputs = torch.from_numpy(x).to(dtype)
    if initial_state is not None:
        initial_state = tuple(torch.from_numpy(s).to(dtype) for s in initial_state)
        initial_state = initial_state if len(initial_state) == 2 else initial_state[0]
    with torch.no_grad():
        if lengths is None:
            outputs, state = module(inputs, initial_state)
        else:
            packed = pack_padded_sequence(inputs, torch.as_tensor(lengths), batch_first=True, enforce_sorted=False)
            packed_out, state = module(packed, initial_state)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
    parts = list(state) if isinstance(state, tuple) else [state]
    return outputs.numpy(), [p.numpy() for p in parts]


def _random_state(mode, num_layers, bidirectional, rng):
    shape = (num_layers * (2 if bidirectional else 1), B, H)
    parts = [rng.normal(size=shape) * 0.5 for _ in range(2 if mode == "LSTM" else 1)]
    return parts


def _ours_state(parts):
    return tuple(parts) if len(parts) == 2 else parts[0]


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_torch_outputs_and_final_states_match(mode, num_layers, bidirectional, bias, dtype):
    module = _torch_module(mode, num_layers, bidirectional, bias, dtype)
    layer = from_torch(_numpy_state_dict(module), module.mode, backend="numpy", dtype=dtype)
    assert (layer.num_layers, layer.bidirectional, layer.input_size, layer.hidden_size) == (
        num_layers,
        bidirectional,
        D,
        H,
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, D))
    state = _random_state(mode, num_layers, bidirectional, rng)
    ours_out, ours_state = _run_ours(layer, x, _ours_state(state))
    ref_out, ref_state = _run_torch(module, x, state)
    assert _max_error(ours_out, ref_out) <= TOLERANCE[dtype]
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert _max_error(ours, ref) <= TOLERANCE[dtype]


@needs_torch
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)], ids=["L1-uni", "L2-bi"])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_torch_packed_padded_batches_match(mode, num_layers, bidirectional, dtype):
    """Unsorted lengths against pack_padded_sequence: outputs at valid steps (ours are 0 elsewhere,
    as pad_packed_sequence's) and each sequence's final state, both directions."""
    module = _torch_module(mode, num_layers, bidirectional, True, dtype, seed=3)
    layer = from_torch(_numpy_state_dict(module), module.mode, backend="numpy", dtype=dtype)
    rng = np.random.default_rng(4)
    lengths = np.array([4, 7, 1, 5])
    x = rng.normal(size=(len(lengths), T, D))
    valid = np.arange(T)[None, :] < lengths[:, None]
    x[~valid] = 1e3  # garbage in the padding must not leak into anything
    shape = (num_layers * (2 if bidirectional else 1), len(lengths), H)
    state = [rng.normal(size=shape) * 0.5 for _ in range(2 if mode == "LSTM" else 1)]
    ours_out, ours_state = _run_ours(layer, x, _ours_state(state), lengths=lengths)
    ref_out, ref_state = _run_torch(module, x, state, lengths=lengths)
    assert _max_error(ours_out[valid], ref_out[valid]) <= TOLERANCE[dtype]
    assert np.all(ours_out[~valid] == 0)
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert _max_error(ours, ref) <= TOLERANCE[dtype]


@needs_torch
@needs_mlx
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_torch_weights_on_the_mlx_backend(mode):
    module = _torch_module(mode, num_layers=2, bidirectional=True, dtype="float32", seed=5)
    layer = from_torch(_numpy_state_dict(module), module.mode, backend="mlx", dtype="float32")
    assert layer.xp.name == "mlx"
    rng = np.random.default_rng(6)
    x = rng.normal(size=(B, T, D))
    state = _random_state(mode, 2, True, rng)
    lengths = np.array([7, 3, 5])
    valid = np.arange(T)[None, :] < lengths[:, None]
    for lens in (None, lengths):
        ours_out, ours_state = _run_ours(layer, x, _ours_state(state), lengths=lens)
        ref_out, ref_state = _run_torch(module, x, state, lengths=lens)
        keep = valid if lens is not None else np.ones((B, T), bool)
        assert _max_error(ours_out[keep], ref_out[keep]) <= 1e-4
        for ours, ref in zip(ours_state, ref_state, strict=True):
            assert _max_error(ours, ref) <= 1e-4


def _assert_same_dict(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@needs_torch
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_torch_round_trip(mode, bias):
    """torch -> mlxrnn -> torch: bit-identical when b_hh is zero outside the GRU candidate block
    (the two biases are stored summed), identical outputs otherwise; mlxrnn -> torch -> mlxrnn is
    always bit-identical."""
    import torch

    module = _torch_module(mode, num_layers=2, bidirectional=True, bias=bias, dtype="float32", seed=7)
    source = _numpy_state_dict(module)
    layer = from_torch(source, module.mode, backend="numpy", dtype="float32")
    saved = to_torch(layer, bias=bias)
    if bias:
        # Two biases cannot be recovered from their sum: same outputs, not the same split.
        reloaded = _torch_module(mode, num_layers=2, bidirectional=True, bias=bias, dtype="float32", seed=99)
        reloaded.load_state_dict({k: torch.from_numpy(v) for k, v in saved.items()})
        x = np.random.default_rng(8).normal(size=(B, T, D))
        (out, state), (out_again, state_again) = _run_torch(module, x), _run_torch(reloaded, x)
        for a, b in zip([out, *state], [out_again, *state_again], strict=True):
            assert _max_error(a, b) <= 1e-6
        # With the recurrent bias on the input side the round trip is exact.
        gate_blocks = 3 if mode == "GRU" else 1
        for name in source:
            if name.startswith("bias_hh"):
                source[name][: (source[name].size if gate_blocks == 1 else 2 * H)] = 0.0
        layer = from_torch(source, module.mode, backend="numpy", dtype="float32")
    _assert_same_dict(to_torch(layer, bias=bias), source)
    again = from_torch(to_torch(layer, bias=bias), module.mode, backend="numpy", dtype="float32")
    _assert_same_dict(again.numpy_parameters(), layer.numpy_parameters())


@needs_torch
def test_torch_bias_false_export_refuses_non_zero_biases():
    module = _torch_module("LSTM", bias=True, dtype="float32")
    layer = from_torch(_numpy_state_dict(module), "lstm", backend="numpy")
    with pytest.raises(ConfigError, match="non-zero"):
        to_torch(layer, bias=False)


@needs_torch
def test_torch_proj_size_is_refused():
    module = _torch_module("LSTM", proj_size=3)
    with pytest.raises(CheckpointError, match="proj_size") as info:
        from_torch(_numpy_state_dict(module), "LSTM")
    assert "\n" not in str(info.value)


@needs_torch
def test_torch_model_state_dict_with_prefix_and_tensors():
    """A model's full state dict (torch tensors, not NumPy) and a prefix selecting the RNN."""
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, D)
            self.rnn = torch.nn.GRU(D, H, batch_first=True, bidirectional=True)

    model = Tagger().double()
    layer = from_torch(model.state_dict(), "gru", prefix="rnn.", backend="numpy", dtype="float64")
    x = np.random.default_rng(9).normal(size=(B, T, D))
    ours_out, ours_state = _run_ours(layer, x)
    ref_out, ref_state = _run_torch(model.rnn, x)
    assert _max_error(ours_out, ref_out) <= 1e-5 and _max_error(ours_state[0], ref_state[0]) <= 1e-5
    with pytest.raises(CheckpointError, match="unexpected key"):
        from_torch(model.state_dict(), "gru")


def test_torch_state_dict_errors_without_torch():
    """Malformed or unsupported state dicts and layers fail with one-line errors (NumPy only)."""
    rng = np.random.default_rng(0)
    gru = {"weight_ih_l0": rng.normal(size=(3 * H, D)), "weight_hh_l0": rng.normal(size=(3 * H, H))}
    with pytest.raises(CheckpointError, match="is mode='lstm' right"):
        from_torch(gru, "lstm")
    with pytest.raises(CheckpointError, match="missing key weight_hh_l0"):
        from_torch({"weight_ih_l0": gru["weight_ih_l0"]}, "gru")
    with pytest.raises(CheckpointError, match="missing key bias_hh_l0"):
        from_torch({**gru, "bias_ih_l0": np.zeros(3 * H)}, "gru")
    with pytest.raises(CheckpointError, match="proj_size"):
        from_torch({**gru, "weight_hr_l0": np.zeros((2, H))}, "lstm")
    with pytest.raises(CheckpointError, match="weight_ih_l1"):
        from_torch({**gru, "weight_ih_l1": np.zeros((3 * H, H + 1)), "weight_hh_l1": np.zeros((3 * H, H))}, "gru")
    with pytest.raises(ConfigError, match="unknown PyTorch mode"):
        from_torch(gru, "transformer")
    with pytest.raises(ConfigError, match="implies nonlinearity"):
        from_torch(gru, "RNN_RELU", nonlinearity="tanh")
    with pytest.raises(ConfigError, match="variant"):
        to_torch(make_recurrent("gru", D, H, variant="full", backend="numpy"))
    with pytest.raises(ConfigError, match="peephole"):
        to_torch(make_recurrent("lstm", D, H, peephole=True, backend="numpy"))
    with pytest.raises(ConfigError, match="merge='sum'"):
        to_torch(make_recurrent("rnn", D, H, bidirectional=True, merge="sum", backend="numpy"))
    layer = from_torch(gru, "gru", backend="numpy", dtype="float64")  # bias=False source: zero biases
    assert set(to_torch(layer, bias=False)) == set(gru)
    assert all(np.all(v == 0) for k, v in layer.numpy_parameters().items() if k.endswith((".b", ".b_hn")))


# --- mlx.nn -------------------------------------------------------------------------------------
MLX_KINDS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def _mlx_module(kind, bias, seed=0):
    import mlx.core as mx
    import mlx.nn as nn

    mx.random.seed(seed)
    if kind.startswith("rnn"):
        return nn.RNN(D, H, bias=bias, nonlinearity=nn.relu if kind == "rnn_relu" else None)
    return {"gru": nn.GRU, "lstm": nn.LSTM}[kind](D, H, bias=bias)


def _run_mlx_nn(module, x):
    import mlx.core as mx

    result = module(mx.array(x.astype(np.float32)))
    if isinstance(result, tuple):  # LSTM: (hidden sequence, cell sequence)
        hidden, cell = (np.array(r) for r in result)
        return hidden, [hidden[:, -1][None], cell[:, -1][None]]
    hidden = np.array(result)
    return hidden, [hidden[:, -1][None]]


@needs_mlx
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", MLX_KINDS)
def test_mlx_nn_outputs_and_round_trip(kind, bias):
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map

    module = _mlx_module(kind, bias)
    nonlinearity = "relu" if kind == "rnn_relu" else "tanh"
    flat = dict(tree_flatten(module.parameters()))
    x = np.random.default_rng(10).normal(size=(B, T, D))
    ref_out, ref_state = _run_mlx_nn(module, x)
    for parameters, backend in ((tree_flatten(module.parameters()), "numpy"), (module.parameters(), "mlx")):
        layer = from_mlx_nn(parameters, nonlinearity=nonlinearity, backend=backend, dtype="float32")
        assert layer.cell_name == kind.split("_")[0] and (layer.input_size, layer.hidden_size) == (D, H)
        ours_out, ours_state = _run_ours(layer, x)
        assert _max_error(ours_out, ref_out) <= 1e-4
        for ours, ref in zip(ours_state, ref_state, strict=True):
            assert _max_error(ours, ref) <= 1e-4
        saved = to_mlx_nn(layer, bias=bias)  # single bias (+ bhn): exact both ways
        assert set(saved) == set(flat)
        for name in flat:
            np.testing.assert_array_equal(saved[name], np.array(flat[name]), err_msg=name)
    reloaded = _mlx_module(kind, bias, seed=123)
    reloaded.update(tree_map(mx.array, saved))  # the recipe in to_mlx_nn's docstring
    np.testing.assert_array_equal(_run_mlx_nn(reloaded, x)[0], ref_out)


@needs_mlx
def test_mlx_nn_prefix_and_errors():
    import mlx.nn as nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, D)
            self.rnn = nn.LSTM(D, H)

    model = Model()
    with pytest.raises(ConfigError, match="prefix"):
        from_mlx_nn(model.parameters())
    layer = from_mlx_nn(model.parameters(), prefix="rnn.", backend="numpy")
    assert layer.cell_name == "lstm"
    with pytest.raises(ConfigError, match="single-layer and unidirectional"):
        to_mlx_nn(make_recurrent("lstm", D, H, bidirectional=True, backend="numpy"))
    with pytest.raises(ConfigError, match="variant"):
        to_mlx_nn(make_recurrent("gru", D, H, backend="numpy"))  # our default GRU is the "full" one
    with pytest.raises(CheckpointError, match="biases optional"):
        from_mlx_nn({"Wx": np.zeros((3 * H, D)), "Wh": np.zeros((3 * H, H)), "b": np.zeros(3 * H)})


# --- Keras --------------------------------------------------------------------------------------
KERAS_CASES = [  # (kind, activation, reset_after)
    ("SimpleRNN", "tanh", None),
    ("SimpleRNN", "relu", None),
    ("GRU", "tanh", True),
    ("GRU", "tanh", False),
    ("LSTM", "tanh", None),
]
KERAS_IDS = ["simple_rnn-tanh", "simple_rnn-relu", "gru-reset_after", "gru-reset_before", "lstm"]


def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def keras_reference(weights, kind, x, activation="tanh", reset_after=True, go_backwards=False):
    """Independent NumPy transcription of Keras 3's SimpleRNNCell / GRUCell / LSTMCell (the
    documented equations and weight layout, not mlxrnn code): one direction of one layer.

    kernel (D, G·H) input-major, recurrent_kernel (H, G·H); gate blocks LSTM [i, f, c, o],
    GRU [z, r, h] with h_t = z ∗ h_prev + (1 − z) ∗ hh; GRU bias (2, 3H) = [input, recurrent]
    when reset_after, else (3H,) on the input side only. Returns (outputs (B, T, H) in time
    order, [h] or [h, c]).
    """
    act = np.tanh if activation == "tanh" else (lambda a: np.maximum(a, 0.0))
    kernel, recurrent_kernel = weights[0], weights[1]
    units = recurrent_kernel.shape[0]
    bias = weights[2] if len(weights) == 3 else None
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    outputs = np.zeros((x.shape[0], x.shape[1], units))
    for t in steps:
        inputs = x[:, t]
        if kind == "SimpleRNN":
            h = act(inputs @ kernel + (0 if bias is None else bias) + h @ recurrent_kernel)
        elif kind == "LSTM":
            z = inputs @ kernel + h @ recurrent_kernel + (0 if bias is None else bias)
            z0, z1, z2, z3 = (z[:, k * units : (k + 1) * units] for k in range(4))
            i, f, o = _sigmoid(z0), _sigmoid(z1), _sigmoid(z3)
            c = f * c + i * act(z2)
            h = o * act(c)
        else:  # GRU
            if bias is None:
                input_bias, recurrent_bias = np.zeros(3 * units), np.zeros(3 * units)
            elif reset_after:
                input_bias, recurrent_bias = bias[0], bias[1]
            else:
                input_bias, recurrent_bias = bias, None
            matrix_x = inputs @ kernel + input_bias
            x_z, x_r, x_h = matrix_x[:, :units], matrix_x[:, units : 2 * units], matrix_x[:, 2 * units :]
            if reset_after:
                matrix_inner = h @ recurrent_kernel + recurrent_bias
            else:
                matrix_inner = h @ recurrent_kernel[:, : 2 * units]
            z = _sigmoid(x_z + matrix_inner[:, :units])
            r = _sigmoid(x_r + matrix_inner[:, units : 2 * units])
            if reset_after:
                recurrent_h = r * matrix_inner[:, 2 * units :]
            else:
                recurrent_h = (r * h) @ recurrent_kernel[:, 2 * units :]
            hh = act(x_h + recurrent_h)
            h = z * h + (1 - z) * hh
        outputs[:, t] = h  # stored at the input's time index: Bidirectional flips go_backwards output back
    return outputs, ([h, c] if kind == "LSTM" else [h])


def keras_reference_stack(per_layer, kind, x, bidirectional, merge="concat", **options):
    """Stacked (Bidirectional) Keras layers -> (outputs, states in our (L·D, B, H) order)."""
    states: list[list] = []
    for weights in per_layer:
        half = len(weights) // 2 if bidirectional else len(weights)
        out, st = keras_reference(weights[:half], kind, x, **options)
        states.append(st)
        if bidirectional:
            back, st_back = keras_reference(weights[half:], kind, x, go_backwards=True, **options)
            states.append(st_back)
            out = np.concatenate([out, back], axis=-1) if merge == "concat" else out + back
        x = out
    return x, [np.stack([s[k] for s in states]) for k in range(len(states[0]))]


def _keras_weights(kind, reset_after, use_bias, input_size, rng):
    G = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4}[kind]
    weights = [rng.uniform(-0.5, 0.5, size=(input_size, G * H)), rng.uniform(-0.5, 0.5, size=(H, G * H))]
    if use_bias:
        shape = (2, G * H) if kind == "GRU" and reset_after else (G * H,)
        weights.append(rng.uniform(-0.5, 0.5, size=shape))
    return weights


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", ["L1-uni", "L1-bi-concat", "L2-bi-sum", "L2-uni"])
@pytest.mark.parametrize("kind,activation,reset_after", KERAS_CASES, ids=KERAS_IDS)
def test_keras_layout_against_numpy_reference(kind, activation, reset_after, layout, use_bias):
    num_layers, bidirectional = int(layout[1]), "bi" in layout
    merge = "sum" if layout.endswith("sum") else "concat"
    rng = np.random.default_rng(11)
    per_layer = []
    for index in range(num_layers):
        layer_input = D if index == 0 else (2 * H if bidirectional and merge == "concat" else H)
        weights = _keras_weights(kind, reset_after, use_bias, layer_input, rng)
        if bidirectional:
            weights += _keras_weights(kind, reset_after, use_bias, layer_input, rng)
        per_layer.append(weights)
    given = per_layer if num_layers > 1 else per_layer[0]
    options = {"reset_after": reset_after} if kind == "GRU" else {}
    layer = from_keras(given, kind, activation=activation, merge=merge, backend="numpy", dtype="float64", **options)
    assert (layer.num_layers, layer.bidirectional, layer.merge) == (num_layers, bidirectional, merge)
    x = rng.normal(size=(B, T, D))
    ref_out, ref_state = keras_reference_stack(
        per_layer, kind, x, bidirectional, merge, activation=activation, reset_after=bool(reset_after)
    )
    ours_out, ours_state = _run_ours(layer, x)
    assert _max_error(ours_out, ref_out) <= 1e-5
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert _max_error(ours, ref) <= 1e-5

    # Round trip. Single-bias layouts are exact; the GRU (2, 3H) bias is exact once its recurrent
    # row is zero outside the candidate block (the z and r rows are stored summed).
    saved = to_keras(layer, use_bias=use_bias)
    if kind == "GRU" and reset_after and use_bias:
        assert (
            _max_error(_run_ours(from_keras(saved, kind, merge=merge, backend="numpy", dtype="float64"), x)[0], ref_out)
            <= 1e-12
        )
        for weights in per_layer:
            for bias in weights[2::3]:
                bias[1, : 2 * H] = 0.0
        layer = from_keras(given, kind, merge=merge, backend="numpy", dtype="float64")
        saved = to_keras(layer, use_bias=use_bias)
    flat_saved = saved if num_layers > 1 else [saved]
    for got_layer, expected_layer in zip(flat_saved, per_layer, strict=True):
        assert len(got_layer) == len(expected_layer)
        for got, expected in zip(got_layer, expected_layer, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_keras_errors():
    rng = np.random.default_rng(12)
    gru_no_bias = _keras_weights("GRU", True, False, D, rng)
    with pytest.raises(ConfigError, match="needs reset_after"):
        from_keras(gru_no_bias, "GRU")
    with pytest.raises(ConfigError, match="contradicts"):
        from_keras(_keras_weights("GRU", True, True, D, rng), "GRU", reset_after=False)
    with pytest.raises(ConfigError, match="hard_sigmoid"):
        from_keras(gru_no_bias, "GRU", reset_after=True, recurrent_activation="hard_sigmoid")
    with pytest.raises(ConfigError, match="merge_mode"):
        from_keras(gru_no_bias * 2, "GRU", reset_after=True, merge="mul")
    with pytest.raises(CheckpointError, match="does not fit a Keras LSTM"):
        from_keras(gru_no_bias, "LSTM")
    with pytest.raises(CheckpointError, match="2 or 3 arrays"):
        from_keras(gru_no_bias[:1], "GRU")
    with pytest.raises(ConfigError, match="peephole"):
        to_keras(make_recurrent("lstm", D, H, peephole=True, backend="numpy"))
    with pytest.raises(ConfigError, match="simple"):
        to_keras(make_recurrent("gru", D, H, variant="simple", backend="numpy"))
    layer = from_keras(_keras_weights("LSTM", None, True, D, rng), "LSTM", backend="numpy")
    with pytest.raises(ConfigError, match="non-zero"):
        to_keras(layer, use_bias=False)


# Real Keras runs in one child process for all cases: JAX starts threads, and this test process
# later forks children of its own (os.fork with threads running is unsafe).
KERAS_WORKER = textwrap.dedent(
    """
    import json, os, sys, warnings
    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 on JAX, no TensorFlow
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # skips probing for accelerators
    warnings.simplefilter("ignore")  # e.g. Keras's np.array(variable) under NumPy 2
    import numpy as np
    import keras

    with open(sys.argv[1]) as handle:
        specs = json.load(handle)
    arrays, results = np.load(sys.argv[2]), {}
    for name, spec in specs.items():
        inputs = arrays[name + "/x"]
        for index in range(spec["layers"]):
            options = {"reset_after": spec["reset_after"]} if spec["kind"] == "GRU" else {}
            layer = getattr(keras.layers, spec["kind"])(spec["units"], activation=spec["activation"],
                                                        return_sequences=True, return_state=True, **options)
            if spec["bidirectional"]:
                layer = keras.layers.Bidirectional(layer, merge_mode=spec["merge"])
            layer(inputs)  # builds the weights
            layer.set_weights([arrays[f"{name}/w{index}_{i}"] for i in range(spec["arrays_per_layer"])])
            result = [keras.ops.convert_to_numpy(r) for r in layer(inputs)]
            inputs = result[0]
            for k, state in enumerate(result[1:]):  # h (, c) per direction, forward first
                results[f"{name}/state{index}_{k}"] = state
            for i, weight in enumerate(layer.get_weights()):
                results[f"{name}/get{index}_{i}"] = weight
        results[name + "/out"] = inputs
    np.savez(sys.argv[3], **results)
    """
)


def _keras_run(kind, activation, reset_after, bidirectional, layers, merge, seed):
    """(spec, x, per-layer weights) of one real-Keras case, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    per_layer = []
    for index in range(layers):
        layer_input = D if index == 0 else (2 * H if bidirectional and merge == "concat" else H)
        weights = _keras_weights(kind, reset_after, True, layer_input, rng)
        if bidirectional:
            weights += _keras_weights(kind, reset_after, True, layer_input, rng)
        per_layer.append([w.astype(np.float32) for w in weights])
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    spec = {"kind": kind, "activation": activation, "reset_after": reset_after, "bidirectional": bidirectional,
            "layers": layers, "merge": merge, "units": H, "arrays_per_layer": len(per_layer[0])}
    return spec, x, per_layer


KERAS_RUNS = {
    f"{case_id}-{'bi' if bidirectional else 'uni'}": _keras_run(kind, activation, reset_after, bidirectional, 1,
                                                                 "concat", 13)
    for (kind, activation, reset_after), case_id in zip(KERAS_CASES, KERAS_IDS)
    for bidirectional in (False, True)
}
KERAS_RUNS.update({
    "stacked-lstm": _keras_run("LSTM", "tanh", None, True, 2, "sum", 14),
    "stacked-gru-reset_before": _keras_run("GRU", "tanh", False, True, 2, "sum", 14),
})


@pytest.fixture(scope="module")
def keras_results(tmp_path_factory) -> dict[str, np.ndarray]:
    directory = tmp_path_factory.mktemp("keras")
    arrays = {}
    for name, (_, x, per_layer) in KERAS_RUNS.items():
        arrays[name + "/x"] = x
        for index, weights in enumerate(per_layer):
            arrays.update({f"{name}/w{index}_{i}": w for i, w in enumerate(weights)})
    (directory / "specs.json").write_text(json.dumps({name: run[0] for name, run in KERAS_RUNS.items()}))
    np.savez(directory / "inputs.npz", **arrays)
    result = subprocess.run([sys.executable, "-c", KERAS_WORKER, str(directory / "specs.json"),
                             str(directory / "inputs.npz"), str(directory / "outputs.npz")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(directory / "outputs.npz"))


def _keras_states(results: dict, name: str, layer: int) -> list[np.ndarray]:
    return [results[f"{name}/state{layer}_{k}"] for k in range(4) if f"{name}/state{layer}_{k}" in results]


@needs_keras
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind,activation,reset_after", KERAS_CASES, ids=KERAS_IDS)
def test_keras_layers_match(keras_results, kind, activation, reset_after, bidirectional):
    name = f"{KERAS_IDS[KERAS_CASES.index((kind, activation, reset_after))]}-{'bi' if bidirectional else 'uni'}"
    _, x, (weights,) = KERAS_RUNS[name]
    ref_out, ref_states = keras_results[name + "/out"], _keras_states(keras_results, name, 0)
    layer = from_keras(weights, kind, activation=activation, backend="numpy", dtype="float32")
    ours_out, ours_state = _run_ours(layer, x)
    assert _max_error(ours_out, ref_out) <= 1e-4
    per_direction = len(ref_states) // (2 if bidirectional else 1)
    assert per_direction == layer.state_size
    for direction in range(2 if bidirectional else 1):
        for k, ref in enumerate(ref_states[direction * per_direction : (direction + 1) * per_direction]):
            assert _max_error(ours_state[k][direction], ref) <= 1e-4
    if not (kind == "GRU" and reset_after):  # a (2, 3H) bias comes back with its z, r rows summed
        keras_weights = [keras_results[f"{name}/get0_{i}"] for i in range(len(weights))]
        for got, expected in zip(to_keras(layer), keras_weights, strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-6)


@needs_keras
@pytest.mark.parametrize("name", ["stacked-lstm", "stacked-gru-reset_before"])
def test_stacked_bidirectional_keras_layers_match(keras_results, name):
    """Two Keras Bidirectional(merge_mode="sum") layers, the second reading the first's outputs:
    one mlxrnn stack from the list of their weights, outputs and every final state alike."""
    spec, x, per_layer = KERAS_RUNS[name]
    layer = from_keras(per_layer, spec["kind"], merge="sum", backend="numpy", dtype="float32")
    assert (layer.num_layers, layer.bidirectional, layer.merge) == (2, True, "sum")
    ours_out, ours_state = _run_ours(layer, x)
    assert _max_error(ours_out, keras_results[name + "/out"]) <= 1e-4
    for index in range(2):
        states = _keras_states(keras_results, name, index)
        half = len(states) // 2
        for direction, direction_states in enumerate((states[:half], states[half:])):  # our index: 2ℓ + d
            for k, ref in enumerate(direction_states):
                assert _max_error(ours_state[k][2 * index + direction], ref) <= 1e-4
