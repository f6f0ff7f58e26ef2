"""save / load for every task model: the language models' checkpoint format, atomic, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlxrnn
from mlxrnn import CheckpointError
from mlxrnn.io.checkpoint import load_checkpoint

MODELS = {  # kind -> a small model with a non-default architecture
    "sequence_model": lambda: mlxrnn.SequenceModel(input_size=7, embed_size=4, cell="gru", hidden_size=4,
                                                   num_layers=2, output_size=7, cell_options={"variant": "simple"}),
    "classifier": lambda: mlxrnn.SequenceClassifier(input_size=7, embed_size=3, hidden_size=4, pooling="mean",
                                                    num_classes=3, bidirectional=True),
    "tagger": lambda: mlxrnn.SequenceTagger(input_size=7, embed_size=3, cell="rnn", hidden_size=4, num_tags=3),
    "seq2seq": lambda: mlxrnn.Seq2Seq(source_vocab_size=7, target_vocab_size=6, embed_size=3, hidden_size=4,
                                      bidirectional_encoder=True),
    "generator": lambda: mlxrnn.SequenceGenerator(condition_kind="vector", condition_size=2, vocab_size=6,
                                                  embed_size=3, hidden_size=4, cell_options={"peephole": True}),
}


def _outputs(model) -> np.ndarray:
    ids = np.array([[3, 1, 4, 1], [5, 6, 2, 0]])
    if isinstance(model, mlxrnn.Seq2Seq):
        logits = model({"source": ids, "target": ids % 6})
    elif isinstance(model, mlxrnn.SequenceGenerator):
        logits = model(np.array([[0.5, -1.0], [2.0, 0.1]]), ids % 6)
    elif isinstance(model, mlxrnn.SequenceClassifier):
        logits = model(ids, lengths=np.array([4, 3]))
    else:
        logits = model(ids)[0]
    return model.xp.to_numpy(logits)


def _perturb(model, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    model.load_parameters({k: v + rng.normal(0, 0.1, v.shape) for k, v in model.numpy_parameters().items()})


@pytest.mark.parametrize("kind", list(MODELS))
def test_save_then_load_gives_the_same_model(tmp_path, kind):
    model = MODELS[kind]()
    _perturb(model)  # so loading (not re-initialising) is what is tested
    path = model.save(tmp_path / kind)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors"]
    meta = load_checkpoint(path).meta
    assert meta["kind"] == kind and meta["config"] == json.loads(json.dumps(model.saved_config().to_dict()))
    for loaded in (type(model).load(path), mlxrnn.load(path)):
        assert type(loaded) is type(model) and loaded.saved_config() == model.saved_config()
        np.testing.assert_array_equal(_outputs(loaded), _outputs(model))


def test_saving_never_replaces_what_is_there(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="already exists"):
        MODELS["classifier"]().save(target)
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary leftovers


def test_loading_the_wrong_thing_is_a_one_line_error(tmp_path):
    path = MODELS["tagger"]().save(tmp_path / "tagger")
    with pytest.raises(CheckpointError, match="holds a SequenceTagger, not a SequenceClassifier"):
        mlxrnn.SequenceClassifier.load(path)
    assert isinstance(mlxrnn.SequenceModel.load(path), mlxrnn.SequenceTagger)  # a tagger is a SequenceModel
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        mlxrnn.load(tmp_path / "missing")
    meta_path = Path(path) / "meta.json"
    document = json.loads(meta_path.read_text())
    document["meta"]["kind"] = "transformer"
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((Path(path) / "model.safetensors").read_bytes())
    (other / "meta.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="kind 'transformer', which this mlxrnn cannot load"):
        mlxrnn.load(other)
    document["meta"]["kind"], document["meta"]["config"]["num_tags"] = "tagger", 1
    (other / "meta.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="config cannot be built .*num_tags"):
        mlxrnn.load(other)


def test_a_model_loads_on_another_backend_and_dtype(tmp_path):
    model = MODELS["classifier"]()
    path = model.save(tmp_path / "m")
    loaded = mlxrnn.SequenceClassifier.load(path, backend="numpy", dtype="float64")
    assert loaded.xp.dtype_name == "float64"
    np.testing.assert_allclose(_outputs(loaded), _outputs(model), rtol=1e-5, atol=1e-6)
