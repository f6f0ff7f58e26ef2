"""Initial values pinned: the documented initialisation of every cell, layer and direction.

mlxrnn/nn/cells.py documents W_x, W_h ~ U(−1/√H, 1/√H) (as PyTorch), biases 0, the LSTM
forget-gate bias 1 (Jozefowicz et al., 2015), the reset-after GRU's b_hn 0 and peephole weights
~ U(−1/√H, 1/√H); mlxrnn/lm/initialisation.py a new word model's embedding ~ U(−0.25, 0.25)
(character models: N(0, 1)); output layers (untied) ~ U(±1/√H). A wrong forget bias used to be noticed only by a learning threshold in an
example; here each value is asserted, and a parameter this file does not know fails the test
until its documented initialisation is added.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlxrnn import Embedding, Linear, SequenceModel, SequenceModelConfig, make_recurrent
from mlxrnn.errors import ConfigError
from mlxrnn.lm.initialisation import WORD_INIT_RANGE
from mlxrnn.run.loop import LanguageModelRun
from mlxrnn.run.options import TrainOptions
from mlxrnn.testing import CELL_VARIANT_IDS, CELL_VARIANTS

VARIANT_IDS = CELL_VARIANT_IDS
UNIFORM = ("W_x", "W_h", "p_u", "p_f", "p_o")  # ~ U(−1/√H, 1/√H)
ZERO = ("b_hn",)


def _expected_bias(cell, hidden_size: int, options: dict) -> np.ndarray:
    """b: zero, except the (min)LSTM's forget-gate block: the ``forget_bias`` option, documented default 1."""
    bias = np.zeros(cell.gate_width)
    if cell.name in ("lstm", "minlstm"):
        forget = cell.gate_names.index("f")
        bias[forget * hidden_size : (forget + 1) * hidden_size] = options.get("forget_bias", 1.0)
    return bias


def _assert_uniform(values: np.ndarray, bound: float, name: str) -> None:
    """Inside [−bound, bound], and filling it as U(−bound, bound) does: mean 0, variance bound²/3.

    The bounds hold for any draw. The moment checks use at least 2,000 draws from a fixed seed:
    the standard errors are ≤ 0.013·bound (mean) and ≤ 0.0067·bound² (variance, 1/3 ± 0.02 allowed),
    and a wrong bound such as 1/H or 1/√D moves the variance by far more.
    """
    assert np.all(np.abs(values) <= bound), f"{name}: |value| up to {np.abs(values).max():.4f} > the bound {bound:.4f}"
    if values.size >= 2000:
        assert abs(values.mean()) < 0.06 * bound, f"{name}: mean {values.mean():.4f}"
        assert abs(values.var() / bound**2 - 1 / 3) < 0.02, f"{name}: variance {values.var():.5f} vs {bound**2 / 3:.5f}"
        assert np.abs(values).max() > 0.99 * bound, f"{name}: never reaches the bound {bound:.4f}"


@pytest.mark.parametrize("hidden_size", [1, 7, 40])
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_every_parameter_of_every_layer_and_direction_has_its_documented_initial_value(cell, options, hidden_size):
    layer = make_recurrent(cell, 9, hidden_size, num_layers=2, bidirectional=True, backend="numpy", dtype="float64",
                           seed=3, **options)
    bound = 1.0 / np.sqrt(hidden_size)
    uniform: dict[str, list] = {}
    for name, value in layer.parameters().items():
        layer_index, _, short = name.split(".")
        cell_object = layer.cells[int(layer_index[1:])]
        if short == "b":
            np.testing.assert_array_equal(value, _expected_bias(cell_object, hidden_size, options), err_msg=name)
        elif short in ZERO:
            np.testing.assert_array_equal(value, np.zeros(hidden_size), err_msg=name)
        elif short in UNIFORM:
            uniform.setdefault(short, []).append(value.ravel())
        else:
            pytest.fail(f"{name}: no documented initialisation checked here; add it to this file")
    # every cell draws W_x; the ones with a recurrent matmul also W_h (minGRU/minLSTM have none)
    assert {"W_x", "W_h"} & set(layer.cells[0].init_params(np.random.default_rng(0))) <= set(uniform)
    assert "W_x" in uniform
    if cell == "lstm" and options.get("peephole"):
        assert {"p_u", "p_f", "p_o"} <= set(uniform)
    if cell == "gru" and options.get("variant") == "reset_after":
        assert any(name.endswith(".b_hn") for name in layer.parameters())
    for short, pieces in uniform.items():
        _assert_uniform(np.concatenate(pieces), bound, short)


def test_lstm_forget_bias_is_one_by_default_and_follows_the_option():
    for options, expected in (({}, 1.0), ({"forget_bias": 0.0}, 0.0), ({"forget_bias": 2.5}, 2.5)):
        layer = make_recurrent("lstm", 3, 5, backend="numpy", dtype="float64", **options)
        b = layer.parameters()["l0.fwd.b"]
        np.testing.assert_array_equal(b[5:10], np.full(5, expected))  # blocks [u, f, c, o]
        np.testing.assert_array_equal(np.delete(b, np.s_[5:10]), np.zeros(15))


def test_weights_differ_between_layers_directions_and_seeds():
    """Each block is its own draw (a copied block would pass the bounds but break symmetry)."""
    layer = make_recurrent("gru", 4, 4, num_layers=2, bidirectional=True, backend="numpy", dtype="float64", seed=1)
    params = layer.parameters()
    recurrent = [params[f"l{i}.{d}.W_h"] for i in (0, 1) for d in ("fwd", "bwd")]
    for i in range(len(recurrent)):
        for j in range(i + 1, len(recurrent)):
            assert not np.array_equal(recurrent[i], recurrent[j])
    other = make_recurrent("gru", 4, 4, num_layers=2, bidirectional=True, backend="numpy", dtype="float64", seed=2)
    assert not np.array_equal(params["l0.fwd.W_x"], other.parameters()["l0.fwd.W_x"])


def test_linear_and_embedding_initial_values():
    linear = Linear(50, 60, seed=0, backend="numpy", dtype="float64")
    _assert_uniform(linear.parameters()["W"].ravel(), 1.0 / np.sqrt(50), "Linear.W")  # U(±1/√D_in)
    np.testing.assert_array_equal(linear.parameters()["b"], np.zeros(60))
    table = Embedding(100, 40, seed=0, backend="numpy", dtype="float64").parameters()["weight"]  # N(0, 1)
    assert abs(table.mean()) < 0.05 and abs(table.std() - 1.0) < 0.05  # 4,000 draws: standard errors ≈ 0.016, 0.011
    table = Embedding(100, 40, seed=0, backend="numpy", dtype="float64", init_range=0.1).parameters()["weight"]
    _assert_uniform(table.ravel(), 0.1, "Embedding.weight with init_range")


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_a_bad_init_range_is_refused_in_one_line(bad):
    with pytest.raises(ConfigError, match="init_range must be a finite number > 0"):
        Embedding(10, 4, init_range=bad)
    with pytest.raises(ConfigError, match="embed_init_range must be a finite number > 0"):
        SequenceModelConfig(embed_init_range=bad).validate()


def _new_run(tmp_path, level: str, **settings):
    """A new run's model, built but not trained."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the king is here and the queen is there\n" * 40, encoding="utf-8")
    tokenizer = {"word": "whitespace", "char": "chars"}[level]
    options = TrainOptions(corpus=str(corpus), level=level, tokenizer=tokenizer, hidden=40, embed=40, layers=1, batch_size=2,
                           seq_len=4, backend="numpy", **settings)
    run = LanguageModelRun(options, tmp_path / "-".join(["run", level, *map(str, settings.values())]))
    run.close()
    return run.lm.model


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("tie", [True, False])
def test_a_new_word_model_starts_its_embedding_uniform_within_a_quarter(tmp_path, tie, optimizer):
    """Word models: E ~ U(±0.25), also as the tied output layer, whatever the optimizer
    (mlxrnn/lm/initialisation.py has the runs); an untied W keeps U(±1/√H), b = 0, and the recurrent
    stack its own U(±1/√H)."""
    model = _new_run(tmp_path, "word", tie=tie, optimizer=optimizer)
    params = model.numpy_parameters()
    _assert_uniform(params["embedding.weight"].ravel(), 0.25, "embedding.weight")
    assert ("head.W" in params) is not tie
    if not tie:
        _assert_uniform(params["head.W"].ravel(), 1.0 / np.sqrt(40), "head.W")
    np.testing.assert_array_equal(params["head.b"], 0.0)
    _assert_uniform(params["rnn.l0.fwd.W_h"].ravel(), 1.0 / np.sqrt(40), "rnn.l0.fwd.W_h")
    assert model.config.embed_init_range == WORD_INIT_RANGE == 0.25  # saved with the model


def test_a_new_character_model_keeps_the_normal_embedding(tmp_path):
    model = _new_run(tmp_path, "char")
    params = model.numpy_parameters()
    table = params["embedding.weight"]
    assert abs(table.std() - 1.0) < 0.1 and np.abs(table).max() > 2  # N(0, 1), not a small uniform
    _assert_uniform(params["head.W"].ravel(), 1.0 / np.sqrt(40), "head.W")
    assert model.config.embed_init_range is None


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_models_keep_the_documented_initial_values(cell, options):
    """SequenceModel builds its recurrent stack with the same initialisation (no override on the way)."""
    config = SequenceModelConfig(input_size=6, embed_size=5, hidden_size=7, num_layers=2, output_size=6, cell=cell,
                                 cell_options=options)
    model = SequenceModel(config, backend="numpy", dtype="float64")
    bound = 1.0 / np.sqrt(7)
    for name, value in model.parameters().items():
        if not name.startswith("rnn."):
            continue
        short = name.rsplit(".", 1)[1]
        if short == "b":
            np.testing.assert_array_equal(value, _expected_bias(model.rnn.cells[int(name.split(".")[1][1:])], 7, options),
                                          err_msg=name)
        elif short in ZERO:
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
        else:
            assert short in UNIFORM, name
            assert np.all(np.abs(value) <= bound), name
