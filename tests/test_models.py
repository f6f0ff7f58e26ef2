"""The models for every RNN type: gradients, decoding, errors and backend agreement.

Gradient checks compare each model's analytic backward (head → pooling → BPTT → embeddings,
and for the encoder–decoder: decoder BPTT → d a⟨0⟩ → encoder BPTT) with float64 central
differences for every parameter, at torch.gradcheck's tolerances (atol 1e-5, rtol 1e-3).
Hypothesis draws cells, depth, direction, padding and seeds; every head, pooling mode,
condition kind and the scheduled-sampling path is a parametrized case. Learning tests live
in tests/test_models_learn.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxrnn import (
    ConfigError,
    Seq2Seq,
    Seq2SeqConfig,
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceGenerator,
    SequenceGeneratorConfig,
    SequenceTagger,
    SequenceTaggerConfig,
    ShapeError,
    generator_batch,
    seq2seq_batch,
)
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.testing import CELL_VARIANTS, assert_gradients_close, available_backends, numerical_gradient

cell_variants = st.sampled_from(CELL_VARIANTS)


def _randomise(module, rng: np.random.Generator, scale: float = 0.6) -> dict[str, np.ndarray]:
    """Random float64 values for every parameter (biases too); returns the module's own arrays."""
    module.load_parameters({name: rng.normal(0.0, scale, size=v.shape) for name, v in module.parameters().items()})
    return module.parameters()


def _check_all(model, params, loss, grads, skip=()):
    for name, value in params.items():
        if name not in skip:
            assert_gradients_close(grads[name], numerical_gradient(loss, value), name)


# --- many-to-one ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("head,num_classes", [("sigmoid", 2), ("softmax", 3)])
@given(cell=cell_variants, bidirectional=st.booleans(), merge=st.sampled_from(["concat", "sum"]),
       num_layers=st.integers(1, 2), input_kind=st.sampled_from(["embedding", "one_hot", "dense"]),
       masked=st.booleans(), seed=st.integers(0, 2**16))
def test_classifier_gradients_every_pooling_and_head(pooling, head, num_classes, cell, bidirectional, merge,
                                                     num_layers, input_kind, masked, seed):
    rng = np.random.default_rng(seed)
    config = SequenceClassifierConfig(
        input_kind=input_kind, input_size=3 if input_kind == "dense" else 5, embed_size=3, cell=cell[0],
        hidden_size=3, num_layers=num_layers, bidirectional=bidirectional, merge=merge, pooling=pooling,
        num_classes=num_classes, head=head, cell_options=cell[1], seed=seed,
    )
    model = SequenceClassifier(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    B, T = 3, 4
    inputs = rng.normal(size=(B, T, 3)) if input_kind == "dense" else rng.integers(0, 5, size=(B, T))
    targets = rng.integers(0, num_classes, size=B)
    batch = {"inputs": inputs, "targets": targets}
    if masked:
        batch["lengths"] = rng.integers(1, T + 1, size=B)

    def loss():
        return float(model.loss(batch)[0])

    value, grads, extras = model.loss_and_grads(batch, training=False)
    _check_all(model, params, loss, grads)
    if input_kind == "dense":
        assert_gradients_close(extras["inputs"], numerical_gradient(loss, inputs), "inputs")
    # The loss is the mean −log p(target) of the probabilities the model predicts.
    probs = model.predict_proba(batch)
    assert np.allclose(float(value), -np.mean(np.log(probs[np.arange(B), targets])), atol=1e-10)


def test_classifier_pooling_values_by_hand():
    """Each pooling mode reads exactly the valid steps, checked against the layer's outputs."""
    rng = np.random.default_rng(0)
    lengths = np.array([4, 1, 2])
    inputs = rng.integers(0, 6, size=(3, 4))
    for bidirectional, merge in [(False, "concat"), (True, "concat"), (True, "sum")]:
        embeddings = {}
        for pooling in ("last", "mean", "max"):
            config = SequenceClassifierConfig(input_size=6, embed_size=3, cell="gru", hidden_size=4,
                                              bidirectional=bidirectional, merge=merge, pooling=pooling)
            model = SequenceClassifier(config, backend="numpy", dtype="float64")
            embeddings[pooling] = model.embed({"inputs": inputs, "lengths": lengths})
        x, _ = model.embedding.forward(inputs)
        outputs, final, _ = model.rnn.forward(x, lengths=lengths)  # same seeds → same weights
        H = 4
        for b, n in enumerate(lengths):
            valid = outputs[b, :n]
            assert np.allclose(embeddings["mean"][b], valid.mean(axis=0))
            assert np.allclose(embeddings["max"][b], valid.max(axis=0))
            if bidirectional:  # [forward state after step n ; backward state after reading back to step 0]
                assert np.allclose(embeddings["last"][b], np.concatenate([final[0, b], final[1, b]]))
                if merge == "concat":
                    assert np.allclose(final[0, b], outputs[b, n - 1, :H])
                    assert np.allclose(final[1, b], outputs[b, 0, H:])
            else:
                assert np.allclose(embeddings["last"][b], outputs[b, n - 1])
        # Padding beyond a sequence's length changes nothing.
        padded = inputs.copy()
        padded[1, 1:] = 5
        assert np.allclose(model.embed({"inputs": padded, "lengths": lengths}), embeddings["max"])


# --- many-to-many, same length -------------------------------------------------------------------
@pytest.mark.parametrize("head,num_tags", [("sigmoid", 2), ("softmax", 4)])
@given(cell=cell_variants, bidirectional=st.booleans(), num_layers=st.integers(1, 2),
       input_kind=st.sampled_from(["embedding", "dense"]), masked=st.booleans(), seed=st.integers(0, 2**16))
def test_tagger_gradients_both_heads(head, num_tags, cell, bidirectional, num_layers, input_kind, masked, seed):
    rng = np.random.default_rng(seed)
    config = SequenceTaggerConfig(
        input_kind=input_kind, input_size=3 if input_kind == "dense" else 5, embed_size=3, cell=cell[0],
        hidden_size=3, num_layers=num_layers, bidirectional=bidirectional, num_tags=num_tags, head=head,
        cell_options=cell[1], seed=seed,
    )
    model = SequenceTagger(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    B, T = 3, 4
    inputs = rng.normal(size=(B, T, 3)) if input_kind == "dense" else rng.integers(0, 5, size=(B, T))
    tags = rng.integers(0, num_tags, size=(B, T))
    batch = {"inputs": inputs, "targets": tags}
    valid = np.ones((B, T), dtype=bool)
    if masked:
        batch["lengths"] = rng.integers(1, T + 1, size=B)
        valid = np.arange(T)[None, :] < batch["lengths"][:, None]
        tags[~valid] = -1  # padding may hold anything

    def loss():
        return float(model.loss(batch)[0])

    value, grads, extras = model.loss_and_grads(batch, training=False)
    _check_all(model, params, loss, grads)
    if input_kind == "dense":
        assert_gradients_close(extras["inputs"], numerical_gradient(loss, inputs), "inputs")
    probs = model.predict_proba(batch)
    picked = np.take_along_axis(probs, np.where(valid, tags, 0)[..., None], axis=-1)[..., 0]
    assert np.allclose(float(value), -np.log(picked[valid]).mean(), atol=1e-10)
    assert np.all(model.predict(batch)[~valid] == -1)


def test_tagger_is_bidirectional_by_default_and_uses_later_words():
    model = SequenceTagger(SequenceTaggerConfig(input_size=8, embed_size=4, hidden_size=4), backend="numpy")
    assert model.rnn.bidirectional
    a = model.predict_proba(np.array([[3, 4, 5]]))
    b = model.predict_proba(np.array([[3, 4, 6]]))  # only the last word differs
    assert not np.allclose(a[0, 0], b[0, 0])  # the first tag sees it


# --- encoder–decoder ------------------------------------------------------------------------------
@pytest.mark.parametrize("sampling", [0.0, 0.5, 1.0], ids=["teacher", "scheduled-0.5", "free-running"])
@given(cell=cell_variants, bidirectional=st.booleans(), num_layers=st.integers(1, 2), masked=st.booleans(),
       seed=st.integers(0, 2**16))
def test_seq2seq_gradients_reach_the_encoder(sampling, cell, bidirectional, num_layers, masked, seed):
    rng = np.random.default_rng(seed)
    config = Seq2SeqConfig(source_vocab_size=5, target_vocab_size=6, embed_size=3, cell=cell[0], hidden_size=3,
                           num_layers=num_layers, bidirectional_encoder=bidirectional, scheduled_sampling=sampling,
                           cell_options=cell[1], seed=seed)
    model = Seq2Seq(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    B, S, T = 3, 4, 3
    batch = {"source": rng.integers(0, 5, size=(B, S)), "target": rng.integers(0, 6, size=(B, T))}
    if masked:
        batch["source_lengths"] = rng.integers(1, S + 1, size=B)
        batch["target_lengths"] = rng.integers(1, T + 1, size=B)

    def loss():  # the same draws every call, so scheduled sampling picks the same steps
        return float(model.loss(batch, training=True, rng=np.random.default_rng(seed))[0])

    _, grads, _ = model.loss_and_grads(batch, training=True, rng=np.random.default_rng(seed))
    _check_all(model, params, loss, grads)
    encoder = [name for name in params if name.startswith(("encoder.", "source_embedding."))]
    assert encoder and max(float(np.abs(grads[name]).max()) for name in encoder) > 1e-6


def test_seq2seq_scheduled_sampling_feeds_predictions():
    """p = 1 feeds the model's own argmax at every step after the first (free running)."""
    rng = np.random.default_rng(1)
    model = Seq2Seq(Seq2SeqConfig(source_vocab_size=5, target_vocab_size=6, embed_size=3, hidden_size=4),
                    backend="numpy", dtype="float64")
    _randomise(model, rng)
    B, T = 4, 5
    batch = {"source": rng.integers(0, 5, size=(B, 3)), "target": rng.integers(3, 6, size=(B, T))}
    state, tokens, predictions = model.encode(batch["source"]), np.full(B, 2), []
    for _ in range(T):
        log_probs, state = model.step(tokens, state)
        log_probs[:, model.banned_ids] = -np.inf
        tokens = log_probs.argmax(axis=1)
        predictions.append(tokens)
    predictions = np.stack(predictions, axis=1)
    _, _, cache = model.loss({**batch, "sampling_probability": 1.0}, training=True)
    fed = np.asarray(cache["decoder"]["ids"])
    assert np.all(fed[:, 0] == 2) and np.array_equal(fed[:, 1:], predictions[:, :-1])
    logits, cache = model.forward({**batch, "sampling_probability": 0.5}, training=True, rng=np.random.default_rng(0))
    z = np.asarray(logits).copy()
    z[..., model.banned_ids] = -np.inf  # each fed token is the data's or the prediction from the step before
    fed = np.asarray(cache["decoder"]["ids"])[:, 1:]
    from_model, from_data = fed == z.argmax(axis=-1)[:, :-1], fed == batch["target"][:, :-1]
    assert np.all(from_model | from_data) and (~from_data).any() and (~from_model).any()
    _, _, cache = model.loss({**batch, "sampling_probability": 1.0}, training=False)  # evaluation: teacher forcing
    assert np.array_equal(np.asarray(cache["decoder"]["ids"])[:, 1:], batch["target"][:, :-1])


def _all_outputs(allowed, max_length):
    """Every possible decoder output: (tokens, finished) ending in <EOS>, or cut at max_length."""
    for n in range(max_length + 1):
        for tokens in itertools.product(allowed, repeat=n):
            yield list(tokens), n < max_length


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beam_search_is_exact_with_a_wide_beam(cell):
    """A beam wide enough to hold every prefix finds the best length-normalised output of all."""
    max_length, allowed, eos = 3, [1, 3, 4], 2  # <PAD> = 0 is never emitted
    outputs = list(_all_outputs(allowed, max_length))
    target = np.zeros((len(outputs), max_length), dtype=np.int64)
    for i, (tokens, finished) in enumerate(outputs):
        target[i, : len(tokens) + finished] = tokens + [eos] * finished
    lengths = np.array([len(tokens) + finished for tokens, finished in outputs])
    winners = {}
    for eos_bias in (0.0, 2.0, 4.0):  # from long outputs winning to short ones winning
        rng = np.random.default_rng(5)
        model = Seq2Seq(Seq2SeqConfig(source_vocab_size=4, target_vocab_size=5, embed_size=3, cell=cell,
                                      hidden_size=4, bidirectional_encoder=True), backend="numpy", dtype="float64")
        params = {name: rng.normal(0.0, 1.5, size=v.shape) for name, v in model.parameters().items()}
        params["head.b"][:] = 0.0
        params["head.b"][eos] = eos_bias
        model.load_parameters(params)
        source = rng.integers(0, 4, size=(4, 4))
        for length_penalty in (0.0, 1.0, 2.0):
            best = model.beam_search(source, beam_size=64, max_length=max_length, length_penalty=length_penalty)
            for b in range(len(source)):
                log_p = model.log_prob({"source": np.repeat(source[b:b + 1], len(outputs), axis=0), "target": target,
                                        "target_lengths": lengths})
                scores = log_p / np.maximum(lengths, 1) ** length_penalty
                top = int(np.argmax(scores))
                assert (best[b].tokens, best[b].finished) == tuple(outputs[top]), (eos_bias, length_penalty, b)
                assert np.isclose(best[b].score, scores[top]) and np.isclose(best[b].log_prob, log_p[top])
                winners[eos_bias, length_penalty, b] = (len(best[b].tokens), best[b].finished)
    # The cases really exercised finished and cut-off outputs of several lengths, and the penalty mattered.
    assert len(set(winners.values())) >= 3 and {w[1] for w in winners.values()} == {True, False}, winners
    assert any(winners[e, 0.0, b] != winners[e, 2.0, b] for e in (0.0, 2.0, 4.0) for b in range(4)), winners


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_greedy_equals_beam_of_one_and_agrees_with_teacher_forcing(cell):
    rng = np.random.default_rng(11)
    model = Seq2Seq(Seq2SeqConfig(source_vocab_size=6, target_vocab_size=7, embed_size=4, cell=cell, hidden_size=5,
                                  num_layers=2), backend="numpy", dtype="float64")
    _randomise(model, rng, scale=1.0)
    source, lengths = rng.integers(0, 6, size=(5, 4)), np.array([4, 1, 3, 2, 4])
    greedy = model.greedy_decode(source, lengths, max_length=6)
    beam = model.beam_search(source, lengths, beam_size=1, max_length=6)
    assert greedy == [h.tokens for h in beam]
    assert model.translate(source, lengths, beam_size=1, max_length=6) == greedy
    # Teacher-forcing the greedy output reproduces it as the argmax at every step.
    for b, tokens in enumerate(greedy):
        finished = beam[b].finished
        target = np.array([tokens + ([2] if finished else [])])
        if target.shape[1] == 0:
            continue
        logits, _ = model.forward({"source": source[b:b + 1], "source_lengths": lengths[b:b + 1], "target": target})
        z = np.asarray(logits)[0]
        z[:, model.banned_ids] = -np.inf
        assert list(z.argmax(axis=1)) == list(target[0])


def test_seq2seq_batch_appends_eos_and_pads():
    batch = seq2seq_batch([[5, 6, 7], [8]], [[3], [4, 4]])
    assert batch["source"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["target"].tolist() == [[3, 2, 0], [4, 4, 2]]
    assert batch["source_lengths"].tolist() == [3, 1] and batch["target_lengths"].tolist() == [2, 3]


# --- one-to-many ---------------------------------------------------------------------------------
@pytest.mark.parametrize("condition_kind", ["class", "vector"])
@given(cell=cell_variants, num_layers=st.integers(1, 2), time=st.integers(1, 4), masked=st.booleans(),
       seed=st.integers(0, 2**16))
def test_generator_gradients_both_conditions(condition_kind, cell, num_layers, time, masked, seed):
    rng = np.random.default_rng(seed)
    config = SequenceGeneratorConfig(condition_kind=condition_kind, condition_size=3, vocab_size=6, embed_size=3,
                                     cell=cell[0], hidden_size=3, num_layers=num_layers, cell_options=cell[1],
                                     seed=seed)
    model = SequenceGenerator(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    B = 3
    conditions = rng.integers(0, 3, size=B) if condition_kind == "class" else rng.normal(size=(B, 3))
    batch = {"conditions": conditions, "targets": rng.integers(0, 6, size=(B, time))}
    if masked:
        batch["lengths"] = rng.integers(1, time + 1, size=B)

    def loss():
        return float(model.loss(batch)[0])

    value, grads, extras = model.loss_and_grads(batch, training=False)
    skip = ("embedding.weight",) if time == 1 else ()  # no token is fed back: its gradient is exactly 0
    _check_all(model, params, loss, grads, skip)
    if time == 1:
        assert not np.any(grads["embedding.weight"])
    if condition_kind == "vector":
        assert_gradients_close(extras["conditions"], numerical_gradient(loss, conditions), "conditions")
    n_valid = batch["lengths"].sum() if masked else B * time
    assert np.isclose(float(value), -model.log_prob(batch).sum() / n_valid)


def test_generator_feeds_its_outputs_back_and_honours_sampling_controls():
    rng = np.random.default_rng(2)
    model = SequenceGenerator(SequenceGeneratorConfig(condition_size=3, vocab_size=8, embed_size=4, hidden_size=6),
                              backend="numpy", dtype="float64")
    _randomise(model, rng, scale=1.0)
    conditions = np.array([0, 1, 2, 1])
    greedy = model.generate(conditions, max_length=6, options=SamplingOptions(greedy=True))
    for b, tokens in enumerate(greedy):  # teacher-forcing the greedy output reproduces it as the argmax
        finished = len(tokens) < 6
        target = np.array([tokens + ([2] if finished else [])])
        logits, _ = model.forward(conditions[b:b + 1], target)
        z = np.asarray(logits)[0]
        z[:, [0, 1]] = -np.inf  # <PAD> and <UNK> are banned by default
        assert list(z.argmax(axis=1)) == list(target[0])
    same = model.generate(conditions, max_length=6, seed=3)
    assert same == model.generate(conditions, max_length=6, seed=3)
    top1 = model.generate(conditions, max_length=6, options=SamplingOptions(top_k=1), seed=9)
    assert top1 == greedy
    drawn = model.generate(np.repeat(conditions, 20), max_length=6, options=SamplingOptions(temperature=5.0), seed=4)
    assert all(token not in (0, 1) for seq in drawn for token in seq)
    assert len({tuple(s) for s in drawn}) > 10


def test_generator_batch_appends_eos():
    batch = generator_batch([1, 0], [[4, 5], [6]])
    assert batch["targets"].tolist() == [[4, 5, 2], [6, 2, 0]] and batch["lengths"].tolist() == [3, 2]


def test_padded_target_steps_may_hold_anything():
    """With lengths given, padded target steps are neither fed back nor counted: −1 or <PAD> alike."""
    rng = np.random.default_rng(4)
    s2s = Seq2Seq(Seq2SeqConfig(source_vocab_size=6, target_vocab_size=6, embed_size=3, hidden_size=3),
                  backend="numpy", dtype="float64")
    gen = SequenceGenerator(SequenceGeneratorConfig(vocab_size=6, embed_size=3, hidden_size=3), backend="numpy",
                            dtype="float64")
    for model, batch, key in [
        (s2s, {"source": rng.integers(0, 6, (2, 3)), "target": np.array([[3, 2, 0], [4, 4, 2]]),
               "target_lengths": np.array([2, 3])}, "target"),
        (gen, {"conditions": np.array([0, 3]), "targets": np.array([[3, 2, 0], [4, 4, 2]]),
               "lengths": np.array([2, 3])}, "targets"),
    ]:
        reference = model.loss_and_grads(batch)
        other = model.loss_and_grads({**batch, key: np.where(batch[key] == 0, -1, batch[key])})
        assert float(reference[0]) == float(other[0])
        assert all(np.array_equal(reference[1][n], other[1][n]) for n in reference[1])


# --- clean one-line errors --------------------------------------------------------------------------
def _one_line(error_type, call):
    with pytest.raises(error_type) as info:
        call()
    assert "\n" not in str(info.value) and str(info.value)


def test_bad_configs_and_inputs_raise_one_line_errors():
    _one_line(ConfigError, lambda: SequenceClassifierConfig(pooling="attention").validate())
    _one_line(ConfigError, lambda: SequenceClassifierConfig(num_classes=5, head="sigmoid").validate())
    _one_line(ConfigError, lambda: SequenceTaggerConfig(num_tags=1).validate())
    _one_line(ConfigError, lambda: Seq2SeqConfig(scheduled_sampling=1.5).validate())
    _one_line(ConfigError, lambda: Seq2SeqConfig(target_vocab_size=2).validate())
    _one_line(ConfigError, lambda: SequenceGeneratorConfig(condition_kind="text").validate())

    clf = SequenceClassifier(SequenceClassifierConfig(input_size=6, embed_size=3, hidden_size=3), backend="numpy")
    ids = np.zeros((2, 3), dtype=np.int64)
    _one_line(ShapeError, lambda: clf.loss({"inputs": ids, "targets": np.zeros((2, 3), dtype=int)}))
    _one_line(ConfigError, lambda: clf.loss({"inputs": ids, "targets": np.array([0, 2])}))
    _one_line(ConfigError, lambda: clf.embed({"inputs": ids, "lengths": np.array([3, 0])}))
    _one_line(ConfigError, lambda: clf.embed({"inputs": ids + 6}))
    _one_line(ShapeError, lambda: clf.embed({"inputs": ids, "lengths": np.array([3])}))

    tagger = SequenceTagger(SequenceTaggerConfig(input_size=6, embed_size=3, hidden_size=3), backend="numpy")
    _one_line(ConfigError, lambda: tagger.loss({"inputs": ids, "targets": ids + 2}))
    _one_line(ShapeError, lambda: tagger.loss({"inputs": ids, "targets": ids[:, :2]}))

    s2s = Seq2Seq(Seq2SeqConfig(source_vocab_size=6, target_vocab_size=6, embed_size=3, hidden_size=3),
                  backend="numpy")
    _one_line(ShapeError, lambda: s2s.loss({"source": ids, "target": np.zeros((3, 2), dtype=int)}))
    _one_line(ShapeError, lambda: s2s.loss({"source": ids[0], "target": ids}))
    _one_line(ConfigError, lambda: s2s.beam_search(ids, beam_size=0))
    _one_line(ConfigError, lambda: s2s.beam_search(ids, length_penalty=-1))

    gen = SequenceGenerator(SequenceGeneratorConfig(condition_kind="vector", condition_size=2, vocab_size=6,
                                                    embed_size=3, hidden_size=3), backend="numpy")
    _one_line(ShapeError, lambda: gen.generate(np.zeros((2, 3))))
    _one_line(ShapeError, lambda: gen.loss({"conditions": np.zeros((2, 2)), "targets": np.zeros((3, 2), dtype=int)}))
    _one_line(ConfigError, lambda: gen.generate(np.zeros((2, 2)), options=SamplingOptions(temperature=0)))


# --- backends agree -----------------------------------------------------------------------------------
def _models():
    yield "classifier", lambda b: SequenceClassifier(SequenceClassifierConfig(
        input_size=7, embed_size=4, hidden_size=5, bidirectional=True, pooling="max", num_classes=3), backend=b), \
        {"inputs": np.array([[1, 2, 3, 4], [5, 6, 0, 0]]), "targets": np.array([0, 2]), "lengths": np.array([4, 2])}
    yield "tagger", lambda b: SequenceTagger(SequenceTaggerConfig(input_size=7, embed_size=4, hidden_size=5),
                                             backend=b), \
        {"inputs": np.array([[1, 2, 3, 4], [5, 6, 0, 0]]), "targets": np.array([[0, 1, 1, 0], [1, 0, 0, 0]]),
         "lengths": np.array([4, 2])}
    yield "seq2seq", lambda b: Seq2Seq(Seq2SeqConfig(source_vocab_size=7, target_vocab_size=7, embed_size=4,
                                                     hidden_size=5, bidirectional_encoder=True), backend=b), \
        seq2seq_batch([[3, 4, 5], [6]], [[4, 5], [3, 3, 6]])
    yield "generator", lambda b: SequenceGenerator(SequenceGeneratorConfig(
        condition_kind="vector", condition_size=2, vocab_size=7, embed_size=4, hidden_size=5), backend=b), \
        generator_batch(np.array([[0.5, -1.0], [1.0, 0.0]]), [[3, 4], [5]])


@pytest.mark.skipif("mlx" not in available_backends(), reason="MLX is not installed")
@pytest.mark.parametrize("name,make,batch", list(_models()), ids=[m[0] for m in _models()])
def test_mlx_matches_numpy(name, make, batch):
    results = {}
    for backend in ("numpy", "mlx"):
        model = make(backend)
        loss, grads, _ = model.loss_and_grads(batch, training=False)
        results[backend] = (model.xp.item(loss), {k: model.xp.to_numpy(v) for k, v in grads.items()})
    assert np.isclose(results["numpy"][0], results["mlx"][0], rtol=1e-5, atol=1e-6)
    for key, value in results["numpy"][1].items():
        assert np.allclose(value, results["mlx"][1][key], rtol=1e-4, atol=1e-5), key
    if name == "seq2seq":  # decoding runs on MLX too and agrees
        outputs = [make(b).beam_search(batch["source"], batch["source_lengths"], beam_size=2, max_length=5)
                   for b in ("numpy", "mlx")]
        assert [h.tokens for h in outputs[0]] == [h.tokens for h in outputs[1]]
