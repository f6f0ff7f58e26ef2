"""Sampling controls pinned against closed forms, on the decoding primitives and through
``sample`` on every backend here.

The reference below is written from the definitions, not from mlxrnn's code:
    temperature τ:  p = softmax(z / τ) over the allowed tokens (banned ones get exactly 0)
    top-k:          keep the k most probable tokens, renormalise
    top-p:          keep the smallest most-probable-first set whose mass reaches p, renormalise
    greedy:         argmax
applied in that order. τ = 0.5 and τ = 2 tell division from multiplication (softmax(z·τ)).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxrnn.lm.sampling as sampling_module
from mlxrnn.lm.model import LanguageModel, language_model_config
from mlxrnn.lm.sampling import sample
from mlxrnn.models.decoding import SamplingOptions, draw_tokens, next_token_distribution
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.testing import available_backends
from mlxrnn.text.tokenizers import CharTokenizer
from mlxrnn.text.vocabulary import Vocabulary


def reference_distribution(logits, temperature=1.0, top_k=None, top_p=None, banned=()) -> np.ndarray:
    """The closed form for one row of logits (V,), by the definitions above."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    allowed = np.ones(z.size, dtype=bool)
    allowed[list(banned)] = False
    probs = np.where(allowed, np.exp(z - z[allowed].max()), 0.0)
    probs /= probs.sum()
    if top_k is not None:
        keep = np.zeros(z.size, dtype=bool)
        keep[np.argsort(-probs, kind="stable")[:top_k]] = True
        probs = np.where(keep & allowed, probs, 0.0)
        probs /= probs.sum()
    if top_p is not None:
        keep, mass = np.zeros(z.size, dtype=bool), 0.0
        for token in np.argsort(-probs, kind="stable"):
            if probs[token] == 0.0:
                break
            keep[token], mass = True, mass + probs[token]
            if mass >= top_p:
                break
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- the decoding primitives ------------------------------------------------------------------------

LOGITS = np.random.default_rng(0).normal(0.0, 2.0, size=(5, 11))  # distinct values: no ties in any ranking


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_is_softmax_of_logits_over_temperature(temperature):
    probs = next_token_distribution(LOGITS, SamplingOptions(temperature=temperature))
    np.testing.assert_allclose(probs, _softmax(LOGITS / temperature), rtol=1e-12, atol=1e-15)
    if temperature != 1.0:  # the closed form tells τ from 1/τ on these logits
        assert np.abs(probs - _softmax(LOGITS * temperature)).max() > 0.05


@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize("top_k", [1, 3, 10, 11, 50])
def test_top_k_keeps_exactly_the_k_most_probable(temperature, top_k):
    probs = next_token_distribution(LOGITS, SamplingOptions(temperature=temperature, top_k=top_k))
    for row, logits in zip(probs, LOGITS):
        expected_set = set(np.argsort(-logits)[: min(top_k, logits.size)].tolist())
        assert set(np.flatnonzero(row).tolist()) == expected_set
        np.testing.assert_allclose(row, reference_distribution(logits, temperature, top_k=top_k), rtol=1e-12,
                                   atol=1e-15)


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.77, 0.9, 0.999, 1.0])
def test_top_p_keeps_the_smallest_set_that_reaches_p(top_p):
    probs = next_token_distribution(LOGITS, SamplingOptions(top_p=top_p))
    full = _softmax(LOGITS)
    for row, logits, dense in zip(probs, LOGITS, full):
        kept = np.flatnonzero(row)
        order = np.argsort(-dense)
        size = len(kept)
        assert set(kept.tolist()) == set(order[:size].tolist())  # the most probable tokens first
        assert dense[order[:size]].sum() >= top_p - 1e-12  # reaches p ...
        assert size == 1 or dense[order[: size - 1]].sum() < top_p  # ... and one fewer would not
        np.testing.assert_allclose(row, reference_distribution(logits, top_p=top_p), rtol=1e-12, atol=1e-15)


def test_top_p_on_exact_probabilities():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))  # p values away from the partial sums' round-off
    for top_p, expected in [(0.45, [1, 0, 0, 0]), (0.51, [0.625, 0.375, 0, 0]), (0.79, [0.625, 0.375, 0, 0]),
                            (0.81, np.array([0.5, 0.3, 0.15, 0]) / 0.95), (0.96, [0.5, 0.3, 0.15, 0.05])]:
        np.testing.assert_allclose(next_token_distribution(logits, SamplingOptions(top_p=top_p))[0], expected,
                                   rtol=1e-12, err_msg=f"top_p={top_p}")


def test_controls_compose_in_order_temperature_top_k_top_p_with_bans():
    banned = [0, 1, int(np.argmax(LOGITS[0]))]  # e.g. <PAD>, <UNK> and the most likely token of row 0
    options = SamplingOptions(temperature=2.0, top_k=6, top_p=0.6)
    probs = next_token_distribution(LOGITS, options, banned)
    for row, logits in zip(probs, LOGITS):
        np.testing.assert_allclose(row, reference_distribution(logits, 2.0, 6, 0.6, banned), rtol=1e-12, atol=1e-15)
        assert np.all(row[banned] == 0.0)


def test_banned_ids_get_zero_and_the_rest_is_the_softmax_over_the_allowed():
    logits = LOGITS.copy()
    logits[:, 1] = 30.0  # <UNK> would take almost all the mass
    probs = next_token_distribution(logits, SamplingOptions(temperature=0.5), banned=[0, 1])
    assert np.all(probs[:, [0, 1]] == 0.0)
    np.testing.assert_allclose(probs[:, 2:], _softmax(logits[:, 2:] / 0.5), rtol=1e-12, atol=1e-15)


def test_greedy_is_argmax_and_draws_invert_the_cumulative_distribution():
    probs = next_token_distribution(LOGITS, SamplingOptions(temperature=0.5))
    np.testing.assert_array_equal(draw_tokens(probs, np.random.default_rng(0), greedy=True), LOGITS.argmax(axis=1))
    rows = np.repeat(probs[:1], 40_000, axis=0)
    counts = np.bincount(draw_tokens(rows, np.random.default_rng(1)), minlength=probs.shape[1]) / rows.shape[0]
    # 40,000 draws: each frequency's standard error is at most 0.0025; 0.012 is ~5 of them (fixed seed)
    np.testing.assert_allclose(counts, probs[0], atol=0.012)


# --- through sample(), on every backend ---------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog\nand then it sleeps\n"


def _language_model(backend: str) -> LanguageModel:
    vocab = Vocabulary.build(list(TEXT), level="char")
    config = language_model_config(len(vocab), hidden_size=8, num_layers=2, embed_size=4, seed=1)
    model = SequenceModel(config, backend=backend)
    rng = np.random.default_rng(2)
    params = {name: rng.normal(0.0, 0.8, size=value.shape) for name, value in model.numpy_parameters().items()}
    params["head.b"][vocab.unk_id] = 4.0  # <UNK> is likely unless banned
    model.load_parameters(params)
    return LanguageModel(model, vocab, CharTokenizer())


SAMPLE_CASES = {
    "temperature-0.5": SamplingOptions(temperature=0.5),
    "temperature-2": SamplingOptions(temperature=2.0),
    "top-k-3": SamplingOptions(top_k=3),
    "top-p-0.7": SamplingOptions(top_p=0.7),
    "all-three": SamplingOptions(temperature=2.0, top_k=5, top_p=0.8),
    "allow-unk": SamplingOptions(allow_unk=True),
}


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("case", sorted(SAMPLE_CASES))
def test_sample_draws_from_the_closed_form_distribution(monkeypatch, backend, case):
    """Every distribution ``sample`` draws from equals the closed form of the logits a full
    forward pass over the context so far gives, with <PAD>, <EOS> (characters) and, unless
    allowed, <UNK> banned."""
    options = SAMPLE_CASES[case]
    lm = _language_model(backend)
    seen = []
    if backend == "mlx":  # MLX draws on the device: record the filtered distribution there (eagerly)
        import mlx.core as mx

        import mlxrnn.lm.mlx_sampling as device_sampling

        filter_logits, init = device_sampling.filter_logits, device_sampling.TokenSampler.__init__

        def recording_filter(logits, options, banned):
            z = filter_logits(logits, options, banned)
            seen.append(np.array(mx.softmax(z.astype(mx.float32), axis=-1)))
            return z

        monkeypatch.setattr(device_sampling, "filter_logits", recording_filter)
        monkeypatch.setattr(device_sampling.TokenSampler, "__init__",
                            lambda self, model, opts, banned=(), compiled=True: init(self, model, opts, banned, False))
    else:
        original = sampling_module.draw_tokens
        monkeypatch.setattr(sampling_module, "draw_tokens",
                            lambda probs, rng, greedy=False: seen.append(np.array(probs)) or original(probs, rng, greedy))
    result = sample(lm, length=10, num_samples=3, prime="th", options=options, seed=4)
    assert len(seen) == 10
    vocab = lm.vocab
    banned = [vocab.pad_id, vocab.eos_id] + ([] if options.allow_unk else [vocab.unk_id])
    context = np.concatenate([[lm.start_id], lm.encode("th")])
    for step, probs in enumerate(seen):
        prefix = np.array([np.concatenate([context, ids[:step]]) for ids in result.ids], dtype=np.int64)
        logits, _ = lm.next_token_logits(prefix)
        for row in range(3):
            expected = reference_distribution(logits[row], options.temperature, options.top_k, options.top_p, banned)
            np.testing.assert_allclose(probs[row], expected, rtol=2e-4, atol=1e-6, err_msg=f"step {step}, row {row}")
    drawn = np.concatenate([np.asarray(ids) for ids in result.ids])
    assert (vocab.unk_id in drawn) == options.allow_unk  # <UNK> is the likeliest token here unless banned


@pytest.mark.parametrize("backend", available_backends())
def test_greedy_sampling_follows_the_argmax_of_the_full_forward(backend):
    lm = _language_model(backend)
    result = sample(lm, length=12, num_samples=1, options=SamplingOptions(greedy=True), seed=0)
    banned = [lm.vocab.pad_id, lm.vocab.unk_id, lm.vocab.eos_id]
    sequence = [lm.start_id]
    for _ in range(12):
        logits, _ = lm.next_token_logits(np.array([sequence]))
        logits[0, banned] = -np.inf
        sequence.append(int(np.argmax(logits[0])))
    assert result.ids[0] == sequence[1:]
    assert result.ids == sample(lm, length=12, options=SamplingOptions(greedy=True), seed=99).ids  # no randomness
