"""Measure what the NumPy backend's layout and memory tricks save (benchmarks/results/numpy_layout.md).

    python benchmarks/numpy_layout.py                  # the micro-benchmarks, 200 repeats each
    python benchmarks/numpy_layout.py --malloc         # also training tokens/s, malloc tuned vs default
    python benchmarks/numpy_layout.py --quick -o /tmp/layout.json   # a check that it runs (numbers meaningless)

Micro-benchmarks (float32, one BLAS thread, median of ``--repeats`` timed calls):
  gemm     the time loop's products at batch B = 32 — forward (B, H) @ (H, G·H) and backward
           (B, G·H) @ (G·H, H) — into a row-major result (``np.matmul``) and into a batch-fastest
           one (``BatchFastestNumpyBackend.matmul``), for H = 256, 512 and G = 1, 3, 4 gate blocks
  copy     a (64, 32, 1024) array made batch-fastest: a plain strided copy against
           ``copy_in_layout``, which avoids the 2 KiB-stride cache aliasing
  scatter  the embedding backward, (2048, 128) rows summed into 65: ``np.add.at`` against
           ``NumpyBackend.scatter_add_rows``
``--malloc`` runs ``mlxrnn bench --tasks train --sizes ref`` with MLXRNN_MALLOC=default and =tuned
(each configuration in its own process) and reports the tokens/s ratio per cell.

Writes the JSON report to ``-o`` (default benchmarks/results/numpy_layout.json) and prints a table.
Run it on a quiet machine: other processes change every number here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # what the per-step products see in training

import numpy as np  # noqa: E402

from mlxrnn.backend.numpy_backend import BatchFastestNumpyBackend, NumpyBackend, copy_in_layout  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def gemm_rows(repeats: int, batch: int = 32) -> list[dict]:
    rng = np.random.default_rng(0)
    fast = BatchFastestNumpyBackend("float32")
    rows = []
    for hidden in (256, 512):
        for gates in (1, 3, 4):
            width = gates * hidden
            for direction, (a_shape, b_shape) in {"forward": ((batch, hidden), (hidden, width)),
                                                  "backward": ((batch, width), (width, hidden))}.items():
                a = rng.standard_normal(a_shape, dtype=np.float32)
                b = rng.standard_normal(b_shape, dtype=np.float32)
                row_major = median_seconds(lambda a=a, b=b: np.matmul(a, b), repeats)
                batch_fastest = median_seconds(lambda a=a, b=b: fast.matmul(a, b), repeats)
                rows.append({"what": f"gemm {direction}", "shape": f"{a_shape} @ {b_shape}",
                             "baseline_us": row_major * 1e6, "trick_us": batch_fastest * 1e6})
    return rows


def copy_row(repeats: int) -> dict:
    a = np.random.default_rng(1).standard_normal((64, 32, 1024), dtype=np.float32)
    order = (0, 2, 1)  # each (32, 1024) matrix column-major: the fastest destination axis has a 4 KiB stride

    def plain():
        out = np.empty([a.shape[axis] for axis in order], a.dtype).transpose(np.argsort(order))
        out[...] = a

    return {"what": "batch-fastest copy", "shape": str(a.shape), "baseline_us": median_seconds(plain, repeats) * 1e6,
            "trick_us": median_seconds(lambda: copy_in_layout(a, order), repeats) * 1e6}


def scatter_row(repeats: int) -> dict:
    rng = np.random.default_rng(2)
    ids, values = rng.integers(0, 65, 2048), rng.standard_normal((2048, 128), dtype=np.float32)
    xp = NumpyBackend("float32")

    def add_at():
        out = np.zeros((65, 128), np.float32)
        np.add.at(out, ids, values)

    return {"what": "embedding backward", "shape": "(2048, 128) rows into 65",
            "baseline_us": median_seconds(add_at, repeats) * 1e6,
            "trick_us": median_seconds(lambda: xp.scatter_add_rows(65, ids, values), repeats) * 1e6}


def malloc_rows(quick: bool) -> list[dict]:
    """Training tokens/s with glibc's default malloc thresholds against the tuned ones."""
    rates = {}
    for mode in ("default", "tuned"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            args = [sys.executable, "-m", "mlxrnn_cli.main", "bench", "--backends", "numpy", "--tasks", "train",
                    "--sizes", "tiny" if quick else "ref", "--repeats", "1" if quick else "6", "-q", "-o", str(out)]
            subprocess.run(args, check=True, env={**os.environ, "MLXRNN_MALLOC": mode}, stdout=subprocess.DEVNULL)
            report = json.loads(out.read_text())
        rates[mode] = {r["cell"]: r["tokens_per_s"] for r in report["results"]}
    return [{"what": "training tokens/s", "shape": f"{cell}, size {'tiny' if quick else 'ref'}",
             "default_tokens_per_s": rates["default"][cell], "tuned_tokens_per_s": rates["tuned"][cell]}
            for cell in rates["default"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="5 repeats and a tiny bench: checks that it runs")
    parser.add_argument("--malloc", action="store_true", help="also time training with each malloc setting")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS / "numpy_layout.json")
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats
    rows = [*gemm_rows(repeats), copy_row(repeats), scatter_row(repeats)]
    for row in rows:
        row["speedup"] = row["baseline_us"] / row["trick_us"]
    if args.malloc:
        rows += malloc_rows(args.quick)
    report = {"date": datetime.date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, {platform.system()}", "numpy": np.__version__, "repeats": repeats,
              "quick": args.quick, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"| what | shape | without the trick | with it | speed-up |  ({report['date']}, {report['machine']})")
    print("|---|---|---|---|---|")
    for row in rows:
        if "speedup" in row:
            print(f"| {row['what']} | {row['shape']} | {row['baseline_us']:.1f} µs | {row['trick_us']:.1f} µs | "
                  f"{row['speedup']:.2f}× |")
        else:
            print(f"| {row['what']} | {row['shape']} | {row['default_tokens_per_s']:.0f} (default malloc) | "
                  f"{row['tuned_tokens_per_s']:.0f} (tuned) | "
                  f"{row['tuned_tokens_per_s'] / row['default_tokens_per_s']:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
