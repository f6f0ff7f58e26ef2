"""Analytic BPTT against central finite differences in float64 (the independent oracle).

Every cell variant × depth × direction × mask × initial state, for every parameter, the
initial state and the inputs; then every loss and head through SequenceModel; then a
random-direction check on larger shapes. Tolerances: atol 1e-5, rtol 1e-3 (torch.gradcheck's).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxrnn import SequenceModel, SequenceModelConfig, make_recurrent
from mlxrnn.testing import (
    CELL_VARIANT_IDS,
    CELL_VARIANTS,
    assert_gradients_close,
    check_layer_gradients,
    numerical_gradient,
)

VARIANT_IDS = CELL_VARIANT_IDS


def _randomise(module, rng: np.random.Generator, scale: float = 0.6) -> dict[str, np.ndarray]:
    """Replace every parameter with random float64 values (biases included, so none is 0)."""
    params = {name: rng.normal(0.0, scale, size=value.shape) for name, value in module.parameters().items()}
    module.load_parameters(params)
    return module.parameters()  # the module's own float64 arrays, perturbed in place by the oracle


@st.composite
def layer_cases(draw):
    return {
        "num_layers": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()),
        "merge": draw(st.sampled_from(["concat", "sum"])),
        "batch": draw(st.integers(1, 3)),
        "time": draw(st.integers(1, 4)),
        "input_size": draw(st.integers(1, 3)),
        "hidden_size": draw(st.integers(1, 3)),
        "masked": draw(st.booleans()),
        "with_initial_state": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
@given(case=layer_cases())
def test_layer_bptt_matches_finite_differences(cell, options, case):
    rng = np.random.default_rng(case["seed"])
    layer = make_recurrent(
        cell, case["input_size"], case["hidden_size"], num_layers=case["num_layers"],
        bidirectional=case["bidirectional"], merge=case["merge"], backend="numpy", dtype="float64", **options,
    )
    T = case["time"]
    outputs, lengths = check_layer_gradients(layer, rng, case["batch"], T, case["masked"], case["with_initial_state"])
    if lengths is not None:  # padded steps output exactly zero
        padded = np.arange(T)[None, :] >= lengths[:, None]
        assert np.all(outputs[padded] == 0.0)


MODEL_CASES = [
    # (input kind, output kind, loss, output_size)
    ("embedding", "sequence", "cross_entropy", 5),
    ("one_hot", "sequence", "cross_entropy", 5),
    ("dense", "sequence", "mse", 2),
    ("dense", "sequence", "binary_cross_entropy", 1),
    ("embedding", "last", "cross_entropy", 3),
    ("dense", "last", "binary_cross_entropy", 1),
    ("dense", "last", "mse", 2),
]


@pytest.mark.parametrize("input_kind,output,loss_name,output_size", MODEL_CASES)
@given(
    variant=st.sampled_from(range(len(CELL_VARIANTS))),
    bidirectional=st.booleans(),
    num_layers=st.integers(1, 2),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_model_gradients_every_loss_and_head(input_kind, output, loss_name, output_size, variant, bidirectional,
                                             num_layers, masked, seed):
    rng = np.random.default_rng(seed)
    cell, options = CELL_VARIANTS[variant]
    vocab, B, T = 5, 3, 4
    config = SequenceModelConfig(
        input_kind=input_kind, input_size=vocab if input_kind != "dense" else 3, embed_size=3, cell=cell,
        hidden_size=3, num_layers=num_layers, bidirectional=bidirectional, output_size=output_size,
        output=output, loss=loss_name, cell_options=options, seed=seed,
    )
    model = SequenceModel(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    inputs = rng.normal(size=(B, T, 3)) if input_kind == "dense" else rng.integers(0, vocab, size=(B, T))
    lead = (B, T) if output == "sequence" else (B,)
    if loss_name == "cross_entropy":
        targets = rng.integers(0, output_size, size=lead)
    elif loss_name == "binary_cross_entropy":
        targets = rng.integers(0, 2, size=lead + (output_size,)).astype(np.float64)
    else:
        targets = rng.normal(size=lead + (output_size,))
    batch = {"inputs": inputs, "targets": targets}
    if masked:
        batch["lengths"] = rng.integers(1, T + 1, size=B)

    def loss():
        return float(model.loss(batch)[0])

    _, grads, extras = model.loss_and_grads(batch, training=False)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(loss, value), name)
    if input_kind == "dense":
        assert_gradients_close(extras["inputs"], numerical_gradient(loss, inputs), "inputs")


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_tied_embedding_gradients(cell, options):
    rng = np.random.default_rng(7)
    config = SequenceModelConfig(input_size=6, embed_size=4, hidden_size=4, output_size=6, cell=cell,
                                 cell_options=options, tie_weights=True)
    model = SequenceModel(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    assert "head.W" not in params
    batch = {"inputs": rng.integers(0, 6, (2, 3)), "targets": rng.integers(0, 6, (2, 3))}
    _, grads, _ = model.loss_and_grads(batch)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(lambda: float(model.loss(batch)[0]), value), name)


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_random_direction_on_larger_shapes(cell, options):
    """d/dε L(θ + ε v) at 0 equals ⟨∇L, v⟩ for a random direction v over all parameters at once."""
    rng = np.random.default_rng(3)
    config = SequenceModelConfig(input_size=11, embed_size=8, hidden_size=16, num_layers=2, bidirectional=True,
                                 output_size=11, cell=cell, cell_options=options)
    model = SequenceModel(config, backend="numpy", dtype="float64")
    base = {name: value.copy() for name, value in _randomise(model, rng, scale=0.3).items()}
    batch = {"inputs": rng.integers(0, 11, (4, 12)), "targets": rng.integers(0, 11, (4, 12)),
             "lengths": np.array([12, 7, 1, 10])}
    _, grads, _ = model.loss_and_grads(batch)
    direction = {name: rng.normal(size=value.shape) for name, value in base.items()}
    analytic = sum(float(np.sum(grads[n] * direction[n])) for n in base)

    def loss_at(eps):
        model.load_parameters({n: base[n] + eps * direction[n] for n in base})
        return float(model.loss(batch)[0])

    eps = 1e-5
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-6 + 1e-5 * abs(numeric), (analytic, numeric)


def test_every_registered_cell_has_a_gradient_check() -> None:
    """A cell added to the registry without a CELL_VARIANTS line would go unchecked: refuse that."""
    from mlxrnn.nn.cells import CELLS

    checked = {cell for cell, _ in CELL_VARIANTS}
    assert set(CELLS) <= checked, f"add {sorted(set(CELLS) - checked)} to mlxrnn.testing.CELL_VARIANTS"


def test_registry_builds_every_layer_and_reports_unknown_cells() -> None:
    from mlxrnn.errors import ConfigError
    from mlxrnn.nn.cells import CELLS
    from mlxrnn.nn.layers import Recurrent, make_recurrent

    for name, cls in CELLS.items():
        layer = make_recurrent(name, 3, 4)
        assert layer.cell_name == name and isinstance(layer.cells[0], cls)
        assert layer.cells[0].num_gates == len(layer.cells[0].gate_names)
        assert layer.config()["cell"] == name
    with pytest.raises(ConfigError, match="unknown cell 'lstn'.*lstm"):
        Recurrent(3, 4, cell="lstn")
    with pytest.raises(ConfigError, match="unknown option.*peephole.*'gru'"):
        make_recurrent("gru", 3, 4, peephole=True)
