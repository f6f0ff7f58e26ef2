"""Per-step gradients from Recurrent.backward's step_grads record, against independent oracles.

The oracle perturbs the state after step t directly: run the layer on steps 0…t, add δ to that
layer's hidden state (and to its output at t, which is the same value), run the rest from the
perturbed state, and differentiate the loss with respect to δ at 0 — by float64 central
differences on NumPy, and by mx.grad on MLX. Then gradient_flow's norms and gate saturation are
checked against the same record and the forward caches, and its loss against the model's own.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlxrnn import SequenceModel, SequenceModelConfig, make_recurrent
from mlxrnn.backend import mlx_installed
from mlxrnn.errors import ConfigError
from mlxrnn.models.gradflow import gradient_flow
from mlxrnn.testing import CELL_VARIANT_IDS, CELL_VARIANTS, assert_gradients_close, numerical_gradient

VARIANT_IDS = CELL_VARIANT_IDS


def _single_layers(stack, backend: str, dtype: str) -> list:
    """The stack's layers as one-layer Recurrents with the same weights (the oracle runs them one by one)."""
    layers = []
    for layer in range(stack.num_layers):
        width = stack.input_size if layer == 0 else stack.output_size
        single = make_recurrent(stack.cell_name, width, stack.hidden_size, backend=backend, dtype=dtype,
                                **stack.cell_options)
        prefix = f"l{layer}."
        single.load_parameters({"l0." + k[len(prefix):]: v for k, v in stack.numpy_parameters().items()
                                if k.startswith(prefix)})
        layers.append(single)
    return layers


def _perturbed_loss(xp, layers, x, weights, mask, layer_index: int, t: int, delta):
    """Σ outputs · weights with δ added to layer ``layer_index``'s state after step t."""
    T = int(x.shape[1])
    inputs = x
    for index, single in enumerate(layers):
        if index != layer_index:
            inputs, _, _ = single.forward(inputs, mask=mask)
            continue
        head, state, _ = single.forward(inputs[:, : t + 1], mask=None if mask is None else mask[:, : t + 1])
        parts = list(state) if single.state_size > 1 else [state]
        parts[0] = parts[0] + delta[None]
        m_t = 1.0 if mask is None else xp.from_numpy(mask[:, t : t + 1])  # a padded step outputs 0
        pieces = [head[:, :t], (head[:, t] + m_t * delta)[:, None]]
        if t + 1 < T:
            public = tuple(parts) if single.state_size > 1 else parts[0]
            tail, _, _ = single.forward(inputs[:, t + 1 :], initial_state=public,
                                        mask=None if mask is None else mask[:, t + 1 :])
            pieces.append(tail)
        inputs = xp.concat(pieces, axis=1)
    return xp.sum(inputs * weights)


def _case(cell, options, backend, dtype, masked, seed=0):
    rng = np.random.default_rng(seed)
    B, T, D, H = 2, 4, 3, 3
    stack = make_recurrent(cell, D, H, num_layers=2, backend=backend, dtype=dtype, **options)
    stack.load_parameters({k: rng.normal(0, 0.6, size=v.shape) for k, v in stack.numpy_parameters().items()})
    x = rng.normal(size=(B, T, D))
    weights = rng.normal(size=(B, T, H))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=np.float64) if masked else None
    outputs, _, cache = stack.forward(x, mask=mask)
    record: dict = {}
    stack.backward(stack.xp.from_numpy(weights), None, cache, step_grads=record)
    return stack, x, weights, mask, record


@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_step_grads_match_finite_differences(cell, options, masked):
    stack, x, weights, mask, record = _case(cell, options, "numpy", "float64", masked)
    xp = stack.xp
    layers = _single_layers(stack, "numpy", "float64")
    B, T, H = x.shape[0], x.shape[1], stack.hidden_size
    assert sorted(record) == [(0, 0), (1, 0)]
    for layer in range(stack.num_layers):
        for t in range(T):
            delta = np.zeros((B, H))
            numeric = numerical_gradient(
                lambda layer=layer, t=t, delta=delta: float(_perturbed_loss(xp, layers, x, weights, mask, layer, t, delta)),
                delta,
            )
            assert_gradients_close(record[(layer, 0)][t][0], numeric, f"dL/dh layer {layer} step {t}")
    assert np.abs(np.asarray(record[(0, 0)][0][0])).max() > 1e-6  # the oracle compared something nonzero


def test_step_grads_cover_both_directions_of_a_bidirectional_stack():
    stack = make_recurrent("gru", 2, 3, bidirectional=True, backend="numpy", dtype="float64")
    x = np.random.default_rng(1).normal(size=(2, 5, 2))
    outputs, _, cache = stack.forward(x)
    record: dict = {}
    plain = stack.backward(np.ones_like(outputs), None, cache)
    recorded = stack.backward(np.ones_like(outputs), None, cache, step_grads=record)
    assert sorted(record) == [(0, 0), (0, 1)] and all(len(v) == 5 for v in record.values())
    for a, b in zip(plain[2].values(), recorded[2].values()):
        np.testing.assert_array_equal(a, b)  # recording changes nothing the caller gets
    # the last step of each direction sees only its own output's gradient: the ones of its half
    np.testing.assert_allclose(record[(0, 0)][4][0], 1.0)
    np.testing.assert_allclose(record[(0, 1)][0][0], 1.0)


@pytest.mark.skipif(not mlx_installed(), reason="MLX is not installed")
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_step_grads_match_mlx_autodiff(cell):
    import mlx.core as mx

    stack, x, weights, mask, record = _case(cell, {}, "mlx", "float32", masked=False)
    xp = stack.xp
    layers = _single_layers(stack, "mlx", "float32")
    x_m, w_m = xp.from_numpy(x), xp.from_numpy(weights)
    B, T, H = x.shape[0], x.shape[1], stack.hidden_size
    for layer in range(stack.num_layers):
        for t in range(T):
            grad = mx.grad(lambda d, layer=layer, t=t: _perturbed_loss(xp, layers, x_m, w_m, None, layer, t, d))(mx.zeros((B, H)))
            np.testing.assert_allclose(np.array(record[(layer, 0)][t][0]), np.array(grad), rtol=1e-4, atol=1e-5)


def _tiny_model(cell: str, **overrides) -> SequenceModel:
    config = dict(input_size=7, embed_size=4, cell=cell, hidden_size=5, num_layers=2, output_size=7)
    config.update(overrides)
    return SequenceModel(SequenceModelConfig(**config), backend="numpy", dtype="float64")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_gradient_flow_reads_the_layers_backward(cell):
    model = _tiny_model(cell)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 7, size=(3, 7))
    inputs, targets = ids[:, :6], ids[:, 1:]
    flow = gradient_flow(model, inputs, targets)
    assert flow.cell == cell and flow.hidden_norms.shape == (2, 6, 3) and flow.input_norms.shape == (6, 3)

    # The loss is the model's own cross-entropy of the last step.
    only_last = np.full(targets.shape, -100)  # cross-entropy's ignore_index everywhere but the last step
    only_last[:, -1] = targets[:, -1]
    batch = {"inputs": inputs, "targets": only_last}
    assert flow.loss == pytest.approx(float(model.loss(batch)[0]), rel=1e-12)

    # ∂ℓ_b/∂x⟨t⟩: the finite-difference gradient of sequence b's loss with respect to its embedding at t.
    table = model.embedding.params["weight"]
    x = table[inputs].copy()
    head_weight, head_bias = model.head.params["W"], model.head.params["b"]

    def sequence_loss(b: int) -> float:
        hidden, _, _ = model.rnn.forward(x[b : b + 1])
        logits = hidden[0, -1] @ head_weight + head_bias
        return float(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[targets[b, -1]])

    for b in range(3):
        numeric = numerical_gradient(lambda b=b: sequence_loss(b), x)[b]
        np.testing.assert_allclose(flow.input_norms[:, b], np.linalg.norm(numeric, axis=1), rtol=1e-5, atol=1e-9)

    # The top layer's last step gets the head's gradient only: ‖(softmax − onehot) Wᵀ‖ per sequence.
    hidden, _, _ = model.rnn.forward(x)
    logits = hidden[:, -1] @ head_weight + head_bias
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(3), targets[:, -1]] -= 1.0
    np.testing.assert_allclose(flow.hidden_norms[1, -1], np.linalg.norm(probs @ head_weight.T, axis=1), rtol=1e-10)

    summary = flow.to_dict()
    np.testing.assert_allclose(summary["hidden_grad_norm"], np.median(flow.hidden_norms, axis=2))
    assert summary["time_steps"] == 6 and summary["batch_size"] == 3


@pytest.mark.parametrize("cell,gates", [("rnn", set()), ("gru", {"u", "r"}), ("lstm", {"u", "f", "o"})])
def test_gate_saturation_counts_the_forward_gates(cell, gates):
    model = _tiny_model(cell, num_layers=1)
    ids = np.random.default_rng(3).integers(0, 7, size=(4, 6))
    flow = gradient_flow(model, ids[:, :5], ids[:, 1:])
    assert set(flow.saturation) == gates
    if not gates:
        return
    # Recompute the gates independently from the cell's own equations, step by step.
    params = {k[len("l0.fwd."):]: v for k, v in model.rnn.params.items()}
    H = 5
    x = model.embedding.params["weight"][ids[:, :5]]
    h, c = np.zeros((4, H)), np.zeros((4, H))
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for t in range(5):
        pre = x[:, t] @ params["W_x"] + params["b"]
        if cell == "lstm":
            pre = pre + h @ params["W_h"]
            u, f, o = sigmoid(pre[:, :H]), sigmoid(pre[:, H : 2 * H]), sigmoid(pre[:, 3 * H :])
            c = f * c + u * np.tanh(pre[:, 2 * H : 3 * H])
            h = o * np.tanh(c)
            expected = {"u": u, "f": f, "o": o}
        else:  # the notes' full GRU
            ur = sigmoid(pre[:, : 2 * H] + h @ params["W_h"][:, : 2 * H])
            u, r = ur[:, :H], ur[:, H:]
            cand = np.tanh(pre[:, 2 * H :] + (r * h) @ params["W_h"][:, 2 * H :])
            h = u * cand + (1 - u) * h
            expected = {"u": u, "r": r}
        for gate, values in expected.items():
            assert flow.saturation[gate][0, t] == np.mean((values < 0.05) | (values > 0.95)), (gate, t)


def test_gate_saturation_sees_saturated_gates():
    model = _tiny_model("lstm", num_layers=1)
    b = model.rnn.params["l0.fwd.b"].copy()
    b[5:10] = 50.0  # forget gate pinned open
    model.rnn.params["l0.fwd.b"] = b
    ids = np.random.default_rng(4).integers(0, 7, size=(2, 4))
    flow = gradient_flow(model, ids[:, :3], ids[:, 1:])
    np.testing.assert_array_equal(flow.saturation["f"], 1.0)
    assert flow.saturation["u"].max() < 1.0


def test_gradient_flow_refuses_models_without_a_last_step_story():
    with pytest.raises(ConfigError, match="unidirectional"):
        gradient_flow(_tiny_model("gru", bidirectional=True, num_layers=1), np.zeros((1, 3), int), np.zeros((1, 3), int))
    with pytest.raises(ConfigError, match="targets"):
        gradient_flow(_tiny_model("gru"), np.zeros((1, 3), int), np.zeros((1, 2), int))
