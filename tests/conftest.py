import os

import numpy as np
from hypothesis import HealthCheck, settings

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
