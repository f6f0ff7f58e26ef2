"""Regressions and contracts of layers, losses, clipping and optimizers (NumPy backend)."""

from __future__ import annotations

import numpy as np
import pytest

from mlxrnn import (
    SGD,
    Adam,
    AdamW,
    RMSProp,
    SequenceModel,
    SequenceModelConfig,
    Trainer,
    binary_cross_entropy_with_logits,
    clip_grad_norm,
    clip_grad_value,
    get_backend,
    make_recurrent,
    mean_squared_error,
    mlx_installed,
    one_hot,
    softmax_cross_entropy,
)
from mlxrnn.errors import ConfigError, ShapeError

from .test_gradients import CELL_VARIANTS, VARIANT_IDS

xp = get_backend("numpy", dtype="float64")


def _layer(cell, options, **kw):
    return make_recurrent(cell, 3, 4, backend="numpy", dtype="float64", seed=5, **{"num_layers": 2, "bidirectional": True, **kw}, **options)


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_initial_state_none_equals_zeros(cell, options):
    layer = _layer(cell, options)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    out_none, state_none, _ = layer.forward(x)
    out_zero, state_zero, _ = layer.forward(x, initial_state=layer.zero_state(2))
    np.testing.assert_array_equal(out_none, out_zero)
    for a, b in zip(np.atleast_1d(state_none), np.atleast_1d(state_zero)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_padded_sequence_equals_the_sequence_alone(cell, options):
    """Right-padding a sequence inside a batch changes neither its outputs, state nor gradients."""
    layer = _layer(cell, options)
    rng = np.random.default_rng(1)
    short = rng.normal(size=(1, 3, 3))
    other = rng.normal(size=(1, 6, 3))
    padded = np.concatenate([np.concatenate([short, rng.normal(size=(1, 3, 3)) * 100], axis=1), other], axis=0)
    weights = rng.normal(size=(1, 3, layer.output_size))

    out_alone, state_alone, cache_alone = layer.forward(short)
    out_pad, state_pad, cache_pad = layer.forward(padded, lengths=np.array([3, 6]))
    np.testing.assert_allclose(out_pad[:1, :3], out_alone, rtol=1e-12, atol=1e-12)
    assert np.all(out_pad[0, 3:] == 0)
    h_alone = state_alone[0] if isinstance(state_alone, tuple) else state_alone
    h_pad = state_pad[0] if isinstance(state_pad, tuple) else state_pad
    np.testing.assert_allclose(h_pad[:, :1], h_alone, rtol=1e-12, atol=1e-12)

    d_out_pad = np.zeros_like(out_pad)
    d_out_pad[:1, :3] = weights
    dx_alone, _, grads_alone = layer.backward(weights, None, cache_alone)
    dx_pad, _, grads_pad = layer.backward(d_out_pad, None, cache_pad)
    np.testing.assert_allclose(dx_pad[:1, :3], dx_alone, rtol=1e-10, atol=1e-12)
    assert np.all(dx_pad[0, 3:] == 0)
    for name in grads_alone:
        np.testing.assert_allclose(grads_pad[name], grads_alone[name], rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell,options", CELL_VARIANTS, ids=VARIANT_IDS)
def test_carried_state_equals_one_long_sequence(cell, options):
    """Truncated BPTT: two halves with the state carried give the full run's outputs and every
    part of its final state (h, and c for an LSTM); and chaining their backward passes (the
    second half's d_initial_state as the first half's d_final_state) gives the full backward."""
    # A unidirectional stack: a bidirectional one sees the future, so halves cannot match.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 8, 3))
    uni = make_recurrent(cell, 3, 4, num_layers=2, backend="numpy", dtype="float64", seed=5, **options)
    full, full_state, full_cache = uni.forward(x)
    first, state, first_cache = uni.forward(x[:, :4])
    second, final, second_cache = uni.forward(x[:, 4:], initial_state=state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), full, rtol=1e-12, atol=1e-14)
    final_parts = list(final) if isinstance(final, tuple) else [final]
    full_parts = list(full_state) if isinstance(full_state, tuple) else [full_state]
    assert len(final_parts) == len(full_parts) == uni.state_size
    for got, want in zip(final_parts, full_parts):  # h, and c for an LSTM
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)

    d_out = rng.normal(size=full.shape)
    d_final_parts = [rng.normal(size=p.shape) for p in full_parts]
    d_final = tuple(d_final_parts) if uni.state_size > 1 else d_final_parts[0]
    dx_full, d_init_full, grads_full = uni.backward(d_out, d_final, full_cache)
    dx_second, d_middle, grads_second = uni.backward(d_out[:, 4:], d_final, second_cache)
    dx_first, d_init, grads_first = uni.backward(d_out[:, :4], d_middle, first_cache)
    np.testing.assert_allclose(np.concatenate([dx_first, dx_second], axis=1), dx_full, rtol=1e-10, atol=1e-12)
    for got, want in zip(list(d_init) if uni.state_size > 1 else [d_init],
                         list(d_init_full) if uni.state_size > 1 else [d_init_full]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for name in grads_full:
        np.testing.assert_allclose(grads_first[name] + grads_second[name], grads_full[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda layer: layer.forward(np.zeros((2, 5, 4))), r"x must have shape \(batch, time, 3\); got \(2, 5, 4\)"),
        (lambda layer: layer.forward(np.zeros((5, 3))), r"x must have shape \(batch, time, 3\); got \(5, 3\)"),
        (lambda layer: layer.forward(np.zeros((2, 5, 3)), initial_state=(np.zeros((4, 2, 4)), np.zeros((4, 3, 4)))),
         r"initial_state must have shape .*\(4, 2, 4\); got \(4, 3, 4\)"),
        (lambda layer: layer.forward(np.zeros((2, 5, 3)), initial_state=np.zeros((4, 2, 4))), r"pair \(h0, c0\)"),
        (lambda layer: layer.forward(np.zeros((2, 5, 3)), mask=np.ones((2, 4))), r"mask must have shape \(batch, time\) = \(2, 5\); got \(2, 4\)"),
        (lambda layer: layer.forward(np.zeros((2, 5, 3)), lengths=np.array([6, 1])), r"lengths must lie in \[0, 5\]"),
        (lambda layer: layer.forward(np.zeros((2, 5, 3)), lengths=np.array([1.5, 2.0])), r"lengths must be a 1-D integer array"),
    ],
)
def test_bad_shapes_raise_one_line_errors_naming_the_argument(call, message):
    layer = _layer("lstm", {})
    with pytest.raises((ShapeError, ConfigError), match=message) as info:
        call(layer)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs,message", [
    ({"hidden_size": 0}, "hidden_size must be an integer >= 1"),
    ({"num_layers": -1}, "num_layers must be an integer >= 1"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
    ({"merge": "mean"}, "merge must be 'concat' or 'sum'"),
])
def test_bad_hyperparameters_are_config_errors(kwargs, message):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(ConfigError, match=message):
        make_recurrent("gru", backend="numpy", **args)


def test_token_ids_out_of_range_are_reported():
    model = SequenceModel(SequenceModelConfig(input_size=5, output_size=5, hidden_size=4, embed_size=3), backend="numpy")
    with pytest.raises(ConfigError, match=r"token id 7 is out of range for a vocabulary of 5"):
        model.forward(np.array([[1, 7]]))
    with pytest.raises(ConfigError, match=r"token id -1"):
        model.forward(np.array([[1, -1]]))


def test_one_hot() -> None:
    """The one one-hot (moved here from nn/sequences with its assertions), NumPy-backed here."""
    float32 = get_backend("numpy")
    ids = np.array([[0, 2], [1, 3]])
    oh = one_hot(float32, ids, 4)
    assert oh.shape == (2, 2, 4) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh.argmax(-1), ids)
    np.testing.assert_array_equal(oh.sum(-1), np.ones((2, 2)))
    assert one_hot(xp, np.array(2), 3).tolist() == [0.0, 0.0, 1.0]  # float64 backend
    assert one_hot(float32, [1, 0], 2).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ConfigError, match="out of range"):
        one_hot(float32, [0, 4], 4)
    with pytest.raises(ConfigError, match="out of range"):
        one_hot(float32, [-1], 4)
    with pytest.raises(ConfigError, match="num_classes must be an integer >= 1"):
        one_hot(float32, [0], 0)


def test_cross_entropy_matches_naive_formula_and_is_stable_for_large_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6))
    targets = rng.integers(0, 6, 4)
    loss, _ = softmax_cross_entropy(xp, logits, targets)
    naive = -np.mean(np.log(np.exp(logits)[np.arange(4), targets] / np.exp(logits).sum(1)))
    assert loss == pytest.approx(naive, rel=1e-12)


# Logits this large overflow exp() in a naive softmax; float32 carries the 1e4 scale on MLX.
EXTREME_CASES = [("numpy", "float64", scale) for scale in (1.0, 1e4, 1e150)] + (
    [("mlx", "float32", scale) for scale in (1.0, 1e4)] if mlx_installed() else []
)


@pytest.mark.parametrize("backend,dtype,scale", EXTREME_CASES)
def test_cross_entropy_of_extreme_logits_matches_logaddexp_reference(backend, dtype, scale):
    """loss = mean(logsumexp(z) − z[y]) and d/dz = (exp(z − logsumexp(z)) − onehot(y)) / N,
    the reference computed by np.logaddexp.reduce in float64."""
    backend_xp = get_backend(backend, dtype=dtype)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 7)) * scale
    targets = rng.integers(0, 7, 6)
    log_norm = np.logaddexp.reduce(logits, axis=1)
    expected_loss = np.mean(log_norm - logits[np.arange(6), targets])
    expected_grad = (np.exp(logits - log_norm[:, None]) - np.eye(7)[targets]) / 6
    loss, grad = softmax_cross_entropy(backend_xp, backend_xp.from_numpy(logits), targets)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert backend_xp.item(loss) == pytest.approx(expected_loss, rel=rtol)
    np.testing.assert_allclose(backend_xp.to_numpy(grad), expected_grad, rtol=rtol, atol=rtol / 6)


@pytest.mark.parametrize("backend,dtype,scale", EXTREME_CASES)
def test_binary_cross_entropy_of_extreme_logits_matches_logaddexp_reference(backend, dtype, scale):
    """loss = mean(y log(1 + e^−z) + (1 − y) log(1 + e^z)) and d/dz = (σ(z) − y) / N, with
    log(1 + e^a) = np.logaddexp(0, a) and σ(z) = exp(−logaddexp(0, −z)) in float64."""
    backend_xp = get_backend(backend, dtype=dtype)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 3)) * scale
    targets = rng.integers(0, 2, (5, 3)).astype(np.float64)
    expected_loss = np.mean(targets * np.logaddexp(0, -logits) + (1 - targets) * np.logaddexp(0, logits))
    expected_grad = (np.exp(-np.logaddexp(0, -logits)) - targets) / targets.size
    loss, grad = binary_cross_entropy_with_logits(backend_xp, backend_xp.from_numpy(logits), targets)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert backend_xp.item(loss) == pytest.approx(expected_loss, rel=rtol)
    np.testing.assert_allclose(backend_xp.to_numpy(grad), expected_grad, rtol=rtol, atol=rtol / targets.size)


def test_cross_entropy_ignore_index_and_sum_reduction():
    logits = np.random.default_rng(1).normal(size=(2, 3, 4))
    targets = np.array([[1, 2, -100], [0, -100, -100]])
    loss_mean, grad = softmax_cross_entropy(xp, logits, targets)
    kept = softmax_cross_entropy(xp, logits[[0, 0, 1], [0, 1, 0]], np.array([1, 2, 0]), reduction="sum")[0]
    assert loss_mean == pytest.approx(kept / 3, rel=1e-12)
    assert np.all(grad[targets == -100] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_with_weights_and_padding_matches_a_float64_oracle(dtype, reduction, weighted):
    """The NumPy path (the shifted logits become the gradient in place) against the formula in
    float64: weights, ignore_index, both reductions, an all-padding batch, and gradient=False."""
    backend_xp = get_backend("numpy", dtype=dtype)
    rng = np.random.default_rng(4)
    logits = (rng.normal(size=(3, 5, 9)) * 4).astype(dtype)
    targets = rng.integers(0, 9, (3, 5))
    targets[1, 2:] = -100
    weights = rng.random((3, 5)) if weighted else None
    w = (targets != -100) * (1.0 if weights is None else weights)
    z = logits.astype(np.float64)
    log_norm = np.logaddexp.reduce(z, axis=-1)
    safe = np.where(targets == -100, 0, targets)
    nll = log_norm - np.take_along_axis(z, safe[..., None], axis=-1)[..., 0]
    n = 1.0 if reduction == "sum" else max(w.sum(), 1.0)
    expected_grad = w[..., None] * (np.exp(z - log_norm[..., None]) - np.eye(9)[safe]) / n
    loss, grad = softmax_cross_entropy(backend_xp, logits, targets, weights=weights, reduction=reduction)
    rtol = 1e-12 if dtype == "float64" else 2e-6
    assert grad.dtype == np.dtype(dtype) and grad.shape == logits.shape
    assert float(loss) == pytest.approx((w * nll).sum() / n, rel=rtol)
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=rtol / 10)
    loss_only, none = softmax_cross_entropy(backend_xp, logits, targets, weights=weights, reduction=reduction,
                                            gradient=False)
    assert none is None and float(loss_only) == float(loss)
    padding = np.full((2, 3), -100)
    empty_loss, empty_grad = softmax_cross_entropy(backend_xp, logits[:2, :3], padding, reduction=reduction)
    assert float(empty_loss) == 0.0 and not np.any(empty_grad)


def test_binary_cross_entropy_and_mse_match_naive_formulas():
    rng = np.random.default_rng(2)
    z, y = rng.normal(size=(5, 2)), rng.integers(0, 2, (5, 2)).astype(float)
    p = 1 / (1 + np.exp(-z))
    assert binary_cross_entropy_with_logits(xp, z, y)[0] == pytest.approx(np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p)))
    assert mean_squared_error(xp, z, y)[0] == pytest.approx(np.mean((z - y) ** 2))


def test_clip_grad_norm_returns_norm_before_clipping():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    clipped, norm = clip_grad_norm(xp, grads, max_norm=1.0)
    assert float(norm) == pytest.approx(5.0)
    total = np.sqrt(sum(np.sum(g**2) for g in clipped.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    untouched, _ = clip_grad_norm(xp, grads, max_norm=10.0)
    np.testing.assert_allclose(untouched["a"], grads["a"], rtol=1e-6)
    np.testing.assert_array_equal(clip_grad_value(xp, grads, 2.0)["b"], [[2.0]])


def _reference_optimizer(name, params, grads_seq, lr):
    """An independent, textbook transcription of each update rule (PyTorch's documented forms)."""
    p = params.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads_seq, start=1):
        if name == "sgd-nesterov":
            m = 0.9 * m + g
            p = p - lr * (g + 0.9 * m)
        elif name == "sgd-momentum":
            m = 0.9 * m + g
            p = p - lr * m
        elif name in ("adam", "adamw"):
            if name == "adamw":
                p = p * (1 - lr * 0.01)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p = p - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        elif name == "rmsprop":
            v = 0.99 * v + 0.01 * g * g
            p = p - lr * g / (np.sqrt(v) + 1e-8)
    return p


@pytest.mark.parametrize("name,make", [
    ("sgd-momentum", lambda: SGD(0.1, momentum=0.9)),
    ("sgd-nesterov", lambda: SGD(0.1, momentum=0.9, nesterov=True)),
    ("adam", lambda: Adam(0.1)),
    ("adamw", lambda: AdamW(0.1)),
    ("rmsprop", lambda: RMSProp(0.1)),
])
def test_optimizers_match_textbook_updates(name, make):
    rng = np.random.default_rng(3)
    start = rng.normal(size=(3, 2))
    grads_seq = [rng.normal(size=(3, 2)) for _ in range(5)]
    optimizer, params = make(), {"w": start.copy()}
    for g in grads_seq:
        params = optimizer.update(xp, params, {"w": g})
    np.testing.assert_allclose(params["w"], _reference_optimizer(name, start, grads_seq, 0.1), rtol=1e-10)


def test_bad_optimizer_settings_are_rejected():
    for bad in (0, -1e-3, float("nan")):
        with pytest.raises(ConfigError, match="learning rate must be a positive number"):
            Adam(lr=bad)
    with pytest.raises(ConfigError, match="nesterov momentum needs momentum > 0"):
        SGD(0.1, nesterov=True)


def test_trainer_reduces_loss_on_a_toy_copy_task():
    rng = np.random.default_rng(4)
    model = SequenceModel(SequenceModelConfig(input_size=4, embed_size=8, hidden_size=16, output_size=4, cell="gru"),
                          backend="numpy")
    trainer = Trainer(model, Adam(0.02), clip_norm=1.0)
    losses = []
    for _ in range(60):
        ids = rng.integers(0, 4, (8, 6))
        losses.append(trainer.step({"inputs": ids, "targets": ids}).loss)  # predict the current token
    assert losses[-1] < 0.25 * losses[0]
