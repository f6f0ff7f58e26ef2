"""fit() and the layers as a Keras or PyTorch user expects them (issue 27, section 3): a line per
epoch by default (verbose=0 silences), training accuracy in the History, validation_data=(x, y);
layers that take lists and refuse other array types in one line."""

from __future__ import annotations

import numpy as np
import pytest

import mlxrnn
from mlxrnn import ShapeError


def _data(seed: int, rows: int = 24):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5, 3))
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
    return x, y


def _model():
    return mlxrnn.SequenceClassifier(input_kind="dense", input_size=3, hidden_size=8, num_classes=2, backend="numpy", seed=1)


def test_fit_prints_a_line_per_epoch_by_default_and_verbose_0_is_silent(capsys):
    _model().fit(_data(0), epochs=2, batch_size=8)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], lines
    assert all("loss" in line and "accuracy" in line for line in lines)
    _model().fit(_data(0), epochs=2, batch_size=8, verbose=0)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_history_records_training_accuracy_beside_the_loss():
    model = _model()
    history = model.fit(_data(0), validation=_data(1), epochs=2, batch_size=8, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in history["accuracy"])
    assert history["accuracy"][-1] == pytest.approx(model.evaluate(_data(0))["accuracy"])


def test_validation_data_is_accepted_as_keras_spells_it():
    x, y = _data(1)
    ours = _model().fit(_data(0), validation_data=(x, y), epochs=1, batch_size=8, verbose=0)
    keras = _model().fit(_data(0), validation=(x, y), epochs=1, batch_size=8, verbose=0)
    assert ours.history == keras.history and "val_loss" in ours.history
    with pytest.raises(mlxrnn.ConfigError, match="validation_data"):
        _model().fit(_data(0), validation=(x, y), validation_data=(x, y), verbose=0)


def test_layers_take_lists_as_models_do():
    layer = mlxrnn.LSTM(input_size=3, hidden_size=4, backend="numpy", seed=0)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    out_list = layer(x.tolist())[0]
    assert np.allclose(np.asarray(out_list), np.asarray(layer(x)[0]))
    linear = mlxrnn.Linear(3, 2, backend="numpy", seed=0)
    assert np.allclose(np.asarray(linear(x.tolist())), np.asarray(linear(x)))


def test_other_array_types_are_refused_in_one_line():
    torch = pytest.importorskip("torch")
    layer = mlxrnn.GRU(input_size=3, hidden_size=4, backend="numpy", seed=0)
    with pytest.raises(ShapeError) as info:
        layer(torch.zeros(2, 5, 3))
    message = str(info.value)
    assert "\n" not in message and "Tensor" in message and ".numpy()" in message, message
    with pytest.raises(ShapeError, match=r"\.numpy\(\)"):
        mlxrnn.Linear(3, 2, backend="numpy")(torch.zeros(2, 3))
