"""A/B in one process, alternating: the paths issue 26 added against the ones they replace.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/forward_sampling_threads_ab.py
    ... --sizes ref --cells lstm --repeats 15       # narrower, more repeats

* forward: ``SequenceModel.forward`` with its BPTT caches and the folded lookup's rows gathered
  (what evaluation ran before) against ``keep_cache=False`` (evaluation, scoring, the bench's
  forward task now);
* training: the folded lookup's rows gathered before the loop against read by the LSTM kernel
  (GRU and RNN rows: the same path twice, a check of the noise);
* sampling at batch 1: the per-token NumPy path (``Recurrent.step`` + NumPy head and draw, a
  few dozen calls per token) against the compiled loop (:mod:`mlxrnn.lm.compiled_sampling`);
* BLAS threads: a training step and a per-step product at 1 thread and at every core, to check
  ``MIN_FLOPS_PER_THREAD`` in mlxrnn/backend/threads.py on this machine.

Alternating the two sides of each pair within one process is what makes the comparison fair on
a machine whose speed drifts; medians of ``--repeats``. Prints a Markdown table; writes nothing.
Run it on a quiet machine, with the BLAS kernel the CPU supports (the ``env -u`` above).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mlxrnn.backend import get_backend
from mlxrnn.backend.blas import blas_report
from mlxrnn.backend.threads import available_cores, recurrent_step_flops
from mlxrnn.bench import workloads
from mlxrnn.bench.sizes import CELL_OPTIONS, SIZES, num_gates
from mlxrnn.nn import direction_loops


def alternate(pair: dict, repeats: int) -> dict:
    """Median seconds per call of each function in ``pair``, calls alternating, after a warm-up."""
    for fn in pair.values():
        fn()
    seconds: dict = {name: [] for name in pair}
    for _ in range(repeats):
        for name, fn in pair.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def numpy_path_sampling(workload, tokens: int) -> None:
    """The bench's sampling task with the compiled loop switched off (the path before issue 26)."""
    original = workloads.CompiledSampler.for_model
    workloads.CompiledSampler.for_model = classmethod(lambda cls, model: None)
    try:
        workload.sample(tokens)
    finally:
        workloads.CompiledSampler.for_model = original


def gathering_rows(fn):
    """``fn`` with the folded lookup's rows gathered before the time loop (the path before issue
    26) instead of read by the numba LSTM kernel."""
    def run():
        original = direction_loops._reads_rows
        direction_loops._reads_rows = lambda cell, loop_xp: False
        try:
            fn()
        finally:
            direction_loops._reads_rows = original
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="ref,large")
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=300, help="tokens per sampling call")
    args = parser.parse_args()
    report = blas_report()
    print(f"BLAS: {'; '.join(report['blas'] or ['unknown'])}; pinned: {report['blas_pinned'] or 'nothing'}")
    if report["blas_warning"]:
        print(report["blas_warning"])
    cores = available_cores()
    print("\n| cell | size | what | before | after | speed-up |\n|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        shape = SIZES[size]
        for cell in args.cells.split(","):
            work = workloads.MlxrnnWorkload(get_backend("numpy"), cell, shape)
            tokens = shape.batch * shape.steps
            forward = alternate({"cached": gathering_rows(lambda w=work: w.model.forward(w.batch["inputs"])),
                                 "forward-only": lambda w=work: w.model.forward(w.batch["inputs"], keep_cache=False)},
                                args.repeats)
            rows = [("forward tokens/s (cached, rows gathered → forward only)", tokens / forward["cached"],
                     tokens / forward["forward-only"])]
            train = alternate({"gathered": gathering_rows(work.train_step), "read": work.train_step}, args.repeats)
            rows.append(("train tokens/s (rows gathered → read by the LSTM kernel)", tokens / train["gathered"],
                         tokens / train["read"]))
            sample = alternate({"numpy": lambda w=work: numpy_path_sampling(w, args.tokens),
                                "compiled": lambda w=work: w.sample(args.tokens)}, args.repeats)
            rows.append(("batch-1 sampling tokens/s", args.tokens / sample["numpy"], args.tokens / sample["compiled"]))
            if cores > 1:
                def at(threads, fn):
                    def run():
                        with threadpool_limits(threads, user_api="blas"):
                            fn()
                    return run
                train = alternate({f"{cores} threads": at(cores, work.train_step), "1 thread": at(1, work.train_step)},
                                  args.repeats)
                rows.append((f"train tokens/s, BLAS {cores} threads → 1",
                             tokens / train[f"{cores} threads"], tokens / train["1 thread"]))
                G, H = num_gates(cell), shape.hidden
                rng = np.random.default_rng(0)
                h = np.asfortranarray(rng.random((shape.batch, H), dtype=np.float32))
                w_h = np.asfortranarray(rng.random((H, G * H), dtype=np.float32))
                def product(w_h=w_h, h=h):  # the time loop's own call (a batch-fastest result), 50 times
                    for _ in range(50):
                        np.matmul(w_h.T, h.T)
                step = alternate({f"{cores} threads": at(cores, product), "1 thread": at(1, product)}, args.repeats)
                flops = recurrent_step_flops(shape.batch, H, G)
                rows.append((f"step product GFLOP/s ({flops / 1e6:.0f} MFLOP), {cores} threads → 1",
                             50 * flops / step[f"{cores} threads"] / 1e9, 50 * flops / step["1 thread"] / 1e9))
            options = f" {CELL_OPTIONS[cell]}" if cell in CELL_OPTIONS else ""
            for what, before, after in rows:
                print(f"| {cell}{options} | {size} | {what} | {_number(before)} | {_number(after)} | "
                      f"{after / before:.2f}× |")


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


if __name__ == "__main__":
    main()
