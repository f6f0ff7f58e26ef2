"""minGRU and minLSTM: the scan against the recurrence, the two evaluation modes against each other.

The finite-difference, MLX-autodiff and backend-agreement checks every cell gets come from
``CELL_VARIANTS`` (tests/test_gradients.py, tests/test_backends.py); here:

* :func:`linear_scan` equals the plain sequential recurrence for every chunk length, both
  directions, any sign, and issues O(√T) array operations, not O(T);
* the whole-sequence mode (the layer's forward/backward) equals the one-step mode
  (``Recurrent.step`` and the cells' ``step_backward`` walked by hand) in float64 to 1e-10,
  with carried state across windows, masks (interior gaps too) and both directions;
* the minLSTM gate survives pre-activations whose sigmoids round to 0;
* the CLI trains, samples and reloads them; interop and the bench's peers refuse/skip them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mlxrnn
from mlxrnn import get_backend, make_recurrent
from mlxrnn.errors import ConfigError
from mlxrnn.lm.model import load_language_model
from mlxrnn.nn.scan import SEQUENTIAL_FROM_WIDTH, chunk_length, linear_scan
from mlxrnn.testing import available_backends
from mlxrnn.text.corpus import bundled_corpus_path

MIN_CELLS = [("mingru", {}), ("minlstm", {"forget_bias": 1.0})]
IDS = ["mingru", "minlstm"]
EXACT = {"rtol": 1e-10, "atol": 1e-10}
np64 = get_backend("numpy", dtype="float64")
HAS_TORCH = __import__("importlib").util.find_spec("torch") is not None


def _sequential(a, b, h0, reverse=False):
    order = range(len(a) - 1, -1, -1) if reverse else range(len(a))
    h, out = h0, np.empty_like(b)
    for t in order:
        h = a[t] * h + b[t]
        out[t] = h
    return out


# --- the scan -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 7, 13, 36])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_equals_the_recurrence_for_every_chunk_length(steps, reverse):
    rng = np.random.default_rng(steps)
    a = rng.uniform(0.0, 1.0, size=(steps, 2, 3))
    a[rng.random(a.shape) < 0.1] = 0.0  # a state forgotten completely
    a[rng.random(a.shape) < 0.1] = 1.0  # ... and kept exactly (padded steps)
    b, h0 = rng.normal(size=(steps, 2, 3)), rng.normal(size=(2, 3))  # b of both signs
    expected = _sequential(a, b, h0, reverse)
    for chunk in [None, *range(1, steps + 2)]:
        np.testing.assert_allclose(linear_scan(np64, a, b, h0, reverse=reverse, chunk=chunk), expected,
                                   rtol=1e-13, atol=1e-13, err_msg=f"chunk {chunk}")


def test_linear_scan_is_vectorised_over_time():
    """A blocked scan issues ~2√(10T) array operations; a per-step loop would issue 2T (2048 here)."""
    calls = []

    class Counted(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            calls.append(ufunc.__name__)
            plain = [x.view(np.ndarray) if isinstance(x, Counted) else x for x in inputs]
            return getattr(ufunc, method)(*plain, **kwargs).view(Counted)

    rng = np.random.default_rng(0)
    steps = 1024
    a, b = rng.uniform(size=(steps, 1, 4)).view(Counted), rng.normal(size=(steps, 1, 4)).view(Counted)
    out = linear_scan(np64, a, b, np.zeros((1, 4)))
    assert len(calls) < 250, len(calls)
    np.testing.assert_allclose(np.asarray(out), _sequential(np.asarray(a), np.asarray(b), np.zeros((1, 4))),
                               rtol=1e-12, atol=1e-12)


def test_chunk_length_rule():
    numpy = get_backend("numpy")
    assert chunk_length(numpy, 256, 32 * 512) == 256  # wide steps on NumPy: one chunk, the sequential loop
    assert chunk_length(numpy, 256, SEQUENTIAL_FROM_WIDTH["numpy"]) == 256
    assert chunk_length(numpy, 256, SEQUENTIAL_FROM_WIDTH["numpy"] - 1) == 8
    assert chunk_length(numpy, 256, 64) == 8  # narrow: a divisor of 256 near √(2·256/5) ≈ 10.1
    assert chunk_length(numpy, 1024, 64) == 16  # √(409.6) ≈ 20.2: 16 is nearer in ratio than 32
    assert chunk_length(numpy, 97, 64) == 7  # a prime: ⌈√(38.8)⌉, the end padded
    assert chunk_length(numpy, 1, 64) == 1

    class OtherBackend:
        name = "mlx"

    assert chunk_length(OtherBackend(), 256, 10**6) == 8  # MLX always takes blocks


@pytest.mark.skipif("mlx" not in available_backends(), reason="MLX is not installed")
def test_linear_scan_on_mlx_matches_numpy():
    mx_backend = get_backend("mlx")
    rng = np.random.default_rng(1)
    a, b, h0 = rng.uniform(size=(37, 2, 3)), rng.normal(size=(37, 2, 3)), rng.normal(size=(2, 3))
    for reverse in (False, True):
        out = linear_scan(mx_backend, *(mx_backend.from_numpy(v) for v in (a, b, h0)), reverse=reverse)
        np.testing.assert_allclose(mx_backend.to_numpy(out), _sequential(a, b, h0, reverse), rtol=2e-5, atol=2e-5)


# --- the two evaluation modes -------------------------------------------------------------------------------


def _layer(cell, options, **kw):
    layer = make_recurrent(cell, 3, 4, backend="numpy", dtype="float64", seed=2, **kw, **options)
    rng = np.random.default_rng(5)  # weights and biases large enough that gates saturate somewhere
    layer.load_parameters({name: rng.normal(0.0, 1.0, size=v.shape) for name, v in layer.parameters().items()})
    return layer


@pytest.mark.parametrize("cell,options", MIN_CELLS, ids=IDS)
@pytest.mark.parametrize("steps", [1, 5, 40, 101])
def test_sequence_forward_equals_stepping(cell, options, steps):
    layer = _layer(cell, options, num_layers=2)
    rng = np.random.default_rng(steps)
    x, h0 = rng.normal(size=(3, steps, 3)), rng.normal(size=(2, 3, 4))
    outputs, final, _ = layer.forward(x, initial_state=h0)
    state = h0
    for t in range(steps):
        h, state = layer.step(x[:, t], state)
        np.testing.assert_allclose(h, outputs[:, t], **EXACT)
    np.testing.assert_allclose(state, final, **EXACT)


@pytest.mark.parametrize("cell,options", MIN_CELLS, ids=IDS)
def test_state_carried_across_windows_equals_one_pass(cell, options):
    """Truncated-BPTT windows with the final state carried over give the one-pass outputs, masks included."""
    layer = _layer(cell, options, num_layers=2)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 60, 3))
    mask = (rng.random((3, 60)) > 0.2).astype(np.float64)  # gaps anywhere: the state skips them
    outputs, final, _ = layer.forward(x, mask=mask)
    state, pieces = None, []
    for start, stop in [(0, 17), (17, 18), (18, 60)]:
        out, state, _ = layer.forward(x[:, start:stop], initial_state=state, mask=mask[:, start:stop])
        pieces.append(out)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), outputs, **EXACT)
    np.testing.assert_allclose(state, final, **EXACT)


def _step_mode(cell, params, x_proj, h0, mask, reverse, d_out, d_final):
    """The layer's per-step loop, by hand: cell.step / cell.step_backward with the mask blend."""
    steps = x_proj.shape[0]
    order = list(range(steps - 1, -1, -1)) if reverse else list(range(steps))
    h, outputs, caches = h0, np.zeros(x_proj.shape[:2] + (cell.hidden_size,)), {}
    for t in order:
        (new,), caches[t] = cell.step(np64, params, x_proj[t], (h,))
        h = mask[t] * new + (1 - mask[t]) * h
        outputs[t] = mask[t] * new
    d_h, d_x_proj = d_final, np.zeros_like(x_proj)
    for t in reversed(order):
        d_x_proj[t], _, (d_prev,) = cell.step_backward(np64, params, caches[t], (mask[t] * (d_h + d_out[t]),))
        d_h = d_prev + (1 - mask[t]) * d_h
    return outputs, h, d_x_proj, d_h


@pytest.mark.parametrize("cell,options", MIN_CELLS, ids=IDS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("steps", [3, 45])
def test_sequence_backward_equals_the_per_step_backward(cell, options, reverse, steps):
    layer = _layer(cell, options)
    cell_obj, params = layer.cells[0], layer._direction_params(0, 0)
    rng = np.random.default_rng(steps + reverse)
    B, H = 3, 4
    x_proj = rng.normal(0.0, 2.0, size=(steps, B, cell_obj.gate_width))
    h0, d_final, d_out = rng.normal(size=(B, H)), rng.normal(size=(B, H)), rng.normal(size=(steps, B, H))
    mask = (rng.random((steps, B, 1)) > 0.3).astype(np.float64)
    ref_out, ref_final, ref_d_proj, ref_d_h0 = _step_mode(cell_obj, params, x_proj, h0, mask, reverse, d_out, d_final)
    out, (final,), cache = cell_obj.sequence_forward(np64, params, x_proj, (h0,), mask, reverse=reverse)
    d_proj, (d_h0,) = cell_obj.sequence_backward(np64, params, cache, d_out, (d_final,))
    np.testing.assert_allclose(out, ref_out, **EXACT)
    np.testing.assert_allclose(final, ref_final, **EXACT)
    np.testing.assert_allclose(d_proj.reshape(steps, B, -1), ref_d_proj, **EXACT)
    np.testing.assert_allclose(d_h0, ref_d_h0, **EXACT)


@pytest.mark.parametrize("cell,options", MIN_CELLS, ids=IDS)
def test_bidirectional_padded_batch_equals_each_sequence_alone(cell, options):
    """Right padding: the reverse direction starts at each sequence's own last step, on long T too."""
    layer = _layer(cell, options, bidirectional=True, num_layers=2)
    rng = np.random.default_rng(8)
    lengths = np.array([50, 23, 1])
    x = rng.normal(size=(3, 50, 3)) * 10
    outputs, final, _ = layer.forward(x, lengths=lengths)
    for b, length in enumerate(lengths):
        alone, alone_final, _ = layer.forward(x[b : b + 1, :length])
        np.testing.assert_allclose(outputs[b : b + 1, :length], alone, **EXACT)
        np.testing.assert_allclose(final[:, b : b + 1], alone_final, **EXACT)
        assert np.all(outputs[b, length:] == 0)


def test_minlstm_update_gate_is_the_normalised_ratio_and_survives_saturation():
    cell = mlxrnn.make_cell("minlstm", 1, 3)
    k_u, k_f = np.array([[0.3, -2.0, 40.0]]), np.array([[-1.0, 5.0, -3.0]])
    update, _ = cell.gates(np64, np.concatenate([k_u, k_f, np.zeros((1, 3))], axis=1))
    sig = lambda k: 1 / (1 + np.exp(-k))  # noqa: E731
    np.testing.assert_allclose(update, sig(k_u) / (sig(k_u) + sig(k_f)), rtol=1e-14)
    # float32 pre-activations whose sigmoids both round to 0: the ratio would be 0/0
    np32 = get_backend("numpy")
    x_proj = np.array([[-40.0, -60.0, 1.0], [-60.0, -40.0, 1.0]], dtype=np.float32).reshape(2, 3)
    cell1 = mlxrnn.make_cell("minlstm", 1, 1)
    update, _ = cell1.gates(np32, x_proj)
    d_x_proj = cell1.gates_backward(np32, x_proj, update, np.ones_like(update), np.ones_like(update))
    assert np.all(np.isfinite(update)) and np.all(np.isfinite(d_x_proj))
    np.testing.assert_allclose(update[:, 0], [1.0, 0.0], atol=1e-7)  # Γ_u/(Γ_f+Γ_u) ≈ e^{20}/(1+e^{20}), e^{-20}


def test_min_cells_have_no_recurrent_weights_and_check_their_options():
    layer = make_recurrent("minlstm", 3, 4)
    assert sorted(layer.params) == ["l0.fwd.W_x", "l0.fwd.b"]
    assert layer.params["l0.fwd.W_x"].shape == (3, 12)
    np.testing.assert_array_equal(layer.xp.to_numpy(layer.params["l0.fwd.b"])[4:8], 1.0)  # forget bias
    assert sorted(make_recurrent("mingru", 3, 4).params) == ["l0.fwd.W_x", "l0.fwd.b"]
    with pytest.raises(ConfigError, match="forget_bias must be a finite number"):
        make_recurrent("minlstm", 3, 4, forget_bias=float("nan"))
    with pytest.raises(ConfigError, match="unknown option.*peephole.*'mingru'"):
        make_recurrent("mingru", 3, 4, peephole=True)


# --- everywhere a cell name goes ----------------------------------------------------------------------------


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "mlxrnn_cli.main", *args], capture_output=True, text=True,
                            env=env, timeout=300)
    if result.returncode != 0 and "No module named mlxrnn_cli" in result.stderr:
        pytest.skip("mlxrnn_cli is not installed (pip install -e .)")
    return result


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_cli_trains_samples_and_reloads(tmp_path, cell):
    corpus = tmp_path / "small.txt"
    corpus.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    run = tmp_path / "run"
    result = _cli("train", str(corpus), "--cell", cell, "--layers", "2", "--hidden", "16", "--embed", "8",
                  "--seq-len", "24", "--batch-size", "4", "--steps", "12", "--eval-every", "6", "--lr", "0.01",
                  "--backend", "numpy", "--out", str(run), "--sample-length", "0", "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert np.isfinite(summary["best_val_loss"])
    assert json.loads((run / "options.json").read_text())["options"]["cell"] == cell
    for backend in available_backends():
        sampled = _cli("sample", str(run), "--length", "30", "--seed", "3", "--backend", backend, "--json")
        assert sampled.returncode == 0, sampled.stderr
        assert len(json.loads(sampled.stdout)["samples"][0]) > 0
    lm, checkpoint = load_language_model(run, backend="numpy")
    assert lm.model.rnn.cell_name == cell and sorted(checkpoint.weights) == sorted(lm.model.parameters())


def test_interop_refuses_and_bench_peers_skip_min_cells():
    from mlxrnn.bench.harness import BenchSettings, run_benchmarks
    from mlxrnn.bench.sizes import gemm_flops, parse_size

    layer = make_recurrent("mingru", 3, 4)
    for export in (mlxrnn.interop.to_torch, mlxrnn.interop.to_keras, mlxrnn.interop.to_mlx_nn):
        with pytest.raises(ConfigError, match="have no 'mingru' cell: only rnn, gru, lstm"):
            export(layer)
    _, shape = parse_size("tiny")
    assert gemm_flops("mingru", shape, "train") < gemm_flops("gru", shape, "train")  # no recurrence products
    report = run_benchmarks(BenchSettings(cells=["mingru"], sizes=["tiny"], impls=["numpy", "torch"],
                                          tasks=["forward"], repeats=1, warmup=0), isolate=False)
    assert {row["impl"] for row in report["results"]} == {"numpy"}
    expected = "torch skipped for mingru: it has no such cell" if HAS_TORCH else "torch skipped: PyTorch is not"
    assert any(expected in note for note in report["notes"]), report["notes"]


def test_speed_benchmark_matches_parameter_counts_of_the_real_models():
    """benchmarks/mingru_speed.py sizes the minimal cells by a formula: it must count what the models hold."""
    import importlib.util
    from pathlib import Path

    from mlxrnn import SequenceModel, SequenceModelConfig
    from mlxrnn.bench.sizes import Shape

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "mingru_speed.py"
    spec = importlib.util.spec_from_file_location("mingru_speed", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for layers, lstm_hidden in ((1, 24), (2, 40)):
        reference = Shape(batch=2, steps=4, embed=8, hidden=lstm_hidden, vocab=11, layers=layers)
        goal = script.parameter_count("lstm", reference)
        for cell in ("lstm", "gru", "mingru", "minlstm"):
            hidden = script.matched_hidden(cell, reference, step=1)
            model = SequenceModel(SequenceModelConfig(input_size=11, embed_size=8, hidden_size=hidden, output_size=11,
                                                      num_layers=layers, cell=cell))
            real = sum(int(np.prod(v.shape)) for v in model.parameters().values())
            shape = Shape(**{**reference.__dict__, "hidden": hidden})
            assert script.parameter_count(cell, shape) == real, cell
            assert abs(real - goal) <= 0.05 * goal, (cell, hidden, real, goal)


# --- the compiled whole-sequence kernels (numba) against the reference --------------------------------------

HAS_NUMBA = __import__("importlib").util.find_spec("numba") is not None
#: float64 agrees to rounding; float32 to the kernels' per-call tolerance (tests/test_kernels.py)
FUSED_TOL = {"float64": EXACT, "float32": {"rtol": 1e-5, "atol": 2e-6}}


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install 'mlxrnn[fast]')")
@pytest.mark.parametrize("cell,options", MIN_CELLS, ids=IDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_compiled_sequence_kernels_equal_the_reference(cell, options, dtype, reverse, masked):
    """numba's one-pass forward and backward (states, outputs, dx_proj, dh0, recorded δ) against
    the reference gates + linear scan, with saturated gates and padded steps."""
    from mlxrnn.backend.numpy_backend import NumpyBackend

    plain, fused = NumpyBackend(dtype, kernels="numpy"), NumpyBackend(dtype, kernels="numba")
    assert getattr(plain.kernels, "minimal_forward", None) is None and fused.kernels.minimal_forward is not None
    layer = _layer(cell, options)
    cell_obj, params = layer.cells[0], layer._direction_params(0, 0)
    rng = np.random.default_rng(11 + reverse + 2 * masked)
    T, B, H = 37, 3, 4
    x_proj = rng.normal(0.0, 3.0, size=(T, B, cell_obj.gate_width)).astype(dtype)
    x_proj[3, 1, :H], x_proj[3, 1, H : 2 * H] = -95.0, -100.0  # both gates below e^-88: minLSTM's ratio
    # takes its limit σ(k_u − k_f) = σ(5), not 0/0
    h0, d_final = rng.normal(size=(B, H)).astype(dtype), rng.normal(size=(B, H)).astype(dtype)
    d_out = rng.normal(size=(T, B, H)).astype(dtype)
    mask = (rng.random((T, B, 1)) > 0.3).astype(dtype) if masked else None
    results = []
    for xp in (plain, fused):
        out, (final,), cache = cell_obj.sequence_forward(xp, params, x_proj, (h0,), mask, reverse=reverse)
        record = [None] * T
        d_proj, (d_h0,) = cell_obj.sequence_backward(xp, params, cache, d_out, (d_final,), record)
        results.append([np.asarray(out), final, d_proj, d_h0, np.stack([r[0] for r in record])])
    assert "fused" in cache  # the second run took the compiled path
    for name, ref, got in zip(["outputs", "final", "d_x_proj", "d_h0", "recorded δ"], *results):
        assert got.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(got, ref, **FUSED_TOL[dtype], err_msg=name)
