"""Interop that forgives: the framework object itself instead of its weights, the cell read from
the weight shapes, a model's weights answered with the ``prefix`` to pass, and a ``dtype`` that
contradicts a backend object refused.

Outputs are compared against the framework itself (PyTorch, mlx.nn, Keras 3: each skipped when
missing) or, without the framework, against the same conversion with everything spelled out
(which ``tests/test_interop.py`` checks against the frameworks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlxrnn.backend import get_backend
from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop import from_keras, from_mlx_nn, from_torch
from tests.interop_support import HAS_KERAS, TORCH_MODES, B, D, H, T, max_error, needs_mlx, needs_torch, run_ours
from tests.test_interop import _mlx_module, _run_mlx_nn, _run_torch, _torch_module
from tests.test_interop_keras import KERAS_CASES, KERAS_IDS, _keras_weights, keras_reference_stack

# Keras 3 without TensorFlow runs on JAX; set before the first `import keras` of the session.
os.environ.setdefault("KERAS_BACKEND", "jax")
needs_keras = pytest.mark.skipif(not HAS_KERAS, reason="Keras is not installed (pip install keras jax)")
# Real Keras layer objects are built only in a child pytest (see the test at the end of this file):
# JAX starts threads, and this test process later forks children of its own (unsafe with threads).
IN_KERAS_CHILD = os.environ.get("MLXRNN_KERAS_CHILD") == "1"


def _same_layer(a, b) -> None:
    assert (a.cell_name, a.cell_options, a.num_layers, a.bidirectional) == (
        b.cell_name,
        b.cell_options,
        b.num_layers,
        b.bidirectional,
    )
    pa, pb = a.numpy_parameters(), b.numpy_parameters()
    assert list(pa) == list(pb)
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


# --- PyTorch ------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("mode", TORCH_MODES)
def test_torch_module_gives_its_own_mode_nonlinearity_and_dropout(mode):
    module = _torch_module(mode, num_layers=2, bidirectional=True, dtype="float64", seed=21, dropout=0.25).eval()
    layer = from_torch(module, backend="numpy", dtype="float64")  # no mode, no nonlinearity
    assert layer.dropout == 0.25
    if mode.startswith("RNN"):
        assert layer.cell_options["activation"] == mode[4:].lower()
    x = np.random.default_rng(22).normal(size=(B, T, D))
    (ours, ours_state), (ref, ref_state) = run_ours(layer, x), _run_torch(module, x)
    assert max_error(ours, ref) <= 1e-5
    for a, b in zip(ours_state, ref_state, strict=True):
        assert max_error(a, b) <= 1e-5


@needs_torch
def test_torch_module_contradicted_by_the_arguments_is_refused():
    with pytest.raises(ConfigError, match="contradicts the module") as info:
        from_torch(_torch_module("LSTM"), "gru")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="nonlinearity='tanh' contradicts"):
        from_torch(_torch_module("RNN_RELU"), nonlinearity="tanh")
    same = from_torch(_torch_module("RNN_RELU"), "rnn", nonlinearity="relu", backend="numpy")  # agreeing is fine
    assert same.cell_options["activation"] == "relu"


@needs_torch
def test_a_whole_model_names_the_prefix_to_pass():
    import torch

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, D)
            self.rnn = torch.nn.LSTM(D, H, batch_first=True)

    class Translator(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Tagger()
            self.decoder = torch.nn.GRU(D, H, batch_first=True)

    tagger = Tagger()
    for source in (tagger, tagger.state_dict()):
        with pytest.raises(CheckpointError, match=r"unexpected key 'embed.weight'.*pass prefix='rnn.'"):
            from_torch(source)
    with pytest.raises(CheckpointError, match=r"pass prefix='rnn.'"):
        from_torch(tagger, prefix="rnn")  # a module path without its dot
    with pytest.raises(CheckpointError, match=r"no PyTorch recurrent weights.*pass prefix='rnn.'"):
        from_torch(tagger, prefix="lstm.")
    with pytest.raises(CheckpointError, match=r"'decoder.', 'encoder.rnn.': pass prefix= one of them"):
        from_torch(Translator())
    layer = from_torch(Translator(), prefix="encoder.rnn.", backend="numpy")  # the cell from the shapes
    assert layer.cell_name == "lstm"


def test_the_cell_follows_from_the_state_dict_shapes():
    """No torch needed: a state dict of each cell, read without ``mode``, gives the layer that
    the spelled-out call gives; an RNN is tanh unless told (weights cannot show it)."""
    rng = np.random.default_rng(23)
    for mode, gates in (("RNN_TANH", 1), ("GRU", 3), ("LSTM", 4)):
        state = {
            "weight_ih_l0": rng.normal(size=(gates * H, D)),
            "weight_hh_l0": rng.normal(size=(gates * H, H)),
            "bias_ih_l0": rng.normal(size=gates * H),
            "bias_hh_l0": rng.normal(size=gates * H),
        }
        _same_layer(from_torch(state, backend="numpy"), from_torch(state, mode, backend="numpy"))
        if mode == "RNN_TANH":
            assert from_torch(state, backend="numpy").cell_options == {"activation": "tanh"}
            assert from_torch(state, nonlinearity="relu", backend="numpy").cell_options == {"activation": "relu"}
    odd = {"weight_ih_l0": np.zeros((2 * H, D)), "weight_hh_l0": np.zeros((2 * H, H))}
    with pytest.raises(CheckpointError, match=r"not 1 \(RNN\), 3 \(GRU\) or 4 \(LSTM\) blocks"):
        from_torch(odd)
    with pytest.raises(ConfigError, match="nn.RNN/nn.GRU/nn.LSTM module or its state_dict"):
        from_torch([("weight_ih_l0", odd["weight_ih_l0"])])


@needs_torch
def test_torch_round_trip_from_a_module_without_mode():
    """mlxrnn.to_torch of a layer read from a module loads back into that module's class."""
    import torch

    from mlxrnn.io.interop import to_torch

    module = _torch_module("GRU", num_layers=2, bidirectional=True, dtype="float32", seed=24)
    layer = from_torch(module, backend="numpy")
    again = _torch_module("GRU", num_layers=2, bidirectional=True, dtype="float32", seed=25)
    again.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(layer).items()})
    x = np.random.default_rng(26).normal(size=(B, T, D))
    assert max_error(_run_torch(again, x)[0], _run_torch(module, x)[0]) <= 1e-6
    assert max_error(run_ours(layer, x)[0], _run_torch(module, x)[0]) <= 1e-4


# --- dtype against a backend object ----------------------------------------------------------
def test_a_dtype_that_contradicts_the_backend_object_is_refused():
    rng = np.random.default_rng(27)
    state = {"weight_ih_l0": rng.normal(size=(3 * H, D)), "weight_hh_l0": rng.normal(size=(3 * H, H))}
    mlx_params = {"Wx": rng.normal(size=(4 * H, D)), "Wh": rng.normal(size=(4 * H, H))}
    keras_weights = _keras_weights("LSTM", None, True, D, rng)
    float32 = get_backend("numpy", "float32")
    for convert, source in ((from_torch, state), (from_mlx_nn, mlx_params), (from_keras, keras_weights)):
        with pytest.raises(ConfigError, match=r"computes in float32 but dtype='float64'") as info:
            convert(source, backend=float32, dtype="float64")
        assert "\n" not in str(info.value)
        # Left out, the dtype is the backend object's own; a backend name defaults to float32.
        float64 = convert(source, backend=get_backend("numpy", "float64"))
        assert all(p.dtype == np.float64 for p in float64.numpy_parameters().values())
        assert convert(source, backend=float32, dtype="float32").xp is float32
        named = convert(source, backend="numpy")
        assert all(p.dtype == np.float32 for p in named.numpy_parameters().values())


# --- mlx.nn -------------------------------------------------------------------------------------
@needs_mlx
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
def test_mlx_nn_module_gives_its_own_kind_and_nonlinearity(kind):
    module = _mlx_module(kind, bias=True, seed=28)
    layer = from_mlx_nn(module, backend="numpy")  # the module itself, nothing else
    assert layer.cell_name == kind.split("_")[0]
    if kind.startswith("rnn"):
        assert layer.cell_options["activation"] == kind[4:]
    x = np.random.default_rng(29).normal(size=(B, T, D))
    assert max_error(run_ours(layer, x)[0], _run_mlx_nn(module, x)[0]) <= 1e-4


@needs_mlx
def test_mlx_nn_model_names_the_recurrent_prefixes():
    import mlx.nn as nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, D)
            self.encoder = nn.LSTM(D, H)
            self.decoder = nn.RNN(D, H, nonlinearity=nn.relu)

    model = Model()
    with pytest.raises(ConfigError, match=r"pass prefix= one of 'decoder.', 'encoder.'"):
        from_mlx_nn(model)
    with pytest.raises(CheckpointError, match=r"under prefix 'rnn.'; pass prefix= one of 'decoder.', 'encoder.'"):
        from_mlx_nn(model, prefix="rnn.")
    decoder = from_mlx_nn(model, prefix="decoder.", backend="numpy")  # its nonlinearity read from the module
    assert decoder.cell_name == "rnn" and decoder.cell_options["activation"] == "relu"
    from_tree = from_mlx_nn(model.parameters(), prefix="decoder.", backend="numpy")  # a tree cannot show relu
    assert from_tree.cell_options["activation"] == "tanh"
    with pytest.raises(ConfigError, match="kind='gru' contradicts"):
        from_mlx_nn(model, "gru", prefix="encoder.")
    with pytest.raises(ConfigError, match="nonlinearity='tanh' contradicts"):
        from_mlx_nn(model, prefix="decoder.", nonlinearity="tanh")


def test_mlx_nn_cell_from_the_shapes_without_mlx():
    rng = np.random.default_rng(30)
    for kind, gates in (("gru", 3), ("lstm", 4)):
        params = {"Wx": rng.normal(size=(gates * H, D)), "Wh": rng.normal(size=(gates * H, H))}
        params["b" if kind == "gru" else "bias"] = rng.normal(size=gates * H)
        if kind == "gru":
            params["bhn"] = rng.normal(size=H)
        _same_layer(from_mlx_nn(params, backend="numpy"), from_mlx_nn(params, kind, backend="numpy"))
    with pytest.raises(CheckpointError, match=r"not 1 \(RNN\), 3 \(GRU\) or 4 \(LSTM\)"):
        from_mlx_nn({"Wx": np.zeros((5 * H, D)), "Wh": np.zeros((5 * H, H))})
    tree = {"embed": {"weight": np.zeros((10, D))}, "rnn": {"Wxh": np.zeros((H, D)), "Whh": np.zeros((H, H))}}
    with pytest.raises(ConfigError, match=r"pass prefix='rnn.' \(the recurrent module there\)"):
        from_mlx_nn(tree)


# --- Keras --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["L1-uni", "L2-bi"])
@pytest.mark.parametrize("kind,activation,reset_after", KERAS_CASES, ids=KERAS_IDS)
def test_keras_cell_from_the_shapes(kind, activation, reset_after, layout):
    """Without ``kind``, the weights alone give the layer that the spelled-out call gives."""
    rng = np.random.default_rng(31)
    bidirectional, num_layers = layout.endswith("bi"), int(layout[1])
    per_layer = []
    for index in range(num_layers):
        inputs = D if index == 0 else 2 * H if bidirectional else H
        weights = _keras_weights(kind, reset_after, True, inputs, rng)
        per_layer.append(weights + (_keras_weights(kind, reset_after, True, inputs, rng) if bidirectional else []))
    given = per_layer if num_layers > 1 else per_layer[0]
    inferred = from_keras(given, activation=activation, backend="numpy", dtype="float64")
    _same_layer(inferred, from_keras(given, kind, activation=activation, backend="numpy", dtype="float64"))
    x = rng.normal(size=(B, T, D))
    ref, _ = keras_reference_stack(
        per_layer, kind, x, bidirectional, activation=activation, reset_after=bool(reset_after)
    )
    assert max_error(run_ours(inferred, x)[0], ref) <= 1e-5


def _keras_layer(kind, activation, reset_after, bidirectional, **extra):
    import keras

    options = {"reset_after": reset_after} if kind == "GRU" else {}
    inner = getattr(keras.layers, kind)(H, activation=activation, return_sequences=True, **options, **extra)
    layer = keras.layers.Bidirectional(inner, merge_mode="sum") if bidirectional else inner
    layer(np.zeros((B, T, D), np.float32))  # builds the weights
    return layer


if IN_KERAS_CHILD and HAS_KERAS:  # defined (and so collected) only in the child process

    @pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi-sum"])
    @pytest.mark.parametrize("kind,activation,reset_after", KERAS_CASES, ids=KERAS_IDS)
    def test_keras_layer_object_gives_its_own_settings(kind, activation, reset_after, bidirectional):
        import keras

        layer = _keras_layer(kind, activation, reset_after, bidirectional)
        ours = from_keras(layer, backend="numpy")  # kind, activation, reset_after and merge_mode from the layer
        assert ours.merge == ("sum" if bidirectional else "concat")
        x = np.random.default_rng(32).normal(size=(B, T, D)).astype(np.float32)
        assert max_error(run_ours(ours, x)[0], keras.ops.convert_to_numpy(layer(x))) <= 1e-4


    def test_keras_stack_of_layer_objects_and_refusals():
        import keras

        first = _keras_layer("LSTM", "tanh", None, True)
        second = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True), merge_mode="sum")
        x = np.random.default_rng(33).normal(size=(B, T, D)).astype(np.float32)
        with pytest.raises(ConfigError, match="no weights yet; build it first"):
            from_keras([first, second])
        expected = keras.ops.convert_to_numpy(second(first(x)))  # builds the second layer
        stacked = from_keras([first, second], backend="numpy")
        assert stacked.num_layers == 2 and stacked.bidirectional
        assert max_error(run_ours(stacked, x)[0], expected) <= 1e-4
        with pytest.raises(ConfigError, match="must share their settings"):
            from_keras([first, _keras_layer("LSTM", "tanh", None, False)])
        with pytest.raises(ConfigError, match="go_backwards=True"):
            from_keras(_keras_layer("GRU", "tanh", True, False, go_backwards=True))
        with pytest.raises(ConfigError, match=r"model.get_layer"):
            from_keras(keras.Sequential([keras.Input((T, D)), keras.layers.GRU(H)]))
        with pytest.raises(ConfigError, match="reset_after=False contradicts"):
            from_keras(_keras_layer("GRU", "tanh", True, False), reset_after=False)
        with pytest.raises(ConfigError, match="kind='lstm' contradicts"):
            from_keras(_keras_layer("GRU", "tanh", True, False), "LSTM")


@needs_keras
@pytest.mark.skipif(IN_KERAS_CHILD, reason="this is the child")
def test_real_keras_layer_objects():
    """The two tests above, against real Keras 3 layers, in one child pytest (JAX stays out of here)."""
    selected = "keras_layer_object_gives_its_own_settings or keras_stack_of_layer_objects_and_refusals"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", __file__, "-k", selected],
        env={**os.environ, "MLXRNN_KERAS_CHILD": "1"}, capture_output=True, text=True,
        cwd=Path(__file__).resolve().parents[1], timeout=600,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    expected = 2 * len(KERAS_CASES) + 1  # both directions of every case, and the stack test
    assert result.returncode == 0 and f"{expected} passed" in summary and "skipped" not in summary, result.stdout[-3000:]
