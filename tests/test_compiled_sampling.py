"""Batch-1 sampling in one compiled loop draws what the NumPy per-token path draws for a seed."""

from __future__ import annotations

import numpy as np
import pytest

from mlxrnn.backend.kernels import numba_installed
from mlxrnn.backend.numpy_backend import NumpyBackend
from mlxrnn.lm import sampling as sampling_module
from mlxrnn.lm.compiled_sampling import CompiledSampler
from mlxrnn.lm.model import LanguageModel, language_model_config
from mlxrnn.models.decoding import SamplingOptions, draw_tokens, next_token_distribution
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.text.tokenizers import CharTokenizer
from mlxrnn.text.vocabulary import Vocabulary

pytestmark = pytest.mark.skipif(not numba_installed(), reason="the compiled sampler is a numba loop")

TEXT = "the quick brown fox jumps over the lazy dog\nand then it sleeps\n"
CELLS = [("lstm", {}), ("gru", {"variant": "reset_after"}), ("rnn", {"activation": "tanh"})]
OPTIONS = [SamplingOptions(), SamplingOptions(temperature=0.7, top_k=5, top_p=0.9),
           SamplingOptions(temperature=1.5, allow_unk=True), SamplingOptions(greedy=True)]


def _language_model(cell: str, options: dict, embed_size: int = 8, tie: bool = False, kernels: str = "numba"):
    vocab = Vocabulary.build(list(TEXT), level="char")
    config = language_model_config(len(vocab), cell=cell, hidden_size=32, num_layers=2, embed_size=embed_size,
                                   seed=1, cell_options=options, tie_weights=tie)
    model = SequenceModel(config, backend=NumpyBackend("float32", kernels=kernels))
    rng = np.random.default_rng(2)
    # weights of a trained model's scale: a chaotic network (large random weights) would turn
    # the rounding differences of two correct summation orders into different texts
    model.load_parameters({name: rng.normal(0.0, 0.15, size=value.shape)
                           for name, value in model.numpy_parameters().items()})
    return LanguageModel(model, vocab, CharTokenizer())


def _numpy_path_ids(lm, monkeypatch, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(CompiledSampler, "for_model", classmethod(lambda cls, model: None))
        return sampling_module.sample(lm, **kwargs).ids


@pytest.mark.parametrize("cell,cell_options", CELLS, ids=[c for c, _ in CELLS])
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "t0.7-k5-p0.9", "t1.5-unk", "greedy"])
def test_compiled_sampling_draws_what_the_numpy_path_draws(monkeypatch, cell, cell_options, options):
    lm = _language_model(cell, cell_options)
    assert CompiledSampler.for_model(lm.model) is not None
    kwargs = {"length": 150, "prime": "th", "options": options, "seed": 7, "stop_at_eos": False}
    assert sampling_module.sample(lm, **kwargs).ids == _numpy_path_ids(lm, monkeypatch, **kwargs)


@pytest.mark.parametrize("embed_size,tie", [(0, False), (32, True)])  # one-hot inputs; a tied head
def test_compiled_sampling_other_inputs_and_heads(monkeypatch, embed_size, tie):
    lm = _language_model("lstm", {}, embed_size=embed_size, tie=tie)
    kwargs = {"length": 80, "options": SamplingOptions(), "seed": 3, "stop_at_eos": False}
    assert sampling_module.sample(lm, **kwargs).ids == _numpy_path_ids(lm, monkeypatch, **kwargs)


def test_the_compiled_draw_is_the_numpy_draw():
    from mlxrnn.backend.numba_sampling import draw

    rng = np.random.default_rng(0)
    for options in OPTIONS:
        for _ in range(50):
            logits = rng.normal(0, 3, size=(1, 40))
            banned = [0, 3] if not options.allow_unk else [0]
            uniform_rng, numpy_rng = np.random.default_rng(11), np.random.default_rng(11)
            expected = draw_tokens(next_token_distribution(logits, options, banned), numpy_rng, options.greedy)[0]
            got = draw(logits[0].copy(), np.array(banned, dtype=np.int64), float(options.temperature),
                       int(options.top_k or 0), float(options.top_p or 1.0), options.greedy,
                       0.0 if options.greedy else uniform_rng.random())
            assert got == expected


def test_models_the_loop_does_not_cover_take_the_numpy_path():
    assert CompiledSampler.for_model(_language_model("lstm", {"peephole": True}).model) is None
    assert CompiledSampler.for_model(_language_model("gru", {"variant": "full"}).model) is None
    assert CompiledSampler.for_model(_language_model("lstm", {}, kernels="numpy").model) is None


def test_several_samples_keep_the_batched_path(monkeypatch):
    lm = _language_model("lstm", {})
    monkeypatch.setattr(CompiledSampler, "stream", lambda *a, **k: pytest.fail("batch > 1 is not compiled"))
    result = sampling_module.sample(lm, length=5, num_samples=2, seed=0)
    assert len(result.ids) == 2
