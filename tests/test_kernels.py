"""The cells' point-wise kernels: every implementation against the plain reference, and the
compiled (numba) path under the same float64 finite-difference oracle as the NumPy one.

Paths: ``plain`` (mlxrnn/backend/pointwise.py, what MLX runs), ``numpy`` (in place, the default
install) and ``numba`` (the ``fast`` extra; its tests skip with a reason where numba is absent).
Tolerances: float64 agrees to 1e-12; float32 to rtol 1e-5, atol 2e-6 per kernel call (the numba
float32 tanh is a rational approximation with error < 4e-7), and to the backends' float32
tolerance (rtol 2e-4, atol 2e-5) after a whole sequence forward and backward.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxrnn import SequenceModel, SequenceModelConfig, make_recurrent
from mlxrnn.backend.kernels import KernelChoice, kernel_choice, make_kernels, numba_installed
from mlxrnn.backend.numpy_backend import NumpyBackend
from mlxrnn.backend.pointwise import PlainKernels
from mlxrnn.errors import BackendUnavailable, ConfigError
from mlxrnn.testing import (
    CELL_VARIANT_IDS,
    CELL_VARIANTS,
    assert_gradients_close,
    check_layer_gradients,
    numerical_gradient,
)

HAS_NUMBA = numba_installed()
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install 'mlxrnn[fast]')")
PATHS = ["numpy", pytest.param("numba", marks=needs_numba)]
KERNEL_TOL = {"float64": {"rtol": 1e-12, "atol": 1e-12}, "float32": {"rtol": 1e-5, "atol": 2e-6}}
SEQUENCE_TOL = {"rtol": 2e-4, "atol": 2e-5}
#: the cell variants whose step runs on the kernels (the others keep their inline math)
KERNEL_VARIANTS = [("lstm", {"peephole": False}), ("gru", {"variant": "reset_after"}), ("rnn", {"activation": "tanh"})]


def _kernels(path: str):
    return make_kernels(KernelChoice(path, "test"))


def _array(rng, shape, dtype, layout):
    """Random values in the time loop's batch-fastest layout, or row-major."""
    a = rng.normal(0.0, 1.5, size=shape).astype(dtype)
    return np.asfortranarray(a) if layout == "batch_fastest" else np.ascontiguousarray(a)


def _calls(rng, B, H, dtype, layout):
    """(method name, argument builder) for every kernel; builders return fresh arrays each call."""
    def arr(*shape):
        return _array(rng, shape, dtype, layout)

    gates4 = 1.0 / (1.0 + np.exp(-arr(B, 4 * H)))  # σ-like values in (0, 1)
    gates4[:, 2 * H : 3 * H] = np.tanh(gates4[:, 2 * H : 3 * H] * 3 - 1.5)
    gates2 = 1.0 / (1.0 + np.exp(-arr(B, 2 * H)))
    fixed = {"lstm": (arr(B, 4 * H), arr(B, H), arr(B, H), gates4, np.tanh(arr(B, H))),
             "gru": (arr(B, 3 * H), arr(H), arr(B, H), gates2, np.tanh(arr(B, H)), arr(B, H), arr(B, H)),
             "tanh": (arr(B, H), arr(B, H), np.tanh(arr(B, H)))}
    lstm, gru, tanh = fixed["lstm"], fixed["gru"], fixed["tanh"]
    return [
        ("lstm_forward", lambda: (arr(B, 4 * H), lstm[0], lstm[1])),
        ("lstm_backward", lambda: (lstm[1], lstm[2], lstm[3], lstm[4], arr(B, H))),
        ("gru_forward", lambda: (arr(B, 3 * H), gru[0], gru[1], gru[2])),
        ("gru_backward", lambda: (gru[5], gru[3], gru[4], gru[6], gru[2])),
        ("tanh_forward", lambda: (arr(B, H), tanh[0])),
        ("tanh_backward", lambda: (tanh[1], tanh[2])),
    ]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout,B,H", [("batch_fastest", 5, 7), ("batch_fastest", 32, 16), ("row_major", 1, 9),
                                        ("row_major", 3, 4)])
def test_kernels_match_the_plain_reference(path, dtype, layout, B, H):
    rng = np.random.default_rng(B * 100 + H)
    fast, plain = _kernels(path), PlainKernels(NumpyBackend(dtype))
    for method, make_args in _calls(rng, B, H, np.dtype(dtype), layout):
        args = make_args()
        copies = [a.copy() for a in args]
        expected = getattr(plain, method)(*copies)
        before = [a.copy() for a in args]
        got = getattr(fast, method)(*args)
        expected, got = (out if isinstance(out, tuple) else (out,) for out in (expected, got))
        assert len(got) == len(expected), method
        for k, (g, e) in enumerate(zip(got, expected)):
            assert g.shape == e.shape and g.dtype == np.dtype(dtype), f"{method} output {k}"
            np.testing.assert_allclose(g, e, err_msg=f"{path} {method} output {k}", **KERNEL_TOL[dtype])
        first_read_only = 1 if method.endswith("_forward") else 0  # a forward kernel may reuse ``rec``
        for k in range(first_read_only, len(args)):
            np.testing.assert_array_equal(args[k], before[k], err_msg=f"{path} {method} overwrote input {k}")


@needs_numba
def test_numba_float32_tanh_is_accurate_and_keeps_nan_and_inf():
    from mlxrnn.backend.numba_pointwise import tanh_array

    grid = np.linspace(-12, 12, 2_000_001, dtype=np.float32)
    tiny = np.geomspace(1e-30, 1e-2, 10_001, dtype=np.float32)
    x = np.concatenate([grid, tiny, -tiny])
    out = np.empty_like(x)
    tanh_array(x, out)
    assert np.abs(out.astype(np.float64) - np.tanh(x.astype(np.float64))).max() < 4e-7
    assert np.all(np.abs(out) <= 1.0) and np.all(np.sign(out) == np.sign(x))
    special = np.array([np.nan, np.inf, -np.inf, 0.0, 100.0], dtype=np.float32)
    out = np.empty_like(special)
    tanh_array(special, out)
    assert np.isnan(out[0]) and list(out[1:]) == [1.0, -1.0, 0.0, 1.0]


def _layer_run(cell, options, xp, rng, bidirectional, masked):
    layer = make_recurrent(cell, 5, 6, num_layers=2, bidirectional=bidirectional, backend=xp, seed=3, **options)
    B, T = 4, 7
    x = rng.normal(size=(B, T, 5))
    lengths = np.array([7, 3, 1, 6]) if masked else None
    outputs, final, cache = layer.forward(x, lengths=lengths)
    d_out = np.random.default_rng(1).normal(size=outputs.shape).astype(outputs.dtype)
    d_x, d_initial, grads = layer.backward(d_out, None, cache)
    parts = list(final) if layer.state_size > 1 else [final]
    return [outputs, *parts, d_x, *(list(d_initial) if layer.state_size > 1 else [d_initial]),
            *(grads[name] for name in sorted(grads))]


@needs_numba
@pytest.mark.parametrize("cell,options", KERNEL_VARIANTS, ids=[c for c, _ in KERNEL_VARIANTS])
@pytest.mark.parametrize("bidirectional,masked", [(False, False), (True, True)])
def test_numba_and_numpy_layers_agree_in_float32(cell, options, bidirectional, masked):
    results = [_layer_run(cell, options, NumpyBackend("float32", kernels=path), np.random.default_rng(0),
                          bidirectional, masked) for path in ("numpy", "numba")]
    for k, (a, b) in enumerate(zip(*results)):
        np.testing.assert_allclose(b, a, err_msg=f"result {k}", **SEQUENCE_TOL)


@needs_numba
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=CELL_VARIANT_IDS)
@settings(max_examples=12, deadline=None)
@given(bidirectional=st.booleans(), masked=st.booleans(), with_initial_state=st.booleans(),
       seed=st.integers(0, 2**16))
def test_numba_layer_bptt_matches_finite_differences(cell, options, bidirectional, masked, with_initial_state, seed):
    """The float64 oracle of tests/test_gradients.py, on a backend forced onto the numba kernels."""
    xp = NumpyBackend("float64", kernels="numba")
    layer = make_recurrent(cell, 2, 3, num_layers=2, bidirectional=bidirectional, backend=xp, seed=seed, **options)
    assert xp.kernels.name == "numba"
    check_layer_gradients(layer, np.random.default_rng(seed), 3, 4, masked, with_initial_state)


@needs_numba
@pytest.mark.parametrize("cell,options", KERNEL_VARIANTS, ids=[c for c, _ in KERNEL_VARIANTS])
def test_numba_model_gradients_through_the_folded_embedding(cell, options):
    rng = np.random.default_rng(5)
    config = SequenceModelConfig(input_size=6, embed_size=3, hidden_size=3, output_size=6, cell=cell,
                                 cell_options=options, seed=2)
    model = SequenceModel(config, backend=NumpyBackend("float64", kernels="numba"))
    model.load_parameters({n: rng.normal(0.0, 0.6, size=v.shape) for n, v in model.parameters().items()})
    batch = {"inputs": rng.integers(0, 6, (2, 5)), "targets": rng.integers(0, 6, (2, 5)), "lengths": np.array([5, 2])}
    _, grads, _ = model.loss_and_grads(batch)
    for name, value in model.parameters().items():
        assert_gradients_close(grads[name], numerical_gradient(lambda: float(model.loss(batch)[0]), value), name)


# --- choosing the kernels ------------------------------------------------------------------------


def test_kernel_choice_says_why(monkeypatch):
    monkeypatch.delenv("MLXRNN_KERNELS", raising=False)
    assert kernel_choice("float32", "numpy").name == "numpy"
    assert kernel_choice("float64").name == "numpy"
    monkeypatch.setenv("MLXRNN_KERNELS", "numpy")
    choice = kernel_choice("float32")
    assert choice.name == "numpy" and "MLXRNN_KERNELS" in choice.reason
    monkeypatch.setenv("MLXRNN_KERNELS", "fastest")
    with pytest.raises(ConfigError, match="unknown MLXRNN_KERNELS value 'fastest': choose one of auto, numpy, numba"):
        kernel_choice("float32")
    with pytest.raises(ConfigError, match="unknown kernels 'c'"):
        _ = NumpyBackend("float32", kernels="c").kernels


def test_without_numba_auto_stays_on_numpy_and_forcing_it_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MLXRNN_KERNELS", raising=False)
    monkeypatch.setattr("mlxrnn.backend.kernels.numba_installed", lambda: False)
    choice = kernel_choice("float32")
    assert choice.name == "numpy" and "pip install 'mlxrnn[fast]'" in choice.reason
    with pytest.raises(BackendUnavailable, match="numba is not installed; pip install 'mlxrnn\\[fast\\]'"):
        kernel_choice("float32", "numba")


@needs_numba
def test_auto_picks_numba_for_float32_when_installed(monkeypatch):
    monkeypatch.delenv("MLXRNN_KERNELS", raising=False)
    xp = NumpyBackend("float32")
    assert xp.kernels.name == "numba" and xp.time_loop.kernels.name == "numba"
    assert xp.kernel_choice.name == "numba" and xp.kernel_choice.load_seconds is not None


def test_importing_mlxrnn_or_making_a_numpy_backend_does_not_import_numba():
    import subprocess
    import sys

    code = ("import sys, mlxrnn; from mlxrnn.backend.numpy_backend import NumpyBackend; NumpyBackend('float32'); "
            "sys.exit(1 if 'numba' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the optimizer's fused update -----------------------------------------------------------------------------


@needs_numba
@pytest.mark.parametrize("name,options", [("adam", {}), ("adam", {"weight_decay": 0.1}), ("adamw", {})])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_adam_equals_the_reference_over_several_steps(name, options, dtype):
    """numba's one-pass Adam/AdamW against the optimizer's own array expressions (plain NumPy
    kernels), with a non-contiguous gradient that must fall back to the reference; the inputs are
    never modified (a step stays undoable)."""
    from mlxrnn.nn.optim import make_optimizer

    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(5, 7)).astype(dtype), "b": rng.normal(size=(7,)).astype(dtype)}
    results = []
    for kernels in ("numpy", "numba"):
        xp = NumpyBackend(dtype, kernels=kernels)
        optimizer = make_optimizer(name, lr=0.05, **options)
        current = {k: v.copy() for k, v in params.items()}
        grads_rng = np.random.default_rng(9)
        for _ in range(4):
            grads = {k: grads_rng.normal(size=v.shape).astype(dtype) for k, v in current.items()}
            grads["W"] = np.asfortranarray(grads["W"]) if _ % 2 else grads["W"]  # the fallback, every other step
            before = {k: v.copy() for k, v in current.items()}
            current = optimizer.update(xp, current, grads)
            for k in before:
                assert current[k] is not before[k]
        results.append((current, {k: dict(s) for k, s in optimizer.state.items()}))
    (ref, ref_state), (fused, fused_state) = results
    tol = KERNEL_TOL[dtype]
    for k in ref:
        assert fused[k].dtype == np.dtype(dtype)
        np.testing.assert_allclose(fused[k], ref[k], **tol, err_msg=k)
        for slot in ("m", "v"):
            np.testing.assert_allclose(fused_state[k][slot], ref_state[k][slot], **tol, err_msg=f"{k}.{slot}")
    kernels = NumpyBackend(dtype, kernels="numba").kernels
    flat = [np.ones((3, 4), dtype=dtype) for _ in range(4)]
    assert kernels.adam_update(*flat, 0.9, 0.999, 0.1, 1e-8) is not None  # the compiled pass ran above
    assert kernels.adam_update(np.asfortranarray(flat[0]), *flat[1:], 0.9, 0.999, 0.1, 1e-8) is None
