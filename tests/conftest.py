import os

# The tests multiply tiny matrices, where OpenBLAS's worker threads only add spin-waiting; on a
# shared machine they made some tests 5-10x slower. Set before NumPy loads; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Bounded example counts keep the suite fast on a 2-core CI machine; `HYPOTHESIS_PROFILE=thorough`
# runs many more examples locally.
settings.register_profile(
    "ci", max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Broadcasting bugs should fail loudly rather than silently produce wrong shapes.
np.seterr(all="raise", under="ignore")
