"""How many threads the NumPy backend's BLAS gets, chosen for the work and for the machine's load.

A recurrent time loop is a chain of small products, one per step: (B, H) × (H, G·H), 17 MFLOP
at the reference size (B 32, H 256, LSTM) and 0.5 MFLOP per token when sampling at batch 1.
OpenBLAS splits a product over all its threads, and each split costs a wake-up and a barrier;
when another process holds a core, the thread waiting there stalls the whole product. On a
2-core machine with other jobs running, a reference-size step product took 0.3 ms on one thread
and 1.5–12 ms on two (measured while this module was written, the machine being shared).

So :func:`choose_threads` gives BLAS one thread per ``MIN_FLOPS_PER_THREAD`` of the per-step
product, at most the cores other processes leave free, and :func:`apply_threads` sets that with
``threadpoolctl`` (not environment variables, which OpenBLAS reads only when it loads). An
explicit ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` is the user's
choice and is left alone. The numba kernels are serial loops (see numba_minimal.py for why):
they run on the calling thread whatever is chosen here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .blas import threadpoolctl_installed
from .kernels import numba_installed

#: per-thread work below which splitting a product costs more than it saves: a wake-up and a
#: barrier are some microseconds, 8 MFLOP is roughly 100 µs of one core's sgemm
MIN_FLOPS_PER_THREAD = 8e6

#: the variables with which a user fixes the BLAS thread count themselves
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadChoice:
    """The thread counts a run uses and why."""

    blas: int | None  #: BLAS threads; None: left as they are (user's variable, or no threadpoolctl)
    reason: str  #: why, in a few words
    numba: int = 1  #: the compiled point-wise kernels are serial

    def describe(self) -> str:
        """One line for a run's start, e.g. "threads: BLAS 1, numba kernels 1 (...)"."""
        blas = "as configured" if self.blas is None else str(self.blas)
        kernels = f", numba kernels {self.numba}" if numba_installed() else ""  # none run without numba
        return f"threads: BLAS {blas}{kernels} ({self.reason})"


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_and_own_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes spent busy since boot, this process's CPU seconds), Linux only."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    own = os.times()
    return busy, own.user + own.system


def busy_cores_of_others(window: float = 0.2) -> float | None:
    """How many cores other processes keep busy, measured over ``window`` seconds (Linux /proc/stat),
    falling back to the 1-minute load average; None where neither exists."""
    before = _busy_and_own_seconds()
    if before is not None:
        time.sleep(window)
        after = _busy_and_own_seconds()
        if after is not None:
            return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / window)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def choose_threads(step_flops: float, cores: int | None = None, busy_cores: float | None = None,
                   environ: Mapping[str, str] | None = None, controllable: bool | None = None) -> ThreadChoice:
    """BLAS threads for a loop of products of ``step_flops`` each (2·B·H·G·H for a recurrent step).

    ``cores``: the cores available (default: this process's); ``busy_cores``: how many of them
    other processes use (None: unknown, taken as none). A core counts as free when others leave
    at least half of it idle.
    """
    environ = os.environ if environ is None else environ
    pinned = [name for name in THREAD_VARIABLES if environ.get(name)]
    if pinned:
        return ThreadChoice(None, f"{pinned[0]}={environ[pinned[0]]} set in the environment")
    if not (threadpoolctl_installed() if controllable is None else controllable):
        return ThreadChoice(None, "threadpoolctl is not installed (pip install 'mlxrnn[fast]'), BLAS's own default")
    cores = available_cores() if cores is None else max(1, int(cores))
    free = cores if busy_cores is None else max(1, cores - int(busy_cores + 0.5))
    by_work = max(1, int(step_flops // MIN_FLOPS_PER_THREAD))
    threads = min(free, by_work)
    load = "" if busy_cores is None else f", others busy on {busy_cores:.1f}"
    return ThreadChoice(threads, f"{step_flops / 1e6:.1f} MFLOP per step product, {free} of {cores} cores free{load}")


def apply_threads(choice: ThreadChoice) -> int | None:
    """Set BLAS to ``choice.blas`` threads for the rest of the process; returns the count BLAS
    reports afterwards (None when nothing was set)."""
    if choice.blas is None:
        return None
    import numpy  # noqa: F401  (NumPy's BLAS must be loaded for threadpoolctl to find it)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(limits=choice.blas, user_api="blas")  # applied on creation, kept until changed
    counts = [row["num_threads"] for row in threadpool_info() if row.get("user_api") == "blas"]
    return min(counts) if counts else None


class ThreadGovernor:
    """Chooses the BLAS threads again while a run goes on, as other processes come and go.

    :meth:`tick` is cheap (two counters read) and meant to be called after every training step;
    every ``interval`` seconds it takes the cores other processes used since its last look (all
    busy CPU time less this process's own, BLAS threads included, over the wall time: no
    sleeping) and applies a new :func:`choose_threads` when the count changes.
    """

    def __init__(self, step_flops: float, choice: ThreadChoice, interval: float = 10.0,
                 clock=time.monotonic, counters=None, apply=None):
        self.step_flops, self.choice, self.interval = step_flops, choice, interval
        self._clock = clock
        self._counters = counters or _busy_and_own_seconds
        self._apply = apply or apply_threads
        self._last = (clock(), self._counters())

    def tick(self) -> ThreadChoice | None:
        """The new choice when it changed (already applied), else None."""
        now = self._clock()
        if self.choice.blas is None or now - self._last[0] < self.interval:
            return None
        counters = self._counters()
        (then, before), self._last = self._last, (now, counters)
        if before is None or counters is None:
            return None
        busy = max(0.0, ((counters[0] - before[0]) - (counters[1] - before[1])) / (now - then))
        choice = choose_threads(self.step_flops, busy_cores=busy)
        if choice.blas == self.choice.blas:
            return None
        self.choice = choice
        self._apply(choice)
        return choice


def recurrent_step_flops(batch: int, hidden: int, gates: int) -> float:
    """FLOPs of one time step's recurrent product (B, H) × (H, G·H)."""
    return 2.0 * batch * hidden * gates * hidden


def threads_for_recurrent_loop(batch: int, hidden: int, gates: int, measure_load: bool = True) -> ThreadChoice:
    """Choose and apply the BLAS threads of a recurrent run (batch B, hidden H, G gates); the
    returned choice's :meth:`~ThreadChoice.describe` is the run's one-line report (a
    :class:`ThreadGovernor` of the same FLOPs keeps it up to date as the load changes)."""
    flops = recurrent_step_flops(batch, hidden, gates)
    choice = choose_threads(flops)  # a user's variable or no threadpoolctl: nothing to measure
    if choice.blas is not None and measure_load:
        choice = choose_threads(flops, busy_cores=busy_cores_of_others())
    apply_threads(choice)
    return choice
