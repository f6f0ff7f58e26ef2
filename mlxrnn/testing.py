"""Tools to verify gradients and backends, used by mlxrnn's tests and usable by yours.

``numerical_gradient`` is the independent oracle for every analytic backward in mlxrnn:
central differences (f(θ + ε eᵢ) − f(θ − ε eᵢ)) / 2ε in float64, one coordinate at a time.
``available_backends`` lists the backends a test should be parametrized over here.
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


def available_backends() -> list[str]:
    """The backends usable here: always "numpy", plus "mlx" when it is installed."""
    return ["numpy", "mlx"] if mlx_installed() else ["numpy"]
