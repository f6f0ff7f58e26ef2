"""The first-order linear recurrence h⟨t⟩ = a⟨t⟩ ∗ h⟨t−1⟩ + b⟨t⟩, solved for all t at once.

Cells whose gates read only the input (minGRU, minLSTM: mlxrnn/nn/min_cells.py) reduce the
whole time loop to this recurrence, with a, b (T, B, H) computed in one element-wise pass over
every step. Its adjoint is the same recurrence run backwards in time (see
:meth:`~mlxrnn.nn.min_cells.MinimalCell.sequence_backward`), so one function serves both passes.

Algorithm: a blocked two-level scan. The T steps are cut into n chunks of C steps (n·C ≥ T,
the end padded with identity steps a = 1, b = 0 when C does not divide T):

1. reduce: each chunk's steps compose into one affine map h_out = P ∗ h_in + E, built for all
   n chunks at once by walking the C positions: P ← a⟨j⟩ ∗ P, E ← a⟨j⟩ ∗ E + b⟨j⟩.
2. carry: the n chunk maps applied in order give each chunk's entering state (n small steps).
3. sweep: every chunk re-runs its C positions from its entering state, all chunks at once,
   writing h.

Cost: about 5 element operations per state (3 in the reduce, 2 in the sweep) plus one copy into
the output, against 2 for the plain sequential recurrence; but only ≈ 5C + 2n dependent array
operations instead of 2T. 5C + 2n is smallest at C ≈ √(2T/5): about 2√(10T) operations, each
over n·B·H elements (≈ 100 instead of 512 at T = 256, ≈ 200 instead of 2048 at T = 1024). That
is what a GPU (one kernel launch per operation) or MLX's graph (one node per operation) wants.
With one chunk (C ≥ T) steps 1–2 vanish and the sweep *is* the sequential recurrence; NumPy
uses that when a step's slice is large enough to hide the per-operation cost (see
:func:`chunk_length`).

Numerics: the same products and sums as the sequential recurrence, grouped per chunk. P is a
product of at most C factors in [0, 1] (underflow to 0 is the right limit: the old state is
forgotten); nothing is divided and no logarithm is taken, so b may have any sign and the
accuracy is that of the sequential recurrence (agreement to ~1e-13 in float64, tested).

Alternatives, measured with benchmarks/linear_scan.py (float32, CPU-time medians on the loaded
2-core development machine, so proxies): the paper's log-space form (cumulative sums of log a and
a log-cumsum-exp of log b − Σ log a, after Heinsen 2023) needs b > 0 — the paper passes c̃
through g(x) = x + ½ (x ≥ 0), σ(x) (x < 0) for that — or a sign split, costs transcendental
functions per element, was 17–31× slower than this scan on NumPy and off by up to 6e-4 absolute
(T = 1024); a Hillis–Steele scan (T·log₂T work) was 3–7× slower.
"""

from __future__ import annotations

import math
from typing import Any

#: Per backend, the elements per step (B·H) from which one sequential chunk is cheaper than the
#: blocked scan: NumPy's ~1 µs per array operation is then small against the element work,
#: and the sequential form does less than half of the blocked form's element work. At T = 256
#: benchmarks/linear_scan.py (CPU-time proxy, loaded machine) put NumPy's crossover between
#: B·H = 1024 (blocked 0.97 ms, sequential 1.17) and 2048 (2.04 vs 1.56). MLX always takes
#: blocks: they are what a GPU wants (one launch per operation); on MLX's Linux CPU build the
#: sequential form was faster only from about B·H = 32768.
SEQUENTIAL_FROM_WIDTH = {"numpy": 2048}


def chunk_length(xp: Any, steps: int, width: int) -> int:
    """The chunk length C for ``steps`` time steps of ``width`` elements each on backend ``xp``.

    ``steps`` (one chunk: the sequential recurrence) where :data:`SEQUENTIAL_FROM_WIDTH` says so,
    else the divisor of ``steps`` nearest √(2T/5) within a factor of 2 (no padding), else
    ⌈√(2T/5)⌉.
    """
    if width >= SEQUENTIAL_FROM_WIDTH.get(getattr(xp, "name", ""), math.inf):
        return steps
    target = math.sqrt(2.0 * steps / 5.0)
    divisors = [c for c in range(max(1, math.ceil(target / 2)), int(2 * target) + 1) if steps % c == 0]
    if divisors:
        return min(divisors, key=lambda c: abs(math.log(c / target)))
    return max(1, math.ceil(target))


def linear_scan(xp: Any, a: Any, b: Any, h0: Any, reverse: bool = False, chunk: int | None = None,
                include_initial: bool = False) -> Any:
    """All states of h⟨t⟩ = a⟨t⟩ ∗ h⟨t−1⟩ + b⟨t⟩, t = 0 … T−1, from h⟨−1⟩ = ``h0``.

    Args:
        a, b: (T, ...) coefficients and inputs (any sign; a is usually in [0, 1]).
        h0: (...) the state before the first step.
        reverse: run from the end instead: h⟨t⟩ = a⟨t⟩ ∗ h⟨t+1⟩ + b⟨t⟩ from h⟨T⟩ = ``h0``.
        chunk: the chunk length C (default :func:`chunk_length`); C ≥ T is the sequential loop.
        include_initial: also return ``h0``, first (last when ``reverse``): then the states
            before and after every step are two views of one array, h[:-1] and h[1:], which
            the sequential form gives without a copy.
    Returns:
        h (T, ...) — or (T + 1, ...) with ``include_initial`` — every state in time order.
    """
    if reverse:
        flipped = linear_scan(xp, xp.flip(a, 0), xp.flip(b, 0), h0, chunk=chunk, include_initial=include_initial)
        return xp.flip(flipped, 0)
    steps, rest = int(a.shape[0]), tuple(int(s) for s in a.shape[1:])
    if steps == 0:
        return h0[None] if include_initial else xp.zeros((0, *rest))
    if chunk is None:
        chunk = chunk_length(xp, steps, math.prod(rest))
    chunk = max(1, min(int(chunk), steps))
    num_chunks = -(-steps // chunk)
    pad = num_chunks * chunk - steps
    if pad:  # identity steps at the end: a = 1, b = 0 leave the state unchanged
        a = xp.concat([a, xp.ones((pad, *rest))], axis=0)
        b = xp.concat([b, xp.zeros((pad, *rest))], axis=0)
    a = xp.reshape(a, (num_chunks, chunk, *rest))  # chunk c, position j = time c·C + j
    b = xp.reshape(b, (num_chunks, chunk, *rest))
    if num_chunks == 1:
        state = h0[None]
        states = [state] if include_initial else []
    else:
        # 1. reduce: chunk c maps its entering state h to P[c] ∗ h + E[c]
        P, E = a[:, 0], b[:, 0]
        for j in range(1, chunk):
            a_j = a[:, j]
            P, E = a_j * P, a_j * E + b[:, j]
        # 2. carry: the state entering each chunk
        entering = [h0]
        for c in range(num_chunks - 1):
            entering.append(P[c] * entering[-1] + E[c])
        state = xp.stack(entering, axis=0)  # (n, ...)
        states = []
    # 3. sweep: all chunks at once from their entering states
    for j in range(chunk):
        state = a[:, j] * state + b[:, j]
        states.append(state)
    h = xp.reshape(xp.stack(states, axis=1), (-1, *rest))  # (n·C, ...); one chunk: h0 already in front if asked
    if pad:  # (only with several chunks)
        h = h[:steps]
    if include_initial and num_chunks > 1:
        h = xp.concat([h0[None], h], axis=0)
    return h
