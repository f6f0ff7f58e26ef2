"""Tools to verify gradients and backends, used by mlxrnn's tests and usable by yours.

``numerical_gradient`` is the independent oracle for every analytic backward in mlxrnn:
central differences (f(θ + ε eᵢ) − f(θ − ε eᵢ)) / 2ε in float64, one coordinate at a time.
``check_layer_gradients`` runs it on every gradient of a recurrent layer. ``available_backends``
lists the backends a test should be parametrized over here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlxrnn.backend import mlx_installed

#: Every cell and variant mlxrnn implements, as (cell, options) for ``make_recurrent``: the
#: list tests are parametrized over, so a new variant is checked everywhere by adding it here
#: (tests/test_gradients.py fails if a registered cell is missing from it).
CELL_VARIANTS = [
    ("rnn", {"activation": "tanh"}),
    ("rnn", {"activation": "relu"}),
    ("gru", {"variant": "full"}),
    ("gru", {"variant": "reset_after"}),
    ("gru", {"variant": "simple"}),
    ("lstm", {"peephole": False}),
    ("lstm", {"peephole": True}),
    ("mingru", {}),
    ("minlstm", {"forget_bias": 1.0}),
]

#: pytest ids for CELL_VARIANTS: "cell-firstoption" ("gru-full"), or the cell alone when it takes none
CELL_VARIANT_IDS = [f"{cell}-{next(iter(opts.values()))}" if opts else cell for cell, opts in CELL_VARIANTS]

#: PyTorch's ``gradcheck`` defaults in float64; our checks are at least this strict.
GRADCHECK_ATOL = 1e-5
GRADCHECK_RTOL = 1e-3


def numerical_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d array by central differences, perturbing ``array`` in place (restored after).

    ``f`` takes no arguments and must read ``array`` (float64) when called.
    """
    if array.dtype != np.float64:
        raise TypeError("numerical gradients need float64 arrays (float32 round-off swamps ε)")
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = f()
        flat[i] = original - eps
        minus = f()
        flat[i] = original
        flat_grad[i] = (plus - minus) / (2 * eps)
    return grad


def assert_gradients_close(
    analytic, numeric, name: str, atol: float = GRADCHECK_ATOL, rtol: float = GRADCHECK_RTOL
) -> None:
    """Raise AssertionError naming ``name`` and the worst element when |a − n| > atol + rtol |n|."""
    analytic, numeric = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"{name}: analytic gradient shape {analytic.shape} != numeric {numeric.shape}")
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if excess.size and excess.max() > 0:
        worst = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(
            f"{name}: gradient mismatch at {worst}: analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g}"
        )


def check_layer_gradients(layer, rng: np.random.Generator, batch: int, time: int, masked: bool,
                          with_initial_state: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """A float64 recurrent ``layer``'s BPTT against :func:`numerical_gradient`, for every parameter,
    the inputs and (``with_initial_state``) the initial state; raises AssertionError naming the first
    mismatch.

    The loss reads every output and every part of the final state with random weights, so every
    gradient path is exercised; ``masked`` draws random lengths (0 … ``time``) per sequence. The
    parameters are replaced by random values first (biases included, so none is 0). Returns the
    forward pass's outputs (B, T, H_out) and the lengths used (or None).
    """
    layer.load_parameters({name: rng.normal(0.0, 0.6, size=value.shape) for name, value in layer.parameters().items()})
    params = layer.parameters()  # the layer's own float64 arrays, perturbed in place by the oracle
    x = rng.normal(size=(batch, time, layer.input_size))
    lengths = rng.integers(0, time + 1, size=batch) if masked else None
    state_shape = (layer.num_layers * layer.num_directions, batch, layer.hidden_size)
    initial = [rng.normal(size=state_shape) for _ in range(layer.state_size)] if with_initial_state else None

    def public(parts):
        return None if parts is None else (tuple(parts) if layer.state_size > 1 else parts[0])

    out_weight = rng.normal(size=(batch, time, layer.output_size))
    state_weights = [rng.normal(size=state_shape) for _ in range(layer.state_size)]

    def loss() -> float:
        outputs, final, _ = layer.forward(x, initial_state=public(initial), lengths=lengths)
        parts = list(final) if layer.state_size > 1 else [final]
        return float(np.sum(outputs * out_weight) + sum(np.sum(p * w) for p, w in zip(parts, state_weights)))

    outputs, _, cache = layer.forward(x, initial_state=public(initial), lengths=lengths)
    d_x, d_initial, grads = layer.backward(out_weight, public(state_weights), cache)
    for name, value in params.items():
        assert_gradients_close(grads[name], numerical_gradient(loss, value), name)
    assert_gradients_close(d_x, numerical_gradient(loss, x), "inputs")
    if initial is not None:
        d_parts = list(d_initial) if layer.state_size > 1 else [d_initial]
        for k, part in enumerate(initial):
            assert_gradients_close(d_parts[k], numerical_gradient(loss, part), f"initial_state[{k}]")
    return outputs, lengths


def available_backends() -> list[str]:
    """The backends usable here: always "numpy", plus "mlx" when it is installed."""
    return ["numpy", "mlx"] if mlx_installed() else ["numpy"]
