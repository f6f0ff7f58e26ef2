"""Checkpoints written by an earlier version keep loading and computing the same numbers.

tests/fixtures/legacy_checkpoints/ was written once by tests/fixtures/make_legacy_checkpoints.py
with the flat model-config format (every recurrent setting a top-level key). Each test rebuilds a
model from a stored config, loads the stored weights and compares its outputs on the stored
inputs with the outputs recorded when the files were written. A config format change that
drops or renames a field, a parameter renamed or re-shaped, or a forward pass that changed its
arithmetic fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlxrnn
from mlxrnn.io.checkpoint import check_weights, load_checkpoint
from mlxrnn.lm.model import LanguageModel, load_language_model
from mlxrnn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from mlxrnn.models.generator import SequenceGenerator, SequenceGeneratorConfig
from mlxrnn.models.seq2seq import Seq2Seq, Seq2SeqConfig
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.models.tagger import SequenceTagger, SequenceTaggerConfig

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
# float32 weights: an unchanged forward pass reproduces the numbers to rounding, whichever of the
# equivalent GEMM orders (e.g. a folded or gathered embedding) the layer picks
TOLERANCE = dict(rtol=1e-5, atol=1e-6)

MODELS = {  # fixture name -> (config class, model class)
    "sequence_model_dense": (SequenceModelConfig, SequenceModel),
    "sequence_model_tied": (SequenceModelConfig, SequenceModel),
    "classifier_last": (SequenceClassifierConfig, SequenceClassifier),
    "classifier_mean": (SequenceClassifierConfig, SequenceClassifier),
    "tagger": (SequenceTaggerConfig, SequenceTagger),
    "seq2seq": (Seq2SeqConfig, Seq2Seq),
    "generator": (SequenceGeneratorConfig, SequenceGenerator),
}


def _forward(model, record: dict) -> np.ndarray:
    ints = {k: np.asarray(v, dtype=np.int32) for k, v in record.items() if k not in ("logits", "conditions")}
    if isinstance(model, Seq2Seq):
        logits, _ = model.forward(ints)
    elif isinstance(model, SequenceGenerator):
        logits, _ = model.forward(np.asarray(record["conditions"]), ints["targets"])
    elif isinstance(model, SequenceClassifier):
        logits, _ = model.forward(ints["inputs"], lengths=ints["lengths"])
    elif "lengths" in record:
        logits, _, _ = model.forward(ints["inputs"], lengths=ints["lengths"])
    else:  # dense inputs
        logits, _, _ = model.forward(np.asarray(record["inputs"]))
    return model.xp.to_numpy(logits).astype(np.float64)


@pytest.mark.parametrize("name", list(MODELS))
def test_flat_task_model_checkpoints_load_and_reproduce_their_outputs(name: str) -> None:
    checkpoint = load_checkpoint(FIXTURES / "models" / name)
    stored = checkpoint.meta["config"]
    assert "cell" in stored and "hidden_size" in stored  # the flat format this test is about
    config_class, model_class = MODELS[name]
    model = model_class(config_class.from_dict(stored), backend="numpy")
    check_weights(checkpoint.weights, model.parameter_shapes())
    model.load_parameters(checkpoint.weights)
    np.testing.assert_allclose(_forward(model, EXPECTED[name]), np.asarray(EXPECTED[name]["logits"]), **TOLERANCE)


@pytest.mark.parametrize("name", list(MODELS))
def test_flat_configs_round_trip_through_the_current_format(name: str) -> None:
    """A flat config read today and written again describes the same model."""
    stored = load_checkpoint(FIXTURES / "models" / name).meta["config"]
    config_class, model_class = MODELS[name]
    config = config_class.from_dict(stored)
    again = config_class.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    first, second = (model_class(c, backend="numpy").numpy_parameters() for c in (config, again))
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_flat_language_model_run_loads_and_reproduces_its_logits() -> None:
    lm, checkpoint = load_language_model(FIXTURES / "lm_char", backend="numpy")
    assert "hidden_size" in checkpoint.meta["model_config"]  # flat
    record = EXPECTED["lm_char"]
    ids = lm.encode(record["text"])[None, :]
    assert ids.tolist() == record["inputs"]
    logits, _, _ = lm.model.forward(ids)
    np.testing.assert_allclose(lm.xp.to_numpy(logits).astype(np.float64), np.asarray(record["logits"]), **TOLERANCE)


@pytest.mark.parametrize("name", ["tagger", "seq2seq", "generator"])
def test_task_model_checkpoints_open_with_mlxrnn_load(name: str) -> None:
    """They were written as save() writes today (save_checkpoint, {"kind", "config"} meta), and these
    three fixtures' names are the kinds, so mlxrnn.load and Model.load read them as they are."""
    model = mlxrnn.load(FIXTURES / "models" / name, backend="numpy")
    assert type(model) is MODELS[name][1]
    np.testing.assert_allclose(_forward(model, EXPECTED[name]), np.asarray(EXPECTED[name]["logits"]), **TOLERANCE)
    assert type(MODELS[name][1].load(FIXTURES / "models" / name)) is MODELS[name][1]


def test_the_language_model_run_opens_with_mlxrnn_load() -> None:
    lm = mlxrnn.load(FIXTURES / "lm_char", backend="numpy")
    assert isinstance(lm, LanguageModel)
    logits, _ = lm.model(lm.encode(EXPECTED["lm_char"]["text"])[None, :])
    np.testing.assert_allclose(lm.xp.to_numpy(logits), np.asarray(EXPECTED["lm_char"]["logits"]), **TOLERANCE)
