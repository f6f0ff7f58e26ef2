"""Reliability, round two (issue 17): the library's edges, on both backends.

* an empty batch (B = 0), an (h, c) pair given to a GRU, ``token_stepper`` ids outside the
  vocabulary, inputs or targets beyond the float32 range (item 9);
* NaN in a mask or an initial state, binary cross-entropy targets outside [0, 1] (item 10);
* a character corpus is held as compact ids (about 2 bytes per character, not 32) (item 10);
* fuzzing the entry points with extreme values: each call either fails in one line with an
  mlxrnn error or returns finite values of the documented shapes.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mlxrnn.errors import ConfigError, DataError, MLXRNNError, ShapeError
from mlxrnn.lm.model import load_language_model
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.nn.layers import GRU, LSTM, RNN
from mlxrnn.nn.losses import binary_cross_entropy_with_logits
from mlxrnn.nn.optim import Adam
from mlxrnn.run.data import build_vocabulary, encode_corpus, load_corpus, make_batchers
from mlxrnn.run.options import TrainOptions
from mlxrnn.testing import available_backends
from mlxrnn.training.trainer import Trainer
from tests.reliability_support import FUZZ, char_run, corpus

__all__ = ["char_run", "corpus"]  # module fixtures shared with test_reliability

BACKENDS = available_backends()
EXTREMES = [0.0, 1.0, -1.0, 1e-300, 3e38, -3e38, 1e300, -1e300, np.nan, np.inf, -np.inf]


def _dense(backend, output="sequence", loss="mse", size=2):
    return SequenceModel(SequenceModelConfig(input_kind="dense", input_size=3, hidden_size=4, output=output,
                                             output_size=size, loss=loss, seed=1), backend=backend)


def _finite(xp, value) -> bool:
    parts = value if isinstance(value, tuple) else (value,)
    return all(np.isfinite(xp.to_numpy(part)).all() for part in parts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_is_one_clean_error(backend):
    ids_model = SequenceModel(SequenceModelConfig(input_size=5, output_size=5, hidden_size=4, embed_size=3),
                              backend=backend)
    dense = _dense(backend)
    for call in (lambda: ids_model.forward(np.zeros((0, 3), np.int32)),
                 lambda: dense.forward(np.zeros((0, 3, 3))),
                 lambda: Trainer(dense, Adam(lr=0.1)).step({"inputs": np.zeros((0, 3, 3)),
                                                             "targets": np.zeros((0, 3, 2))}),
                 lambda: GRU(3, 4, backend=backend).step(np.zeros((0, 3)))):
        with pytest.raises(ShapeError, match="no sequences \\(batch size 0\\)"):
            call()


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_states_of_the_wrong_kind_are_refused(backend):
    x = np.zeros((2, 3, 3))
    pair = (np.zeros((1, 2, 4)), np.zeros((1, 2, 4)))
    for layer in (GRU(3, 4, backend=backend), RNN(3, 4, backend=backend)):
        with pytest.raises(ShapeError, match="is one array .* not a pair"):
            layer.forward(x, initial_state=pair)
        with pytest.raises(DataError, match=r"initial_state contains NaN or Inf \(first at index \(0, 1, 2\)"):
            bad = np.zeros((1, 2, 4))
            bad[0, 1, 2] = np.nan
            layer.forward(x, initial_state=bad)
        with pytest.raises(ShapeError, match="initial_state must be an array"):
            layer.forward(x, initial_state="zeros")
    with pytest.raises(DataError, match="initial_state contains NaN or Inf"):
        LSTM(3, 4, backend=backend).forward(x, initial_state=(pair[0], np.full((1, 2, 4), np.inf)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nan_mask_or_loss_weight_is_refused(backend):
    x = np.zeros((2, 3, 3))
    mask = np.ones((2, 3))
    mask[1, 2] = np.nan
    with pytest.raises(DataError, match=r"mask contains NaN or Inf \(first at index \(1, 2\)"):
        GRU(3, 4, backend=backend).forward(x, mask=mask)
    model = _dense(backend)
    with pytest.raises(DataError, match=r"mask'\] contains NaN or Inf"):
        Trainer(model, Adam(lr=0.1)).step({"inputs": x, "targets": np.zeros((2, 3, 2)), "mask": mask})


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_beyond_float32_are_refused_before_any_update(backend):
    for output, size, loss, target_shape in (("sequence", 2, "mse", (1, 3, 2)), ("last", 1, "binary_cross_entropy",
                                                                                   (1, 1))):
        model = _dense(backend, output, loss, size)
        before = model.numpy_parameters()
        trainer = Trainer(model, Adam(lr=0.1))
        with pytest.raises(DataError, match=r"batch\['inputs'\] holds 1e\+300 .*beyond the float32 range"):
            trainer.step({"inputs": np.full((1, 3, 3), 1e300), "targets": np.zeros(target_shape)})
        with pytest.raises(DataError, match=r"dense inputs hold -1e\+300 .*beyond the float32 range"):
            model.forward(np.full((1, 3, 3), -1e300))
        if loss == "mse":
            with pytest.raises(DataError, match=r"batch\['targets'\] holds 1e\+300"):
                trainer.step({"inputs": np.zeros((1, 3, 3)), "targets": np.full(target_shape, 1e300)})
        after = model.numpy_parameters()
        assert all(np.array_equal(before[k], after[k]) for k in before)
        trainer.step({"inputs": np.full((1, 3, 3), 1e30), "targets": np.zeros(target_shape)})  # large, in range


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_targets_must_be_probabilities(backend):
    model = _dense(backend, "last", "binary_cross_entropy", 1)
    trainer = Trainer(model, Adam(lr=0.1))
    for bad in (2.0, -0.5):
        with pytest.raises(ConfigError, match=r"binary cross-entropy targets must lie in \[0, 1\]"):
            trainer.step({"inputs": np.zeros((2, 3, 3)), "targets": np.full((2, 1), bad)})
    xp = model.xp
    loss, grad = binary_cross_entropy_with_logits(xp, xp.from_numpy(np.zeros((2, 1))), np.array([[0.0], [1.0]]))
    assert xp.item(loss) == pytest.approx(np.log(2.0), rel=1e-6)  # soft and hard targets inside [0, 1] are fine


@pytest.mark.parametrize("backend", BACKENDS)
def test_token_stepper_refuses_ids_outside_the_vocabulary(char_run, backend):
    lm, _ = load_language_model(char_run, backend=backend)
    step = lm.token_stepper()
    V = len(lm.vocab)
    for bad in ([V], [-1], [2**40], [3, V + 7]):
        with pytest.raises(ConfigError, match="out of range for a vocabulary of"):
            step(np.array(bad), None)
    with pytest.raises(ShapeError, match=r"takes integer ids, shape \(batch,\); got float64 \(1,\)"):
        step(np.array([1.5]), None)
    logits, state = step(np.array([V - 1, 0]), None)
    assert logits.shape == (2, V) and np.isfinite(logits).all()


def test_a_character_corpus_is_held_as_compact_ids(corpus, tmp_path):
    """tracemalloc's peak (NumPy's allocations included) over reading, counting, encoding and
    batching; before this change it was ~21 bytes per character (and ~32 in RSS)."""
    big = tmp_path / "big.txt"
    big.write_text(corpus.read_text() * 60 + "é€")  # 360 KB, two characters beyond Latin-1
    options = TrainOptions(corpus=str(big), batch_size=32, seq_len=64)
    tracemalloc.start()
    text, _ = load_corpus(options)
    tokenizer, vocab, _ = build_vocabulary(options, text)
    ids = encode_corpus(vocab, tokenizer, text)
    train, val = make_batchers(options, ids)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ids.dtype == np.uint8 and train.streams.dtype == np.uint8
    assert np.array_equal(ids, vocab.encode(tokenizer.tokenize(text)))  # the same ids, compactly
    assert peak / len(text) < 12, peak / len(text)
    inputs, targets = train.window(0)
    assert inputs.dtype == np.int32 and targets.dtype == np.int32  # what the model reads is unchanged


# --------------------------------------------------------------------------------------------
# fuzzing the entry points with extreme values


def _array(draw, shape):
    moderate = st.lists(st.floats(-10, 10), min_size=1, max_size=4)
    values = draw(moderate | st.lists(st.sampled_from(EXTREMES) | st.floats(-10, 10), min_size=1, max_size=4))
    return np.resize(np.array(values, dtype=np.float64), shape)


@FUZZ
@given(data=st.data(), backend=st.sampled_from(BACKENDS), cell=st.sampled_from([RNN, GRU, LSTM]),
       batch=st.sampled_from([1, 3, 3, 0]), steps=st.sampled_from([1, 4, 4, 0]))
def test_fuzz_recurrent_forward(data, backend, cell, batch, steps):
    layer = cell(3, 4, num_layers=2, backend=backend)
    x = _array(data.draw, (batch, steps, 3))
    kind = data.draw(st.sampled_from(["none", "good", "extreme", "pair", "wrong shape"]))
    parts = [_array(data.draw, (2, batch, 4)) if kind == "extreme" else np.zeros((2, batch, 4))
             for _ in range(layer.state_size)]
    state = {"none": None, "pair": (parts[0], parts[0]), "wrong shape": np.zeros((1, batch, 4))}.get(
        kind, tuple(parts) if layer.state_size > 1 else parts[0])
    mask = data.draw(st.sampled_from([None, "ones", "extreme"]))
    mask = None if mask is None else (np.ones((batch, steps)) if mask == "ones" else _array(data.draw, (batch, steps)))
    try:
        with np.errstate(all="ignore"):  # as for a user: values near the float32 limit may overflow inside
            outputs, final, _ = layer.forward(x, initial_state=state, mask=mask)
    except MLXRNNError as error:
        assert "\n" not in str(error)
        event(f"refused: {type(error).__name__}")
        return
    assert tuple(outputs.shape) == (batch, steps, 4)
    event("ok")
    assert np.all(np.abs(x) <= 3.5e38)  # values beyond float32 never pass, in inputs or in states
    assert all(np.all(np.abs(p) <= 3.5e38) for p in (parts if kind == "extreme" else []))
    assert mask is None or (np.all(mask >= 0) and np.all(mask <= 1))
    if mask is None or np.isfinite(mask).all():  # NaN never passes, and moderate values stay finite
        if np.all(np.abs(x) < 1e30):
            assert _finite(layer.xp, outputs) and _finite(layer.xp, final)


@FUZZ
@given(data=st.data(), backend=st.sampled_from(BACKENDS), loss=st.sampled_from(["mse", "binary_cross_entropy"]))
def test_fuzz_training_step(data, backend, loss):
    output, size = ("sequence", 2) if loss == "mse" else ("last", 1)
    model = _dense(backend, output, loss, size)
    x = _array(data.draw, (2, 3, 3))
    y = _array(data.draw, (2, 3, 2) if loss == "mse" else (2, 1))
    before = model.numpy_parameters()
    try:
        with np.errstate(all="ignore"):  # as for a user: (3e38)² overflows float32 inside the loss
            result = Trainer(model, Adam(lr=0.01), clip_norm=1.0).step({"inputs": x, "targets": y})
    except MLXRNNError as error:
        assert "\n" not in str(error)
        event(f"refused: {type(error).__name__}")
        return
    after = model.numpy_parameters()
    assert all(np.isfinite(w).all() for w in after.values())  # never a NaN weight
    event(f"ok, applied={result.applied}")
    if result.applied:
        assert np.isfinite(result.loss) and np.isfinite(result.grad_norm)
    else:  # a non-finite step is undone, not applied
        assert not (np.isfinite(result.loss) and np.isfinite(result.grad_norm))
        assert all(np.array_equal(before[k], after[k]) for k in before)
    assert np.all(np.abs(x) <= 3.5e38) and np.all(np.abs(y) <= 3.5e38)


@FUZZ
@given(ids=st.lists(st.integers(-(2**40), 2**40) | st.integers(-2, 70), min_size=1, max_size=4),
       backend=st.sampled_from(BACKENDS))
def test_fuzz_token_stepper(char_run, ids, backend):
    lm = _language_models(char_run)[backend]
    try:
        logits, state = lm.token_stepper()(np.array(ids, dtype=np.int64), None)
    except ConfigError as error:
        assert "\n" not in str(error) and any(not 0 <= i < len(lm.vocab) for i in ids)
        event("refused")
        return
    assert all(0 <= i < len(lm.vocab) for i in ids)
    event("ok")
    assert logits.shape == (len(ids), len(lm.vocab)) and np.isfinite(logits).all()


_loaded: dict = {}


def _language_models(run):
    if run not in _loaded:
        _loaded[run] = {backend: load_language_model(run, backend=backend)[0] for backend in BACKENDS}
    return _loaded[run]

