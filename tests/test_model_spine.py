"""The parts every model shares: RecurrentSpec in every config, and the one input encoder.

Configs: the flat keyword names (``cell=``, ``hidden_size=``, ...) and a nested
``recurrent=RecurrentSpec(...)`` build equal configs; ``to_dict`` writes the nested JSON form
and ``from_dict`` reads it and the flat form of older checkpoints; malformed or ambiguous
dicts are one-line ConfigErrors. Encoder: the classifier and seq2seq now hand their embeddings
to the recurrent stack as TokenInputs, so the stack may fold the lookup into layer 0; the
gradients of that path are checked against float64 central differences.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from mlxrnn import (
    ConfigError,
    Seq2Seq,
    Seq2SeqConfig,
    SequenceClassifier,
    SequenceClassifierConfig,
    SequenceGeneratorConfig,
    SequenceModelConfig,
    SequenceTaggerConfig,
)
from mlxrnn.models.blocks import InputEncoder
from mlxrnn.models.spec import RecurrentSpec
from mlxrnn.testing import assert_gradients_close, numerical_gradient

FLAT = dict(cell="gru", hidden_size=5, num_layers=2, dropout=0.25, cell_options={"variant": "reset_after"})
CONFIGS = {  # class -> (required non-recurrent fields, extra flat names it had)
    SequenceModelConfig: ({"input_size": 7, "output_size": 7}, {"bidirectional": True, "merge": "sum"}),
    SequenceClassifierConfig: ({"input_size": 7}, {"bidirectional": True, "merge": "sum"}),
    SequenceTaggerConfig: ({"input_size": 7}, {"bidirectional": False, "merge": "sum"}),
    Seq2SeqConfig: ({}, {"bidirectional_encoder": True}),
    SequenceGeneratorConfig: ({}, {}),
}


def _spec_of(extra: dict) -> RecurrentSpec:
    renamed = {"bidirectional" if k == "bidirectional_encoder" else k: v for k, v in extra.items()}
    return RecurrentSpec(**FLAT, **renamed)


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_flat_keywords_and_a_nested_spec_build_the_same_config(cls) -> None:
    fields, extra = CONFIGS[cls]
    flat = cls(**fields, **FLAT, **extra).validate()
    nested = cls(**fields, recurrent=_spec_of(extra)).validate()
    assert flat == nested
    assert flat.recurrent == _spec_of(extra)
    for name, value in {**FLAT, **extra}.items():  # the flat names still read the settings
        assert getattr(flat, name) == value


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_to_dict_nests_the_spec_and_both_forms_load(cls) -> None:
    fields, extra = CONFIGS[cls]
    config = cls(**fields, **FLAT, **extra).validate()
    stored = json.loads(json.dumps(config.to_dict()))  # what a checkpoint's meta.json holds
    assert stored["recurrent"] == dataclasses.asdict(_spec_of(extra))
    assert not set(stored) & set(RecurrentSpec.__dataclass_fields__)  # nothing written twice
    assert cls.from_dict(stored) == config
    flat = {k: v for k, v in stored.items() if k != "recurrent"} | {**FLAT, **extra}  # the older form
    assert cls.from_dict(flat) == config
    assert cls.from_dict({**stored, "written_by_a_newer_version": 1}) == config


def test_flat_names_set_the_spec_and_replace_keeps_configs_apart() -> None:
    config = SequenceModelConfig(hidden_size=4)
    other = dataclasses.replace(config, num_layers=3)
    config.hidden_size = 6
    assert config.recurrent.hidden_size == 6 and config.recurrent.num_layers == 1
    assert other.recurrent == RecurrentSpec(hidden_size=4, num_layers=3)  # untouched by the assignment
    tagger = SequenceTaggerConfig(cell="rnn")
    assert tagger.bidirectional  # the tagger's own default survives a flat keyword for another field
    assert Seq2SeqConfig(bidirectional_encoder=True).recurrent.bidirectional


@pytest.mark.parametrize("stored,message", [
    ({"recurrent": {"cell": "gru"}, "hidden_size": 8}, "hidden_size both at the top level and under 'recurrent'"),
    ({"recurrent": None}, "recurrent must be a dict"),
    ({"recurrent": [1, 2]}, "recurrent must be a dict"),
    ({"recurrent": {"cell": "transformer"}}, "unknown cell 'transformer'"),
    ({"recurrent": {"merge": "mean", "bidirectional": True}}, "merge must be 'concat' or 'sum'"),
    ({"recurrent": {"dropout": 1.0}}, "dropout must be a number in [0, 1)"),
    ({"recurrent": {"bidirectional": "yes"}}, "bidirectional must be True or False"),
    ({"recurrent": {"hidden_size": 0}}, "hidden_size must be an integer >= 1"),
    ({"recurrent": {"num_layers": 1.5}}, "num_layers must be an integer >= 1"),
    ({"recurrent": {"cell_options": {"peephole": True}, "cell": "gru"}}, "unknown option(s) peephole for cell 'gru'"),
    ({"recurrent": {"cell_options": {"forget_bias": "high"}}}, "invalid cell_options"),
    ({"recurrent": {"cell_options": "peephole"}}, "cell_options must be a dict"),
    ("hidden_size=8", "must be stored as a dict"),
])
def test_malformed_stored_configs_are_one_line_errors(stored, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SequenceModelConfig.from_dict(stored)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_generator_stack_cannot_be_bidirectional() -> None:
    with pytest.raises(ConfigError, match="cannot be bidirectional"):
        SequenceGeneratorConfig(bidirectional=True).validate()


def test_seq2seq_decoder_is_forward_only_under_a_bidirectional_encoder() -> None:
    model = Seq2Seq(Seq2SeqConfig(source_vocab_size=5, target_vocab_size=6, embed_size=3, hidden_size=4,
                                  bidirectional_encoder=True), backend="numpy")
    assert model.encoder.bidirectional and not model.decoder.bidirectional


def _randomise(module, rng: np.random.Generator) -> dict:
    module.load_parameters({n: rng.normal(0.0, 0.6, size=v.shape) for n, v in module.parameters().items()})
    return module.parameters()


# Sizes where the fold needs fewer FLOPs (3·V·E + N·V < 3·N·E with N = B·T positions), so these
# tests run the folded path; the hypothesis tests in test_models.py run the gathered one.
V, E, B, T = 4, 6, 4, 5


def test_classifier_folds_its_embedding_and_its_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    model = SequenceClassifier(SequenceClassifierConfig(input_size=V, embed_size=E, cell="lstm", hidden_size=3,
                                                        bidirectional=True, pooling="mean", num_classes=3),
                               backend="numpy", dtype="float64")
    assert isinstance(model.embedding, InputEncoder)
    params = _randomise(model, rng)
    batch = {"inputs": rng.integers(0, V, size=(B, T)), "targets": rng.integers(0, 3, size=B),
             "lengths": np.array([5, 2, 4, 1])}
    _, _, cache = model.loss(batch)
    assert cache["rnn"].folded
    _, grads, _ = model.loss_and_grads(batch, training=False)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(lambda: float(model.loss(batch)[0]), value), name)


def test_seq2seq_folds_both_embeddings_and_its_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(1)
    model = Seq2Seq(Seq2SeqConfig(source_vocab_size=V, target_vocab_size=V, embed_size=E, cell="gru",
                                  hidden_size=3, bidirectional_encoder=True), backend="numpy", dtype="float64")
    assert isinstance(model.source_embedding, InputEncoder) and isinstance(model.target_embedding, InputEncoder)
    params = _randomise(model, rng)
    batch = {"source": rng.integers(0, V, size=(B, T)), "target": rng.integers(3, V, size=(B, T))}
    _, _, cache = model.loss(batch)
    assert cache["encoder"]["rnn"].folded and cache["decoder"]["steps"][0].folded
    _, grads, _ = model.loss_and_grads(batch, training=False)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(lambda: float(model.loss(batch)[0]), value), name)
