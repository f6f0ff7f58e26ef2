"""Interop with PyTorch and mlx.nn: their recurrent weights load into mlxrnn layers, give the source
framework's outputs and final states, and save back to the source layout.

* PyTorch (skipped if torch is missing): random ``nn.RNN`` (tanh, relu) / ``nn.GRU`` / ``nn.LSTM``
  with 1–2 layers × uni/bidirectional × bias on/off, in float64 (≤ 1e-5) and float32 (≤ 1e-4),
  on full batches with random initial states and on padded batches against
  ``pack_padded_sequence(enforce_sorted=False)``; the same weights on the MLX backend.
* mlx.nn (skipped if MLX is missing): ``nn.RNN`` / ``GRU`` / ``LSTM``, bias on/off, float32.

Keras: tests/test_interop_keras.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from mlxrnn import make_recurrent
from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop import from_mlx_nn, from_torch, to_mlx_nn, to_torch
from tests.interop_support import (
    TOLERANCE,
    TORCH_MODES,
    B,
    D,
    H,
    T,
    max_error,
    needs_mlx,
    needs_torch,
    run_ours,
)


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
    ours_out, ours_state = run_ours(layer, x, _ours_state(state))
    ref_out, ref_state = _run_torch(module, x, state)
    assert max_error(ours_out, ref_out) <= TOLERANCE[dtype]
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert max_error(ours, ref) <= TOLERANCE[dtype]


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
    ours_out, ours_state = run_ours(layer, x, _ours_state(state), lengths=lengths)
    ref_out, ref_state = _run_torch(module, x, state, lengths=lengths)
    assert max_error(ours_out[valid], ref_out[valid]) <= TOLERANCE[dtype]
    assert np.all(ours_out[~valid] == 0)
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert max_error(ours, ref) <= TOLERANCE[dtype]


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
        ours_out, ours_state = run_ours(layer, x, _ours_state(state), lengths=lens)
        ref_out, ref_state = _run_torch(module, x, state, lengths=lens)
        keep = valid if lens is not None else np.ones((B, T), bool)
        assert max_error(ours_out[keep], ref_out[keep]) <= 1e-4
        for ours, ref in zip(ours_state, ref_state, strict=True):
            assert max_error(ours, ref) <= 1e-4


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
            assert max_error(a, b) <= 1e-6
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
    ours_out, ours_state = run_ours(layer, x)
    ref_out, ref_state = _run_torch(model.rnn, x)
    assert max_error(ours_out, ref_out) <= 1e-5 and max_error(ours_state[0], ref_state[0]) <= 1e-5
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
        ours_out, ours_state = run_ours(layer, x)
        assert max_error(ours_out, ref_out) <= 1e-4
        for ours, ref in zip(ours_state, ref_state, strict=True):
            assert max_error(ours, ref) <= 1e-4
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


