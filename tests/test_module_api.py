"""Layers and models as PyTorch, mlx.nn and Keras users expect them: callable, a useful repr,
signatures that list every setting, num_parameters() and summary()."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import mlxrnn
from mlxrnn import ConfigError

MODELS = [  # (class, settings of a tiny one)
    (mlxrnn.SequenceModel, dict(input_size=7, embed_size=3, hidden_size=4)),
    (mlxrnn.SequenceClassifier, dict(input_size=7, embed_size=3, hidden_size=4, num_classes=3)),
    (mlxrnn.SequenceTagger, dict(input_size=7, embed_size=3, hidden_size=4, num_tags=3)),
    (mlxrnn.Seq2Seq, dict(source_vocab_size=7, target_vocab_size=6, embed_size=3, hidden_size=4)),
    (mlxrnn.SequenceGenerator, dict(condition_size=2, vocab_size=6, embed_size=3, hidden_size=4)),
]


@pytest.mark.parametrize("cls", [mlxrnn.RNN, mlxrnn.GRU, mlxrnn.LSTM])
def test_calling_a_layer_returns_outputs_and_final_state_like_forward(cls):
    layer = cls(3, 5, num_layers=2, bidirectional=True, backend="numpy")
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    lengths = np.array([4, 2])
    outputs, final_state = layer(x, lengths=lengths)
    expected_outputs, expected_state, _ = layer.forward(x, lengths=lengths)
    np.testing.assert_array_equal(outputs, expected_outputs)
    for got, want in zip(final_state if isinstance(final_state, tuple) else [final_state],
                         expected_state if isinstance(expected_state, tuple) else [expected_state]):
        np.testing.assert_array_equal(got, want)
    assert outputs.shape == (2, 4, 10)
    h = final_state[0] if cls is mlxrnn.LSTM else final_state
    assert h.shape == (4, 2, 5)  # PyTorch's (num_layers · directions, batch, hidden)


def test_calling_linear_embedding_and_models_drops_only_the_cache():
    linear = mlxrnn.Linear(3, 2, backend="numpy")
    x = np.ones((4, 3))
    np.testing.assert_array_equal(linear(x), linear.forward(x)[0])
    embedding = mlxrnn.Embedding(5, 2, backend="numpy")
    np.testing.assert_array_equal(embedding(np.array([[1, 4]])), embedding.params["weight"][[[1, 4]]])
    model = mlxrnn.SequenceModel(input_size=7, embed_size=3, hidden_size=4, output_size=7, backend="numpy")
    ids = np.array([[1, 2, 3]])
    logits, state = model(ids)
    np.testing.assert_array_equal(logits, model.forward(ids)[0])
    classifier = mlxrnn.SequenceClassifier(input_size=7, embed_size=3, hidden_size=4, backend="numpy")
    np.testing.assert_array_equal(classifier(ids, lengths=np.array([2])), classifier.forward(ids, lengths=[2])[0])


def test_layer_repr_shows_sizes_settings_and_parameter_count():
    layer = mlxrnn.LSTM(8, 16, num_layers=2, bidirectional=True, dropout=0.1, peephole=True)
    text = repr(layer)
    for part in ("LSTM(", "input_size=8", "hidden_size=16", "num_layers=2", "bidirectional=True", "dropout=0.1",
                 "peephole=True", f"{layer.num_parameters():,} parameters", "float32"):
        assert part in text, (part, text)
    assert "forget_bias" not in text  # defaults are not repeated
    assert repr(mlxrnn.Recurrent(3, 4, cell="gru", variant="reset_after")).startswith(
        "Recurrent(cell='gru', input_size=3, hidden_size=4, variant='reset_after'; 100 parameters")
    assert repr(mlxrnn.Linear(3, 2, bias=False)).startswith("Linear(in_features=3, out_features=2, bias=False; 6 ")


@pytest.mark.parametrize("cls,settings", MODELS, ids=[cls.__name__ for cls, _ in MODELS])
def test_model_repr_lists_children_and_summary_adds_up(cls, settings):
    model = cls(**settings, backend="numpy")
    lines = repr(model).splitlines()
    assert lines[0].startswith(cls.__name__ + "(") and f"{model.num_parameters():,} parameters" in lines[0]
    assert len(lines) == 1 + len(model._children)
    printed: list[str] = []
    model.summary(print_fn=printed.append)
    child_counts = [int(line.split()[-1].replace(",", "")) for line in printed[2:-1]]
    assert sum(child_counts) == model.num_parameters()
    assert printed[-1].startswith(f"total parameters: {model.num_parameters():,}")
    assert model.num_parameters() == sum(int(np.prod(v.shape)) for v in model.parameters().values())


@pytest.mark.parametrize("cls,settings", MODELS, ids=[cls.__name__ for cls, _ in MODELS])
def test_models_take_their_settings_as_keywords_with_an_explicit_signature(cls, settings):
    from_keywords = cls(**settings, backend="numpy")
    from_config = cls(cls.config_class(**settings), backend="numpy")
    assert from_keywords.saved_config() == from_config.saved_config()
    for name, value in from_config.numpy_parameters().items():
        np.testing.assert_array_equal(from_keywords.numpy_parameters()[name], value)
    parameters = inspect.signature(cls).parameters
    for name in [*settings, "hidden_size", "num_layers", "bidirectional", "cell", "seed", "backend", "dtype"]:
        assert name in parameters, name
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def test_config_signatures_list_the_flat_recurrent_names():
    parameters = inspect.signature(mlxrnn.SequenceTaggerConfig).parameters
    assert parameters["hidden_size"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["bidirectional"].default is True  # the tagger's default stack is bidirectional
    assert "bidirectional_encoder" in inspect.signature(mlxrnn.Seq2SeqConfig).parameters


def test_bad_model_keywords_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown setting 'hiden_size' .*did you mean 'hidden_size'"):
        mlxrnn.SequenceClassifier(hiden_size=4)
    config = mlxrnn.SequenceClassifierConfig(input_size=7)
    with pytest.raises(ConfigError, match="not both"):
        mlxrnn.SequenceClassifier(config, hidden_size=4)
    with pytest.raises(ConfigError, match="config must be a SequenceClassifierConfig"):
        mlxrnn.SequenceClassifier(mlxrnn.SequenceTaggerConfig())


def test_lstm_alias_exposes_every_cell_option():
    parameters = inspect.signature(mlxrnn.LSTM).parameters
    assert {"num_layers", "bidirectional", "peephole", "forget_bias"} <= set(parameters)
    layer = mlxrnn.LSTM(2, 3, forget_bias=0.0, backend="numpy")
    np.testing.assert_array_equal(layer.params["l0.fwd.b"], np.zeros(12))
