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


# --- the hooks, the defaults, and callbacks used twice -------------------------------------------


class Hooks(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, loop):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, loop, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_begin(self, loop, batch):
        self.calls.append(("batch_begin", loop.epoch, batch, loop.step))

    def on_batch_end(self, loop, batch, loss):
        self.calls.append(("batch_end", loop.epoch, batch, loop.step))

    def on_epoch_end(self, loop, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, loop):
        self.calls.append(("train_end", loop.step, loop.total_batches, loop.batches_per_epoch))


def test_every_hook_is_called_in_order_with_its_counters():
    hooks = Hooks()
    data = _data(6)
    history = _classifier().fit(data, validation=data, epochs=2, batch_size=4, callbacks=[hooks], verbose=False)
    epoch = [[("batch_begin", e, 0, 2 * e - 2), ("batch_end", e, 0, 2 * e - 1),
              ("batch_begin", e, 1, 2 * e - 1), ("batch_end", e, 1, 2 * e)] for e in (1, 2)]
    logs = ["accuracy", "loss", "val_accuracy", "val_loss"]  # training accuracy beside the loss, as Keras
    assert hooks.calls == [("train_begin",),
                           ("epoch_begin", 1), *epoch[0], ("epoch_end", 1, logs),
                           ("epoch_begin", 2), *epoch[1], ("epoch_end", 2, logs),
                           ("train_end", 4, 4, 2)]
    assert history.epochs == [1, 2] and history.stop_reason == "finished"
    assert history.to_dict()["epochs"] == [1, 2] and len(history.to_dict()["val_loss"]) == 2


def test_a_learning_rate_given_by_name_defaults_to_1e_3():
    rates = []

    class Rate(Callback):
        def on_train_begin(self, loop):
            rates.append((loop.optimizer.name, loop.optimizer.lr))

    model = _classifier()
    model.fit(_data(4), epochs=1, callbacks=[Rate()], verbose=False)
    model.fit(_data(4), epochs=1, optimizer="sgd", lr=0.25, callbacks=[Rate()], verbose=False)
    assert rates == [("adam", 1e-3), ("sgd", 0.25)]


def test_a_tie_is_not_an_improvement_and_any_decrease_is_by_default():
    script = ScriptedValidation([1.0, 1.0, 0.999, 0.999, 0.999])
    stopper = mlxrnn.EarlyStopping(monitor="val_loss", patience=2)
    restore = mlxrnn.RestoreBestWeights(monitor="val_loss")
    data = _data(4)
    model = _classifier()
    history = model.fit(data, validation=data, epochs=5, lr=0.5, optimizer="sgd", verbose=False,
                        callbacks=[script, stopper, restore])
    assert history.epochs == [1, 2, 3, 4, 5] and stopper.stopped_epoch == 5
    assert (stopper.best_epoch, restore.best_epoch) == (3, 3) and stopper.best == restore.best == 0.999
    assert "(best 0.999 at epoch 3)" in history.stop_reason
    for name, value in model.numpy_parameters().items():
        np.testing.assert_array_equal(value, script.weights[3][name], err_msg=name)


def test_callbacks_start_afresh_in_every_fit():
    data = _data(4)
    stopper = mlxrnn.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    restore = mlxrnn.RestoreBestWeights(monitor="val_loss")
    model = _classifier()
    model.fit(data, validation=data, epochs=2, lr=0.5, optimizer="sgd", verbose=False,
              callbacks=[ScriptedValidation([0.1, 0.2]), stopper, restore])
    assert stopper.stopped_epoch == 2 and stopper.best == 0.1
    script = ScriptedValidation([5.0, 4.0, 3.0])  # worse than the first fit's best, yet improving
    history = model.fit(data, validation=data, epochs=3, lr=0.5, optimizer="sgd", verbose=False,
                        callbacks=[script, stopper, restore])
    assert history.epochs == [1, 2, 3] and stopper.stopped_epoch is None
    assert (stopper.best, stopper.best_epoch, restore.best_epoch) == (3.0, 3, 3)
    for name, value in model.numpy_parameters().items():
        np.testing.assert_array_equal(value, script.weights[3][name], err_msg=name)
    with pytest.raises(mlxrnn.ConfigError, match="RestoreBestWeights watches 'val_loss'.*pass validation"):
        model.fit(data, epochs=1, verbose=False, callbacks=[mlxrnn.RestoreBestWeights()])
    with pytest.raises(mlxrnn.ConfigError, match="mode must be"):
        mlxrnn.RestoreBestWeights(mode="up")


def test_the_plateau_schedule_halves_the_rate_after_an_epoch_without_improvement():
    rates = []

    class Rate(Callback):
        def on_epoch_end(self, loop, epoch, logs):
            rates.append(loop.optimizer.lr)

    data = _data(4)
    _classifier().fit(data, validation=data, epochs=4, lr=0.4, optimizer="sgd", verbose=False,
                      callbacks=[ScriptedValidation([1.0, 0.5, 0.6, 0.7]), mlxrnn.LearningRateSchedule("plateau"),
                                 Rate()])
    assert rates == pytest.approx([0.4, 0.4, 0.2, 0.1])


class Terminal:
    """A terminal that shows only what was flushed (like a buffered stderr), without io's extras."""

    def __init__(self, tty=True):
        self.tty, self.pending, self.shown = tty, "", ""

    def write(self, text):
        self.pending += text

    def flush(self):
        self.shown, self.pending = self.shown + self.pending, ""

    def isatty(self):
        return self.tty


def test_the_progress_bar_counts_batches_from_one_and_flushes_what_it_writes():
    stream = Terminal()
    bar = mlxrnn.ProgressBar(stream, width=4)
    bar._drawn = -1e9  # draw every batch
    loop = type("Loop", (), {"epoch": 1, "epochs": 1, "batches_per_epoch": 2, "stop_reason": ""})()
    bar.on_epoch_begin(loop, 1)
    for batch in (0, 1):
        bar._drawn = -1e9
        bar.on_batch_end(loop, batch, 0.5)
    assert "[##..] 1/2" in stream.shown and "[####] 2/2" in stream.shown and stream.pending == ""
    loop.stop_reason = "early stopping: enough"
    bar.on_train_end(loop)  # the redrawn line is ended, and the reason shown
    assert stream.shown.endswith("\nearly stopping: enough\n") and stream.pending == ""


def test_the_progress_bar_off_a_terminal_writes_one_line_per_epoch():
    plain = Terminal(tty=False)
    data = _data(4)
    _classifier().fit(data, epochs=2, batch_size=2, callbacks=[mlxrnn.ProgressBar(plain)], verbose=False)
    lines = plain.shown.split("\n")
    assert len(lines) == 3 and lines[0].startswith("epoch 1/2  loss ") and lines[1].startswith("epoch 2/2")
    assert lines[2] == "" and "\r" not in plain.shown and plain.pending == ""

    class NoTty:  # a stream without isatty is no terminal
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    bare = NoTty()
    _classifier().fit(data, epochs=1, callbacks=[mlxrnn.ProgressBar(bare)], verbose=False)
    assert bare.text.startswith("epoch 1/1  loss ") and bare.text.count("\n") == 1


def test_a_fit_that_fails_in_its_first_epoch_ends_no_line_it_did_not_open():
    class Fail(Callback):
        def on_batch_end(self, loop, batch, loss):
            raise RuntimeError("stop")

    for tty, expected in ((False, ""), (True, None)):
        stream = Terminal(tty=tty)
        with pytest.raises(RuntimeError):
            _classifier().fit(_data(4), epochs=1, batch_size=2, callbacks=[mlxrnn.ProgressBar(stream), Fail()],
                              verbose=False)
        if expected is not None:
            assert stream.shown + stream.pending == expected  # off a terminal nothing is drawn mid-epoch
        else:
            assert stream.shown.startswith("\r") and stream.shown.endswith("\n")  # the drawn line is ended


class ScriptedLogs(Callback):
    """Writes scripted values of one log entry per epoch."""

    def __init__(self, name, values):
        self.name, self.values = name, values

    def on_epoch_end(self, loop, epoch, logs):
        logs[self.name] = self.values[epoch - 1]


@pytest.mark.parametrize("monitor,mode,best", [("val_accuracy", "auto", 2), ("val_accuracy", "max", 2),
                                               ("val_accuracy", "min", 1), ("val_loss", "auto", 1),
                                               ("val_loss", "max", 2), ("loss", "auto", 1)])
def test_the_direction_of_improvement_follows_the_mode_and_the_metric(monitor, mode, best):
    data = _data(4)
    stopper = mlxrnn.EarlyStopping(monitor=monitor, mode=mode, patience=2)
    restore = mlxrnn.RestoreBestWeights(monitor=monitor, mode=mode)
    history = _classifier().fit(data, validation=data, epochs=5, lr=0.5, optimizer="sgd", verbose=False,
                                callbacks=[ScriptedLogs(monitor, [0.5, 0.9, 0.7, 0.6, 0.8]), stopper, restore])
    assert stopper.best_epoch == restore.best_epoch == best
    assert history.epochs == list(range(1, best + 3))
