"""The two backends agree: same initial weights, same forward, same gradients, same training.

MLX here is the Linux CPU build; shapes stay small because its BLAS is slow. On MLX the
hand-written BPTT is also checked against MLX's own autodiff (a second independent oracle).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mlxrnn
from mlxrnn import Adam, SequenceModel, SequenceModelConfig, Trainer, get_backend, make_recurrent
from mlxrnn.backend import ArrayBackend, auto_choice
from mlxrnn.errors import BackendUnavailable, ConfigError
from mlxrnn.testing import available_backends

from .test_gradients import CELL_VARIANTS, VARIANT_IDS

HAS_MLX = mlxrnn.mlx_installed()
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="MLX is not installed (pip install 'mlxrnn[mlx]')")
FLOAT32_TOL = {"rtol": 2e-4, "atol": 2e-5}


def _model(cell, options, backend, **overrides):
    config = dict(input_size=7, embed_size=5, hidden_size=6, num_layers=2, bidirectional=True,
                  output_size=7, cell=cell, cell_options=options, seed=11)
    config.update(overrides)
    return SequenceModel(SequenceModelConfig(**config), backend=backend)


def _batch(seed=0, B=3, T=5, vocab=7):
    rng = np.random.default_rng(seed)
    return {"inputs": rng.integers(0, vocab, (B, T)), "targets": rng.integers(0, vocab, (B, T)),
            "lengths": np.array([T, T - 2, 1])}


def _to_np(xp, tree):
    if isinstance(tree, dict):
        return {k: _to_np(xp, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return [_to_np(xp, v) for v in tree]
    return xp.to_numpy(tree)


def test_import_loads_neither_mlx_nor_click():
    code = "import sys, mlxrnn; bad = [m for m in ('mlx', 'click', 'safetensors', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", available_backends())
def test_every_backend_implements_the_protocol_and_its_layout_methods(name):
    """The recurrent layers call the layout methods unconditionally: each backend must have them,
    and they (and the time-loop backend's matmul) must never change a value."""
    xp = get_backend(name)
    assert isinstance(xp, ArrayBackend)  # every protocol member is present, time_loop included
    assert isinstance(xp.time_loop, ArrayBackend)
    values = np.arange(24.0).reshape(2, 3, 4)
    weight = np.linspace(-1.0, 1.0, 20).reshape(4, 5)
    a = xp.from_numpy(values)
    fast, rows = xp.batch_fastest(a), xp.row_major(xp.batch_fastest(a))
    np.testing.assert_array_equal(xp.to_numpy(fast), values)
    np.testing.assert_array_equal(xp.to_numpy(rows), values)
    product = xp.time_loop.matmul(a[0], xp.from_numpy(weight))
    np.testing.assert_allclose(xp.to_numpy(product), values[0] @ weight, rtol=1e-6)
    if name == "numpy":  # the layouts themselves: each (B, F) matrix column-major, then C order again
        assert all(fast[i].flags.f_contiguous for i in range(2)) and rows.flags.c_contiguous
        assert product.flags.f_contiguous
    else:  # no user-visible layout: nothing to do
        assert fast is a and xp.row_major(a) is a and xp.time_loop is xp


def test_unknown_backend_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="unknown backend 'cuda': choose one of auto, numpy, mlx"):
        get_backend("cuda")
    with pytest.raises(ConfigError, match="unknown dtype"):
        get_backend("numpy", dtype="float16")


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("MLXRNN_BACKEND", "numpy")
    assert get_backend().name == "numpy"
    monkeypatch.setenv("MLXRNN_BACKEND", "tpu")
    with pytest.raises(ConfigError, match=r"unknown backend \(from MLXRNN_BACKEND\) 'tpu'"):
        get_backend()


def test_missing_mlx_error_names_the_install_command():
    code = (
        "import sys; sys.modules['mlx'] = None; sys.modules['mlx.core'] = None\n"
        "import mlxrnn.backend as b\n"
        "b.mlx_installed = lambda: False\n"
        "try:\n    b.get_backend('mlx')\nexcept b.BackendUnavailable as e:\n    print(e); sys.exit(0)\n"
        "sys.exit(1)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message and "pip install" in message and "MLX is not installed" in message
    assert BackendUnavailable.__mro__[1].__name__ == "MLXRNNError"


def test_auto_never_picks_a_gpu_less_mlx():
    choice = auto_choice()
    if not HAS_MLX:
        assert (choice.name, choice.reason) == ("numpy", "MLX is not installed")
    else:
        from mlxrnn.backend.mlx_backend import _has_gpu

        assert choice.name == ("mlx" if _has_gpu() else "numpy")
        assert choice.reason


@needs_mlx
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_same_seed_gives_bit_identical_initial_weights(cell, options):
    numpy_model = _model(cell, options, "numpy")
    mlx_model = _model(cell, options, "mlx")
    a, b = numpy_model.numpy_parameters(), mlx_model.numpy_parameters()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@needs_mlx
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_forward_states_and_gradients_agree_across_backends(cell, options):
    results = {}
    for backend in ("numpy", "mlx"):
        model = _model(cell, options, backend)
        loss, grads, aux = model.loss_and_grads(_batch())
        logits, _, _ = model.forward(_batch()["inputs"], lengths=_batch()["lengths"])
        xp = model.xp
        results[backend] = (xp.item(loss), _to_np(xp, grads), _to_np(xp, aux["final_state"]), xp.to_numpy(logits))
    (loss_n, grads_n, state_n, logits_n), (loss_m, grads_m, state_m, logits_m) = results["numpy"], results["mlx"]
    assert loss_n == pytest.approx(loss_m, rel=1e-5)
    np.testing.assert_allclose(logits_m, logits_n, **FLOAT32_TOL)
    for a, b in zip(np.atleast_1d(state_n), np.atleast_1d(state_m)):
        np.testing.assert_allclose(b, a, **FLOAT32_TOL)
    for name in grads_n:
        np.testing.assert_allclose(grads_m[name], grads_n[name], err_msg=name, **FLOAT32_TOL)


@needs_mlx
@pytest.mark.parametrize("cell,options", [CELL_VARIANTS[0], CELL_VARIANTS[3], CELL_VARIANTS[6]],
                         ids=[VARIANT_IDS[0], VARIANT_IDS[3], VARIANT_IDS[6]])
def test_twenty_adam_steps_with_clipping_follow_the_same_loss_curve(cell, options):
    curves = {}
    for backend in ("numpy", "mlx"):
        model = _model(cell, options, backend, dropout=0.3)
        trainer = Trainer(model, Adam(lr=0.01), clip_norm=0.5, rng=np.random.default_rng(5))
        curves[backend] = [trainer.step(_batch(seed=step % 4)).loss for step in range(20)]
    np.testing.assert_allclose(curves["mlx"], curves["numpy"], rtol=1e-4)
    assert curves["numpy"][-1] < curves["numpy"][0]  # and it actually trained


@needs_mlx
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_handwritten_bptt_matches_mlx_autodiff(cell, options):
    import mlx.core as mx

    model = _model(cell, options, "mlx", loss="cross_entropy")
    batch = _batch(seed=2)
    original = model.parameters()

    def loss_of(params):
        model.load_parameters(params)
        return model.loss(batch)[0]

    auto_loss, auto_grads = mx.value_and_grad(loss_of)(original)
    model.load_parameters(original)
    loss, grads, _ = model.loss_and_grads(batch)
    assert model.xp.item(loss) == pytest.approx(model.xp.item(auto_loss), rel=1e-6)
    for name in original:
        np.testing.assert_allclose(np.array(grads[name]), np.array(auto_grads[name]), err_msg=name, **FLOAT32_TOL)


@needs_mlx
def test_float64_on_mlx_cpu_is_allowed_and_matches_numpy():
    xp64 = get_backend("mlx", dtype="float64")
    layer_m = make_recurrent("lstm", 3, 4, backend=xp64, dtype="float64")
    layer_n = make_recurrent("lstm", 3, 4, backend="numpy", dtype="float64")
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    out_m, _, _ = layer_m.forward(x)
    out_n, _, _ = layer_n.forward(x)
    np.testing.assert_allclose(xp64.to_numpy(out_m), out_n, rtol=1e-12, atol=1e-12)


def test_cli_info_runs():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "mlxrnn_cli.main", "info"], capture_output=True, text=True, env=env)
    if result.returncode != 0 and "No module named mlxrnn_cli" in result.stderr:
        pytest.skip("mlxrnn_cli is not installed (pip install -e .)")
    assert result.returncode == 0, result.stderr
    assert "auto picks" in result.stdout and mlxrnn.__version__ in result.stdout


@needs_mlx
def test_broken_mlx_install_is_backend_unavailable_not_import_error():
    code = (
        "import sys, mlxrnn.backend as b\n"
        "b.mlx_installed = lambda: True  # installed, but importing it fails:\n"
        "sys.modules['mlx.core'] = None\n"
        "try:\n    b.get_backend('mlx')\nexcept b.BackendUnavailable as e:\n    print(e); sys.exit(0)\n"
        "sys.exit(1)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cannot be imported" in result.stdout and result.stdout.count("\n") == 1
