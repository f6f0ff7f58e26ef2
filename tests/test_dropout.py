"""Dropout verified: gradients with dropout on, the masks' values, and the expected activation.

Every other gradient check runs with ``training=False`` or dropout 0, so without these tests a
backward that ignores the keep-mask, or a forward that keeps units without the 1/(1 − p)
rescale, passes everything.

* Gradients: float64 central differences of the loss *with dropout on* (``training=True``).
  Each loss evaluation gets a fresh generator with the same seed, so every evaluation draws the
  same masks and the loss is a deterministic function of the parameters.
* Masks: inverted dropout keeps a unit with probability 1 − p and scales it by 1/(1 − p), so
  a mask holds only 0 and 1/(1 − p), and E[mask ∗ a] = a: the expected activation is unchanged.

A new dropout kind (embedding, output, variational, ...) is one more entry in DROPOUT_KINDS:
the SequenceModelConfig fields that switch it on, and how to read the masks one forward
pass drew from the model's cache. Every test below then runs for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from mlxrnn import SequenceModel, SequenceModelConfig, make_recurrent
from mlxrnn.testing import CELL_VARIANT_IDS, CELL_VARIANTS, assert_gradients_close, numerical_gradient

VARIANT_IDS = CELL_VARIANT_IDS
P = 0.4  # large enough that tiny masks drop some units and keep others


@dataclass(frozen=True)
class DropoutKind:
    """One place dropout is applied: the config that turns it on and the masks a forward drew."""

    config: dict  #: SequenceModelConfig fields besides the rate
    rate_field: str  #: the SequenceModelConfig field holding p
    masks: Callable[[dict], list]  #: SequenceModel.forward's cache -> the masks it drew (NumPy-convertible)

    def fields(self, p: float) -> dict:
        return {**self.config, self.rate_field: p}


DROPOUT_KINDS = {
    # between stacked recurrent layers (Zaremba et al.): layer ℓ+1 reads mask ∗ outputs of layer ℓ
    "between_layers": DropoutKind(
        config={"num_layers": 2},
        rate_field="dropout",
        masks=lambda cache: list(cache["rnn"].dropout_masks.values()),
    ),
}


def _randomise(module, rng: np.random.Generator, scale: float = 0.6) -> dict[str, np.ndarray]:
    params = {name: rng.normal(0.0, scale, size=value.shape) for name, value in module.parameters().items()}
    module.load_parameters(params)
    return module.parameters()  # the module's own float64 arrays, perturbed in place by the oracle


def _parts(state) -> list:
    return list(state) if isinstance(state, tuple) else [state]


def _assert_some_dropped_some_kept(masks) -> None:
    """The masks of a gradient check must drop and keep units, or the check proves nothing."""
    values = np.concatenate([np.asarray(m, dtype=np.float64).ravel() for m in masks])
    assert values.size and (values == 0).any() and (values > 0).any(), "choose another seed: nothing dropped or kept"


# --- gradients with dropout on ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DROPOUT_KINDS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_model_gradients_with_dropout_match_finite_differences(cell, options, bidirectional, kind):
    dropout = DROPOUT_KINDS[kind]
    rng = np.random.default_rng(13)  # weights under which ReLU units are alive, so dropping them matters
    config = SequenceModelConfig(
        input_size=4, embed_size=2, hidden_size=3, output_size=4, cell=cell, cell_options=options,
        bidirectional=bidirectional, **dropout.fields(P),
    )
    model = SequenceModel(config, backend="numpy", dtype="float64")
    params = _randomise(model, rng)
    batch = {"inputs": rng.integers(0, 4, (2, 3)), "targets": rng.integers(0, 4, (2, 3)),
             "lengths": np.array([3, 2])}
    mask_seed = 5

    def loss() -> float:  # the same masks on every call: a fresh generator with the same seed
        return float(model.loss(batch, training=True, rng=np.random.default_rng(mask_seed))[0])

    _, grads, _ = model.loss_and_grads(batch, training=True, rng=np.random.default_rng(mask_seed))
    _, _, cache = model.forward(batch["inputs"], lengths=batch["lengths"], training=True,
                                rng=np.random.default_rng(mask_seed))
    _assert_some_dropped_some_kept(dropout.masks(cache))
    assert loss() != pytest.approx(float(model.loss(batch)[0]), rel=1e-6)  # dropout changed the loss
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(loss, value), name)


LAYOUTS = [  # (num_layers, bidirectional, merge)
    (2, False, "concat"),
    (3, False, "concat"),
    (2, True, "concat"),
    (2, True, "sum"),
]
LAYOUT_IDS = ["L2-uni", "L3-uni", "L2-bi-concat", "L2-bi-sum"]


@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_layer_bptt_with_dropout_matches_finite_differences(cell, options, layout):
    """The layer on its own, with padding and an initial state: every parameter, dx and dh0."""
    num_layers, bidirectional, merge = layout
    rng = np.random.default_rng(28)  # drops live units of every variant (ReLU's too), not only zeros
    layer = make_recurrent(cell, 2, 3, num_layers=num_layers, bidirectional=bidirectional, merge=merge,
                           dropout=P, backend="numpy", dtype="float64", **options)
    params = _randomise(layer, rng)
    B, T = 2, 3
    x = rng.normal(size=(B, T, 2))
    lengths = np.array([3, 2])
    state_shape = (num_layers * layer.num_directions, B, 3)
    initial = [rng.normal(size=state_shape) for _ in range(layer.state_size)]
    public_initial = tuple(initial) if layer.state_size > 1 else initial[0]
    out_weight = rng.normal(size=(B, T, layer.output_size))
    state_weights = [rng.normal(size=state_shape) for _ in range(layer.state_size)]

    def forward():
        return layer.forward(x, initial_state=public_initial, lengths=lengths, training=True,
                             rng=np.random.default_rng(9))

    def loss() -> float:
        outputs, final, _ = forward()
        parts = list(final) if layer.state_size > 1 else [final]
        return float(np.sum(outputs * out_weight) + sum(np.sum(p * w) for p, w in zip(parts, state_weights)))

    dropped, _, cache = forward()
    _assert_some_dropped_some_kept(cache.dropout_masks.values())
    undropped = layer.forward(x, initial_state=public_initial, lengths=lengths)[0]
    assert not np.allclose(dropped, undropped), "dropout changed nothing: choose another seed"
    assert sorted(cache.dropout_masks) == list(range(num_layers - 1))  # between layers, never after the last
    d_state = tuple(state_weights) if layer.state_size > 1 else state_weights[0]
    d_x, d_initial, grads = layer.backward(out_weight, d_state, cache)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(loss, value), name)
    assert_gradients_close(d_x, numerical_gradient(loss, x), "inputs")
    d_parts = list(d_initial) if layer.state_size > 1 else [d_initial]
    for k, part in enumerate(initial):
        assert_gradients_close(d_parts[k], numerical_gradient(loss, part), f"initial_state[{k}]")


# --- the masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DROPOUT_KINDS))
@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
def test_masks_hold_only_zero_and_the_inverse_keep_rate(kind, p):
    """Values {0, 1/(1 − p)}; the kept fraction is 1 − p and the mask's mean is 1 (E[mask ∗ a] = a).

    60,000+ Bernoulli(1 − p) draws from a fixed seed: the standard error of the kept fraction is
    at most 0.002, so the 0.015 bound is over 7 standard errors wide (and the seed is fixed).
    """
    dropout = DROPOUT_KINDS[kind]
    config = SequenceModelConfig(input_size=7, embed_size=4, hidden_size=50, output_size=7, **dropout.fields(p))
    model = SequenceModel(config, backend="numpy")
    ids = np.random.default_rng(0).integers(0, 7, (40, 30))
    drawn, seed = [], 1
    while sum(v.size for v in drawn) < 60_000:  # more forward passes for kinds that draw fewer masks
        _, _, cache = model.forward(ids, training=True, rng=np.random.default_rng(seed))
        drawn += [np.asarray(m, dtype=np.float64).ravel() for m in dropout.masks(cache)]
        seed += 1
        assert seed < 1000, "the masks hold no values"
    values = np.concatenate(drawn)
    scale = np.float64(np.float32(1.0 / (1.0 - p)))  # the model runs in float32
    np.testing.assert_array_equal(np.unique(values), [0.0, scale])
    kept = np.mean(values > 0)
    assert abs(kept - (1.0 - p)) < 0.015, f"kept {kept:.4f} of the units, expected {1 - p}"
    assert abs(values.mean() - 1.0) < 0.015 / (1.0 - p), f"mean mask {values.mean():.4f}, expected 1"
    # evaluation never drops
    _, _, eval_cache = model.forward(ids, training=False, rng=np.random.default_rng(1))
    assert not dropout.masks(eval_cache)


@pytest.mark.parametrize("cell,options", [CELL_VARIANTS[0], CELL_VARIANTS[2], CELL_VARIANTS[5]],
                         ids=[VARIANT_IDS[0], VARIANT_IDS[2], VARIANT_IDS[5]])
def test_next_layer_reads_the_dropped_outputs_and_their_mean_is_the_undropped_one(cell, options):
    """Layer 2 of a stack sees exactly mask ∗ (layer 1's outputs), and averaged over many masks
    that is layer 1's outputs: the expected activation is unchanged.

    Every row of the batch holds the same sequence, so the rows are independent masks of the same
    activation a: the row mean estimates E[mask ∗ a]. With 4,000 rows and p = 0.4 its standard
    error is |a| · √(p / (1 − p) / 4000) ≈ 0.013 |a|; the bound 0.08 |a| is six of them.
    """
    rows, p = 4000, 0.4
    stack = make_recurrent(cell, 3, 4, num_layers=2, dropout=p, backend="numpy", dtype="float64", seed=2, **options)
    first = make_recurrent(cell, 3, 4, backend="numpy", dtype="float64", **options)
    second = make_recurrent(cell, 4, 4, backend="numpy", dtype="float64", **options)
    params = stack.parameters()
    first.load_parameters({n: params[n] for n in first.parameters()})
    second.load_parameters({n: params[n.replace("l0.", "l1.")] for n in second.parameters()})

    x = np.repeat(np.random.default_rng(3).normal(size=(1, 3, 3)), rows, axis=0)
    outputs, final, cache = stack.forward(x, training=True, rng=np.random.default_rng(4))
    activation, _, _ = first.forward(x)  # (rows, T, H), identical rows
    mask = np.transpose(np.asarray(cache.dropout_masks[0]), (1, 0, 2))  # (T, B, H) -> (B, T, H)
    dropped = activation * mask
    expected_out, expected_final, _ = second.forward(dropped)
    np.testing.assert_allclose(outputs, expected_out, rtol=1e-12, atol=1e-12)
    for got, want in zip(_parts(final), _parts(expected_final), strict=True):
        np.testing.assert_allclose(got[1], want[0], rtol=1e-12, atol=1e-12)  # the top layer's final state

    a = activation[0]
    assert np.all(np.abs(a) > 1e-3), "pick another seed: an activation near 0 makes the relative bound vacuous"
    np.testing.assert_array_less(np.abs(dropped.mean(axis=0) - a), 0.08 * np.abs(a))


def test_dropout_is_reproducible_from_its_generator_and_absent_in_evaluation():
    layer = make_recurrent("gru", 3, 4, num_layers=2, dropout=0.5, backend="numpy", dtype="float64")
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    a = layer.forward(x, training=True, rng=np.random.default_rng(7))[0]
    b = layer.forward(x, training=True, rng=np.random.default_rng(7))[0]
    c = layer.forward(x, training=True, rng=np.random.default_rng(8))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(layer.forward(x)[0], layer.forward(x, training=False, rng=np.random.default_rng(8))[0])
