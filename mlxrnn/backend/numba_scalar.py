"""What every numba kernel module shares: the jit options and a float32 tanh that vectorises.

float32 tanh is a rational approximation (Eigen's, the one TensorFlow and JAX use on CPU): it
vectorises, unlike libm's scalar ``tanhf``, and its error is below 4e-7 (tests check it against
float64 tanh over the whole float32 range); float64 calls ``math.tanh`` and is exact. Its own
module so that the point-wise kernels (numba_pointwise.py) and the minimal-cell kernels
(numba_minimal.py) both import it without importing each other.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

JIT = {"cache": True, "nogil": True, "boundscheck": False, "error_model": "numpy"}


def tanh(x):  # replaced inside compiled code by the overload below
    return math.tanh(x)


@overload(tanh, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        def tanh_float32(x):
            # Clamp where tanh rounds to ±1 in float32 (a NaN stays NaN: tests check it).
            y = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
            y2 = y * y
            p = np.float32(-2.76076847742355e-16)
            p = p * y2 + np.float32(2.00018790482477e-13)
            p = p * y2 + np.float32(-8.60467152213735e-11)
            p = p * y2 + np.float32(5.12229709037114e-08)
            p = p * y2 + np.float32(1.48572235717979e-05)
            p = p * y2 + np.float32(6.37261928875436e-04)
            p = p * y2 + np.float32(4.89352455891786e-03)
            q = np.float32(1.19825839466702e-06)
            q = q * y2 + np.float32(1.18534705686654e-04)
            q = q * y2 + np.float32(2.26843463243900e-03)
            q = q * y2 + np.float32(4.89352518554385e-03)
            return y * p / q

        return tanh_float32
    return lambda x: math.tanh(x)
