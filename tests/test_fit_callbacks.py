"""fit's epoch loss and EarlyStopping's restore_best_weights (issue 29, items 7 and 8).

* The epoch's "loss" is the mean of its batch losses weighted by their rows, so a smaller last
  batch counts for less (as Keras reports it); with the weights frozen that is exactly the
  training set's loss.
* ``EarlyStopping(restore_best_weights=True)`` ends with the weights of the best epoch, not those
  of the epoch it stopped at. The validation losses are scripted (a callback ahead of it writes
  them into the logs) so the best epoch is known.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxrnn
from mlxrnn.nn.optim import SGD
from mlxrnn.nn.sequences import pad_sequences
from mlxrnn.training.callbacks import Callback


def _classifier():
    return mlxrnn.SequenceClassifier(input_size=9, embed_size=4, hidden_size=5, backend="numpy", seed=3)


def _data(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(3, 9, size=rng.integers(1, 6))) for _ in range(n)]
    inputs, lengths = pad_sequences(seqs)
    return {"inputs": inputs, "targets": np.array([int(8 in s) for s in seqs]), "lengths": lengths}


class BatchLog(Callback):
    def __init__(self):
        self.losses: dict[int, list[float]] = {}

    def on_batch_end(self, loop, batch, loss):
        self.losses.setdefault(loop.epoch, []).append(loss)


def test_the_epoch_loss_weighs_each_batch_by_its_rows():
    model, log = _classifier(), BatchLog()
    history = model.fit(_data(10), epochs=2, batch_size=4, lr=0.5, optimizer="sgd", callbacks=[log], verbose=False)
    for epoch, losses in log.losses.items():
        assert len(losses) == 3  # rows 4, 4 and a last batch of 2
        weighted = (4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10
        assert history["loss"][epoch - 1] == pytest.approx(weighted, rel=1e-12)
        assert abs(np.mean(losses) - weighted) > 1e-6  # the plain mean of batch losses is not what is reported


def test_with_frozen_weights_the_epoch_loss_is_the_training_sets_loss():
    model, data = _classifier(), _data(10)

    class Freeze(Callback):
        def on_batch_begin(self, loop, batch):
            loop.optimizer.lr = 0.0  # an SGD step of rate 0 changes nothing (the constructor wants > 0)

    before = model.numpy_parameters()
    history = model.fit(data, epochs=1, batch_size=3, optimizer=SGD(lr=0.1), clip_norm=None, callbacks=[Freeze()],
                        verbose=False)
    assert all(np.array_equal(before[k], v) for k, v in model.numpy_parameters().items())
    assert history["loss"][0] == pytest.approx(model.evaluate(data)["loss"], rel=1e-6)  # float32 batch losses


class ScriptedValidation(Callback):
    """Replaces val_loss with a scripted value per epoch and keeps each epoch's weights."""

    def __init__(self, values):
        self.values, self.weights = values, {}

    def on_epoch_end(self, loop, epoch, logs):
        logs["val_loss"] = self.values[epoch - 1]
        self.weights[epoch] = loop.model.numpy_parameters()


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_the_best_epochs_weights_when_asked(restore):
    model, data = _classifier(), _data(12)
    script = ScriptedValidation([3.0, 1.0, 2.0, 1.5, 0.5, 0.1])  # best at 2, then two epochs without better
    stopper = mlxrnn.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=restore)
    history = model.fit(data, validation=data, epochs=6, batch_size=4, lr=0.5, optimizer="sgd", verbose=False,
                        callbacks=[script, stopper])
    assert history.epochs == [1, 2, 3, 4] and stopper.stopped_epoch == 4 and stopper.best_epoch == 2
    expected = script.weights[2 if restore else 4]
    final = model.numpy_parameters()
    assert set(final) == set(expected)
    for name, value in final.items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
    assert any(not np.array_equal(script.weights[2][k], script.weights[4][k]) for k in final)  # they differ


def test_restore_best_weights_also_restores_when_training_fails():
    model, data = _classifier(), _data(8)
    script = ScriptedValidation([1.0, 2.0, 3.0])

    class Fail(Callback):
        def on_epoch_end(self, loop, epoch, logs):
            if epoch == 3:
                raise RuntimeError("stop here")

    stopper = mlxrnn.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    with pytest.raises(RuntimeError, match="stop here"):
        model.fit(data, validation=data, epochs=5, batch_size=4, lr=0.5, optimizer="sgd", verbose=False,
                  callbacks=[script, stopper, Fail()])
    for name, value in model.numpy_parameters().items():
        np.testing.assert_array_equal(value, script.weights[1][name], err_msg=name)
