"""fit / evaluate / predict for every task model: histories, exact metrics, callbacks, progress."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import mlxrnn
from mlxrnn import ConfigError, ShapeError, TrainingDiverged
from mlxrnn.models.datasets import Dataset
from mlxrnn.nn.sequences import pad_sequences
from mlxrnn.testing import available_backends
from mlxrnn.training.callbacks import Callback

RNG = np.random.default_rng(0)


def _sequences(n: int, rng=RNG, low: int = 3, high: int = 9, max_len: int = 7) -> list[list[int]]:
    return [list(rng.integers(low, high, size=rng.integers(1, max_len + 1))) for _ in range(n)]


def classifier_data(n: int, rng=RNG) -> dict:
    """Label: does the sequence contain token 8?"""
    seqs = _sequences(n, rng)
    inputs, lengths = pad_sequences(seqs)
    return {"inputs": inputs, "targets": np.array([int(8 in s) for s in seqs]), "lengths": lengths}


def tagger_data(n: int, rng=RNG) -> dict:
    """Tag 1 on the token after each 8."""
    seqs = _sequences(n, rng)
    tags = [[int(t > 0 and s[t - 1] == 8) for t in range(len(s))] for s in seqs]
    inputs, lengths = pad_sequences(seqs)
    return {"inputs": inputs, "targets": pad_sequences(tags, pad_id=-1)[0], "lengths": lengths}


def seq2seq_data(n: int, rng=RNG) -> dict:
    seqs = _sequences(n, rng, max_len=5)
    return mlxrnn.seq2seq_batch(seqs, [s[::-1] for s in seqs])


def generator_data(n: int, rng=RNG) -> dict:
    starts = rng.integers(0, 3, size=n)
    return mlxrnn.generator_batch(starts, [[3 + (k + i) % 5 for i in range(4)] for k in starts])


def dense_data(n: int, rng=RNG) -> tuple:
    x = rng.choice([-1.0, 1.0], size=(n, 9, 1))
    return x, (x.sum(axis=1) > 0).astype(np.float32)


TASKS = {  # name -> (model factory, data factory)
    "classifier": (lambda: mlxrnn.SequenceClassifier(input_size=9, embed_size=8, hidden_size=12, backend="numpy"),
                   classifier_data),
    "tagger": (lambda: mlxrnn.SequenceTagger(input_size=9, embed_size=8, hidden_size=8, backend="numpy"),
               tagger_data),
    "seq2seq": (lambda: mlxrnn.Seq2Seq(source_vocab_size=9, target_vocab_size=9, embed_size=8, hidden_size=16,
                                       backend="numpy"), seq2seq_data),
    "generator": (lambda: mlxrnn.SequenceGenerator(condition_size=3, vocab_size=9, embed_size=8, hidden_size=12,
                                                   backend="numpy"), generator_data),
    "sequence_model": (lambda: mlxrnn.SequenceModel(input_kind="dense", input_size=1, hidden_size=8, output="last",
                                                    output_size=1, loss="binary_cross_entropy", backend="numpy"),
                       dense_data),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_fit_returns_a_history_and_the_model_learns(name):
    make_model, make_data = TASKS[name]
    model = make_model()
    train, validation = make_data(300), make_data(100)
    before = model.evaluate(validation)
    history = model.fit(train, validation=validation, epochs=4, batch_size=16, lr=0.02, verbose=False)
    assert history.epochs == [1, 2, 3, 4]
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}  # training accuracy too (issue 27)
    assert all(len(values) == 4 for values in history.history.values())
    assert history["val_loss"][-1] == pytest.approx(model.evaluate(validation)["loss"])
    assert history["val_loss"][-1] < 0.9 * before["loss"], (before, history.history)
    assert history.stop_reason == "finished"


def test_evaluate_is_exact_whatever_the_batches():
    """Token-weighted averages: the result does not depend on how the examples are batched, and
    equals an independent float64 computation from the predicted probabilities."""
    model = mlxrnn.SequenceTagger(input_size=9, embed_size=4, hidden_size=5, num_tags=3, dtype="float64",
                                  backend="numpy")
    data = tagger_data(23)
    data["targets"] = np.where(data["targets"] >= 0, RNG.integers(0, 3, size=data["targets"].shape), -1)
    results = [model.evaluate(data, batch_size=size) for size in (1, 4, 23)]
    for other in results[1:]:
        assert other == pytest.approx(results[0], rel=1e-12)
    probs = model.predict_proba(data)
    valid = data["targets"] >= 0
    picked = np.take_along_axis(probs, np.maximum(data["targets"], 0)[..., None], axis=-1)[..., 0]
    assert results[0]["loss"] == pytest.approx(-np.log(picked[valid]).mean(), rel=1e-9)
    assert results[0]["accuracy"] == pytest.approx((probs.argmax(-1) == data["targets"])[valid].mean())


def test_evaluate_of_a_binary_classifier_matches_its_probabilities():
    model = mlxrnn.SequenceClassifier(input_size=9, embed_size=4, hidden_size=5, dtype="float64", backend="numpy")
    data = classifier_data(31)
    result = model.evaluate(data, batch_size=8)
    p = model.predict_proba(data)[np.arange(31), data["targets"]]
    assert result["loss"] == pytest.approx(-np.log(p).mean(), rel=1e-9)
    assert result["accuracy"] == pytest.approx(np.mean(model.predict(data) == data["targets"]))


def test_padding_columns_beyond_the_longest_sequence_change_nothing():
    """Batches are cut to their longest sequence, so extra padding neither costs time nor alters training."""
    data = classifier_data(64)
    padded = dict(data, inputs=np.pad(data["inputs"], ((0, 0), (0, 30))))
    weights = []
    for dataset in (data, padded):
        model = TASKS["classifier"][0]()
        model.fit(dataset, epochs=2, batch_size=8, seed=3, verbose=False)
        weights.append(model.numpy_parameters())
    for name in weights[0]:
        np.testing.assert_allclose(weights[1][name], weights[0][name], rtol=1e-5, atol=1e-6)
    time_keys = TASKS["classifier"][0]().time_keys()
    for batch, rows in Dataset(padded).batches(8, np.random.default_rng(0), time_keys):
        assert batch["inputs"].shape == (rows, batch["lengths"].max())


def test_fit_accepts_pairs_and_lists_of_batches():
    x, y = dense_data(64)
    model = TASKS["sequence_model"][0]()
    history = model.fit((x, y), validation=[{"inputs": x[:10], "targets": y[:10]}], epochs=2, verbose=False)
    assert len(history["val_accuracy"]) == 2
    batches = [{"inputs": x[i:i + 16], "targets": y[i:i + 16]} for i in range(0, 64, 16)]
    seen = []

    class Count(Callback):
        def on_batch_end(self, loop, batch, loss):
            seen.append(batch)

    model.fit(batches, epochs=1, callbacks=[Count()], verbose=False)
    assert seen == [0, 1, 2, 3]


class WeightLog(Callback):
    """Keeps the weights and logs after every epoch."""

    def __init__(self):
        self.weights, self.logs = [], []

    def on_epoch_end(self, loop, epoch, logs):
        self.weights.append(loop.model.numpy_parameters())
        self.logs.append(dict(logs))


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = TASKS["classifier"][0]()
    data = classifier_data(64)
    stopper = mlxrnn.EarlyStopping(monitor="val_loss", patience=2, min_delta=1e9)  # nothing counts as better
    history = model.fit(data, validation=data, epochs=10, callbacks=[stopper], verbose=False)
    assert history.epochs == [1, 2, 3]  # epoch 1 sets the best; 2 and 3 fail to beat it
    assert stopper.stopped_epoch == 3 and "early stopping" in history.stop_reason


def test_restore_best_weights_puts_back_the_best_epoch():
    model = TASKS["classifier"][0]()
    train, validation = classifier_data(64), classifier_data(64)
    log = WeightLog()
    history = model.fit(train, validation=validation, epochs=5, lr=0.5, optimizer="sgd", verbose=False,
                        callbacks=[log, mlxrnn.RestoreBestWeights(monitor="val_accuracy")])
    best = int(np.argmax(history["val_accuracy"]))  # the first of equals: later ties do not count
    for name, value in model.numpy_parameters().items():
        np.testing.assert_array_equal(value, log.weights[best][name])
    assert model.evaluate(validation)["accuracy"] == pytest.approx(history["val_accuracy"][best])


def test_a_diverged_step_restores_the_epochs_starting_weights():
    model = TASKS["classifier"][0]()
    log = WeightLog()

    class Poison(Callback):
        def on_batch_end(self, loop, batch, loss):
            if loop.epoch == 2 and batch == 1:
                weights = loop.model.numpy_parameters()
                weights["head.b"] = weights["head.b"] * np.nan
                loop.model.load_parameters(weights)

    with pytest.raises(TrainingDiverged, match="epoch 2, batch 3; the model holds the weights epoch 2 started with"):
        model.fit(classifier_data(64), epochs=3, batch_size=16, callbacks=[log, Poison()], verbose=False)
    for name, value in model.numpy_parameters().items():
        np.testing.assert_array_equal(value, log.weights[0][name])


def test_cosine_schedule_and_function_schedules_set_the_learning_rate():
    lrs = []

    class Record(Callback):
        def on_batch_end(self, loop, batch, loss):
            lrs.append(loop.optimizer.lr)

    model = TASKS["sequence_model"][0]()
    model.fit(dense_data(40), epochs=2, batch_size=10, lr=0.01, verbose=False,
              callbacks=[mlxrnn.LearningRateSchedule("cosine"), Record()])
    expected = [0.5 * 0.01 * (1 + math.cos(math.pi * step / 8)) for step in range(8)]
    assert lrs == pytest.approx(expected)
    lrs.clear()
    model.fit(dense_data(40), epochs=1, batch_size=10, lr=0.01, verbose=False,
              callbacks=[mlxrnn.LearningRateSchedule(lambda done: 1 - done), Record()])
    assert lrs == pytest.approx([0.01, 0.0075, 0.005, 0.0025])


def test_progress_bar_redrawn_only_on_a_terminal_and_silenced_by_verbose_0(capsys):
    model = TASKS["sequence_model"][0]()
    model.fit(dense_data(40), epochs=2, verbose=0)  # epoch lines are the default now (issue 27)
    assert capsys.readouterr().err == ""
    model.fit(dense_data(40), validation=dense_data(10), epochs=2, verbose=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2") and "val_accuracy" in lines[1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    model.fit(dense_data(400), epochs=1, batch_size=10, callbacks=[mlxrnn.ProgressBar(stream)])
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and "epoch 1/1" in text


def test_bad_fit_arguments_fail_before_any_step():
    model = TASKS["classifier"][0]()
    untouched = model.numpy_parameters()
    data = classifier_data(20)
    cases = [
        (dict(train={**data, "targets": data["targets"][:-1]}), ShapeError, "has 19 rows but"),
        (dict(train={"inputs": [[1, 2], [3]], "targets": [0, 1]}), ShapeError, "ragged"),
        (dict(train=data, optimizer="adamm"), ConfigError, "unknown optimizer"),
        (dict(train=data, optimizer=mlxrnn.Adam(lr=0.1), lr=0.2), ConfigError, "not both"),
        (dict(train=data, epochs=0), ConfigError, "epochs"),
        (dict(train=data, callbacks=[mlxrnn.EarlyStopping()]), ConfigError, "pass validation"),
        (dict(train=42), ConfigError, "dict of arrays"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model.fit(**kwargs, verbose=False)
    for name, value in untouched.items():
        np.testing.assert_array_equal(model.numpy_parameters()[name], value)


def test_predict_for_every_model():
    x, y = dense_data(5)
    assert TASKS["sequence_model"][0]().predict(x).shape == (5, 1)
    data = seq2seq_data(3)
    model = TASKS["seq2seq"][0]()
    assert model.predict(data) == model.translate(data["source"], data["source_lengths"])
    generator = TASKS["generator"][0]()
    assert generator.predict(np.array([0, 2]), seed=1) == generator.generate(np.array([0, 2]), seed=1)


@pytest.mark.skipif("mlx" not in available_backends(), reason="MLX is not installed")
def test_fit_evaluate_save_and_load_agree_across_backends(tmp_path):
    data = tagger_data(48)
    histories, outputs = [], []
    for backend in ("numpy", "mlx"):
        model = mlxrnn.SequenceTagger(input_size=9, embed_size=4, hidden_size=6, backend=backend)
        histories.append(model.fit(data, validation=data, epochs=2, batch_size=16, verbose=False).history)
        loaded = mlxrnn.load(model.save(tmp_path / backend), backend="numpy")
        outputs.append(loaded.predict_proba(data))
    for key in histories[0]:
        np.testing.assert_allclose(histories[1][key], histories[0][key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)


def test_the_fit_method_and_the_fit_function_take_the_same_arguments():
    import inspect

    from mlxrnn.models.task import TaskModel
    from mlxrnn.training.fit import fit

    method = list(inspect.signature(TaskModel.fit).parameters.values())[1:]  # without self
    function = list(inspect.signature(fit).parameters.values())[1:]  # without model
    assert [(p.name, p.kind, p.default) for p in method] == [(p.name, p.kind, p.default) for p in function]
