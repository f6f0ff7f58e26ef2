"""The compiled step beyond token language models (mlxrnn/training/compiled.py): dense inputs,
regression and binary targets, many-to-one heads, masks handed to the model in order, and a step
that fails inside the trace leaving the model and the optimizer as they were.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxrnn
from mlxrnn import Adam, SequenceModel, SequenceModelConfig, Trainer
from mlxrnn.errors import ConfigError, DataError, ShapeError
from mlxrnn.training.compiled import CompiledStep, _KeepMasks, _pad_time, can_compile

pytestmark = pytest.mark.skipif(not mlxrnn.mlx_installed(), reason="MLX is not installed (pip install 'mlxrnn[mlx]')")


def _model(backend="mlx", **overrides):
    config = dict(input_kind="dense", input_size=3, hidden_size=4, output_size=2, loss="mse", cell="gru", seed=2)
    config.update(overrides)
    return SequenceModel(SequenceModelConfig(**config), backend=backend)


def _steps(batches, compiled, **overrides):
    model = _model(**overrides)
    trainer = Trainer(model, Adam(lr=0.05), clip_norm=1.0, rng=np.random.default_rng(0), compile=compiled)
    assert trainer.compiled == compiled
    losses = [trainer.step(batch).loss for batch in batches]
    return np.array(losses), model.numpy_parameters(), trainer


@pytest.mark.parametrize("loss,output", [("mse", "sequence"), ("mse", "last"), ("binary_cross_entropy", "sequence"),
                                         ("binary_cross_entropy", "last")])
def test_dense_inputs_and_real_targets_compile_to_the_eager_step(loss, output):
    rng = np.random.default_rng(3)
    batches = []
    for T in (4, 4, 2):
        shape = (3, T, 2) if output == "sequence" else (3, 2)
        targets = rng.normal(size=shape) if loss == "mse" else (rng.random(shape) > 0.5).astype(float)
        batches.append({"inputs": rng.normal(size=(3, T, 3)), "targets": targets})
    compiled = _steps(batches, True, loss=loss, output=output)
    eager = _steps(batches, False, loss=loss, output=output)
    assert compiled[2]._compiled.traces == 2
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    for name, value in compiled[1].items():
        np.testing.assert_allclose(value, eager[1][name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_dense_batches_are_checked_on_the_host():
    trainer = Trainer(_model(), Adam(lr=0.05))
    good = {"inputs": np.zeros((2, 3, 3)), "targets": np.zeros((2, 3, 2))}
    assert np.isfinite(trainer.step(good).loss)
    cases = [({**good, "targets": np.zeros((2, 3, 3))}, ShapeError, r"targets must have the outputs' shape \(2, 3, 2\)"),
             ({**good, "inputs": np.zeros((2, 3, 4))}, ShapeError, "inputs must have shape"),
             ({**good, "inputs": np.full((2, 3, 3), np.nan)}, DataError, "NaN"),
             ({**good, "inputs": np.zeros((2, 0, 3)), "targets": np.zeros((2, 0, 2))}, ShapeError, "at least one")]
    for batch, error, message in cases:
        with pytest.raises(error, match=message):
            trainer.step(batch)
    assert trainer.optimizer.step_count == 1
    binary = Trainer(_model(loss="binary_cross_entropy"), Adam(lr=0.05))
    with pytest.raises(ConfigError):
        binary.step({**good, "targets": np.full((2, 3, 2), 2.0)})  # probabilities lie in [0, 1]


def test_dense_lengths_are_padded_to_the_bucket_and_change_nothing():
    rng = np.random.default_rng(4)
    batch = {"inputs": rng.normal(size=(2, 5, 3)), "targets": rng.normal(size=(2, 5, 2)), "lengths": np.array([5, 3])}
    compiled = _steps([batch, batch], True)
    eager = _steps([batch, batch], False)
    np.testing.assert_allclose(compiled[0], eager[0], rtol=1e-5, atol=1e-6)
    arrays, B, T = compiled[2]._compiled.device_batch(batch)
    assert (B, T) == (2, 5) and tuple(arrays["inputs"].shape) == (2, 16, 3) and tuple(arrays["mask"].shape) == (2, 16)
    assert tuple(arrays["targets"].shape) == (2, 16, 2)
    padded = np.array(arrays["inputs"])
    np.testing.assert_array_equal(padded[:, :5], batch["inputs"].astype(np.float32))
    assert not padded[:, 5:].any()


def test_pad_time_pads_only_the_time_axis_at_the_end():
    array = np.arange(6).reshape(2, 3)
    assert _pad_time(array, 3) is array
    np.testing.assert_array_equal(_pad_time(array, 5), [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0]])
    assert _pad_time(np.ones((2, 3, 4)), 4).shape == (2, 4, 4)


def test_keep_masks_are_handed_out_in_order_and_scaled():
    import mlx.core as mx

    from mlxrnn.backend import get_backend

    xp = get_backend("mlx")
    first, second = mx.array(np.array([[[True, False]]])), mx.array(np.array([[[False, True, True]]]))
    masks = _KeepMasks([first, second])
    np.testing.assert_allclose(np.array(masks.dropout_mask(xp, (1, 1, 2), 0.5)), [[[2.0, 0.0]]])
    np.testing.assert_allclose(np.array(masks.dropout_mask(xp, (1, 1, 3), 0.25)), [[[0.0, 4 / 3, 4 / 3]]], rtol=1e-6)
    assert masks.used == 2
    with pytest.raises(ShapeError, match=r"do not fit the model \(wanted \(1, 1, 2\)\)"):
        masks.dropout_mask(xp, (1, 1, 2), 0.5)  # none left
    with pytest.raises(ShapeError, match="do not fit"):
        _KeepMasks([first]).dropout_mask(xp, (1, 1, 3), 0.5)  # the wrong shape


def test_a_step_that_fails_while_tracing_leaves_the_model_and_optimizer_as_they_were(monkeypatch):
    model = _model()
    trainer = Trainer(model, Adam(lr=0.05))
    batch = {"inputs": np.ones((2, 3, 3)), "targets": np.zeros((2, 3, 2))}
    trainer.step(batch)
    before, count = model.numpy_parameters(), trainer.optimizer.step_count

    def broken(*args, **kwargs):
        raise RuntimeError("trace failed")

    monkeypatch.setattr(model, "loss_and_grads", broken)
    with pytest.raises(RuntimeError, match="trace failed"):
        trainer.step({**batch, "inputs": np.ones((2, 4, 3)), "targets": np.zeros((2, 4, 2))})  # a new shape: traced
    assert trainer.optimizer.step_count == count
    after = model.numpy_parameters()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    monkeypatch.undo()
    assert np.isfinite(trainer.step(batch).loss) and trainer.optimizer.step_count == count + 1


def test_what_compiles_and_why_not():
    assert can_compile(_model()) == (True, "")
    ok, why = can_compile(_model(backend="numpy"))
    assert not ok and why == "the compiled step is MLX's; this model's backend is numpy"
    assert can_compile(_model(), grad_transform=lambda loss, grads: (loss, grads))[0] is False
    with pytest.raises(ConfigError, match="backend is numpy"):
        CompiledStep(_model(backend="numpy"), Adam())
    step = CompiledStep(_model(), Adam(), max_traces=3, time_bucket=4)
    assert (step.max_traces, step.time_bucket, step.traces) == (3, 4, 0)
