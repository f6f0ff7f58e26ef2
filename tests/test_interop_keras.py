"""Interop with Keras: real Keras 3 layers (plain, ``Bidirectional`` and stacked) on its JAX backend, no
TensorFlow (CI installs keras and jax from .ci/requirements-peers.txt; skipped where either is
missing); and, on every layout with and without bias, ``keras_reference`` below, an independent
NumPy transcription of Keras's documented cell equations and weight layout.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlxrnn import make_recurrent
from mlxrnn.errors import CheckpointError, ConfigError
from mlxrnn.io.interop import from_keras, to_keras
from tests.interop_support import (
    B,
    D,
    H,
    T,
    max_error,
    needs_keras,
    run_ours,
)

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
    ours_out, ours_state = run_ours(layer, x)
    assert max_error(ours_out, ref_out) <= 1e-5
    for ours, ref in zip(ours_state, ref_state, strict=True):
        assert max_error(ours, ref) <= 1e-5

    # Round trip. Single-bias layouts are exact; the GRU (2, 3H) bias is exact once its recurrent
    # row is zero outside the candidate block (the z and r rows are stored summed).
    saved = to_keras(layer, use_bias=use_bias)
    if kind == "GRU" and reset_after and use_bias:
        assert (
            max_error(run_ours(from_keras(saved, kind, merge=merge, backend="numpy", dtype="float64"), x)[0], ref_out)
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
    ours_out, ours_state = run_ours(layer, x)
    assert max_error(ours_out, ref_out) <= 1e-4
    per_direction = len(ref_states) // (2 if bidirectional else 1)
    assert per_direction == layer.state_size
    for direction in range(2 if bidirectional else 1):
        for k, ref in enumerate(ref_states[direction * per_direction : (direction + 1) * per_direction]):
            assert max_error(ours_state[k][direction], ref) <= 1e-4
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
    ours_out, ours_state = run_ours(layer, x)
    assert max_error(ours_out, keras_results[name + "/out"]) <= 1e-4
    for index in range(2):
        states = _keras_states(keras_results, name, index)
        half = len(states) // 2
        for direction, direction_states in enumerate((states[:half], states[half:])):  # our index: 2ℓ + d
            for k, ref in enumerate(direction_states):
                assert max_error(ours_state[k][2 * index + direction], ref) <= 1e-4
