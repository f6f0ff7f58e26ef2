"""The linear recurrence h⟨t⟩ = a⟨t⟩ ∗ h⟨t−1⟩ + b⟨t⟩ four ways: where the blocked scan pays off.

    python benchmarks/linear_scan.py                 # NumPy (and MLX when installed), float32
    python benchmarks/linear_scan.py --quick         # fewer shapes and repeats

Compares, on (T, B·H) problems with a ~ U(0.01, 0.99) and b ~ N(0, 1):

* ``sequential``: one chunk, T dependent steps of 2 array operations (``linear_scan(chunk=T)``);
* ``blocked``: mlxrnn's two-level scan with chunks of ≈ √(2T/5) (``linear_scan(chunk=...)``);
* ``hillis-steele``: log₂T doubling passes over the whole array (T·log T work);
* ``log-space``: the paper's form, cumsum(log a) and a log-cumsum-exp of log|b| − Σ log a for
  each sign of b (NumPy's ``logaddexp.accumulate``), with its float32 error against sequential.

and the width B·H at which NumPy's sequential form overtakes the blocked one (what
``mlxrnn.nn.scan.SEQUENTIAL_FROM_WIDTH`` encodes). Times are medians of ``--repeats`` calls,
wall clock by default; ``--clock cpu`` uses process time (a proxy on a shared machine). Writes
``linear_scan.json`` / ``.md`` to ``--out-dir`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mlxrnn.backend import get_backend, mlx_installed
from mlxrnn.nn.scan import chunk_length, linear_scan

RESULTS = Path(__file__).resolve().parent / "results"


def hillis_steele(a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    b, a, shift = b.copy(), a.copy(), 1
    b[0] += a[0] * h0
    while shift < len(a):
        b[shift:] = b[shift:] + a[shift:] * b[:-shift]
        a[shift:] = a[shift:] * a[:-shift]
        shift *= 2
    return b


def log_space(a: np.ndarray, b: np.ndarray, h0: np.ndarray) -> np.ndarray:
    b = b.copy()
    b[0] += a[0] * h0
    cumulative = np.cumsum(np.log(a), axis=0)
    with np.errstate(divide="ignore"):  # log 0 = −inf is what the missing sign contributes
        positive = np.logaddexp.accumulate(np.log(np.maximum(b, 0)) - cumulative, axis=0)
        negative = np.logaddexp.accumulate(np.log(np.maximum(-b, 0)) - cumulative, axis=0)
    return np.exp(cumulative + positive) - np.exp(cumulative + negative)


def timed(fn, args: tuple, repeats: int, clock, sync=lambda out: None, **kwargs) -> float:
    """Median seconds of ``fn(*args, **kwargs)`` (``sync`` forces lazy results) after one warm-up call."""
    sync(fn(*args, **kwargs))
    seconds = []
    for _ in range(repeats):
        start = clock()
        sync(fn(*args, **kwargs))
        seconds.append(clock() - start)
    return float(np.median(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    shapes = [(64, 32 * 256), (256, 32 * 1024), (1024, 32 * 256), (256, 4 * 64), (1024, 8 * 64)]
    widths = [256, 1024, 4096, 16384] if args.quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    if args.quick:
        shapes = shapes[:1] + shapes[3:4]
    numpy = get_backend("numpy")
    mlx = get_backend("mlx") if mlx_installed() else None
    rows, crossover = [], []
    for steps, width in shapes:
        rng = np.random.default_rng(0)
        a = rng.uniform(0.01, 0.99, (steps, width)).astype(np.float32)
        b, h0 = rng.normal(size=(steps, width)).astype(np.float32), rng.normal(size=width).astype(np.float32)
        exact = linear_scan(numpy, a.astype(np.float64), b.astype(np.float64), h0.astype(np.float64), chunk=steps)
        blocked_chunk = chunk_length(None, steps, width)  # no backend: the blocked rule
        row = {"T": steps, "width": width, "blocked_chunk": blocked_chunk, "seconds": {},
               "log_space_max_abs_error": float(np.max(np.abs(log_space(a, b, h0) - exact)))}
        seconds = row["seconds"]
        seconds["sequential"] = timed(linear_scan, (numpy, a, b, h0), repeats, clock, chunk=steps)
        seconds["blocked"] = timed(linear_scan, (numpy, a, b, h0), repeats, clock, chunk=blocked_chunk)
        seconds["hillis-steele"] = timed(hillis_steele, (a, b, h0), repeats, clock)
        seconds["log-space"] = timed(log_space, (a, b, h0), max(1, repeats // 3), clock)
        if mlx is not None:
            on_mlx = (mlx, *(mlx.from_numpy(v) for v in (a, b, h0)))
            seconds["mlx sequential"] = timed(linear_scan, on_mlx, repeats, clock, mlx.eval, chunk=steps)
            seconds["mlx blocked"] = timed(linear_scan, on_mlx, repeats, clock, mlx.eval, chunk=blocked_chunk)
        rows.append(row)
        print(f"T={steps} B·H={width}: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in row["seconds"].items())
              + f"; log-space error {row['log_space_max_abs_error']:.1e}", file=sys.stderr, flush=True)
    for width in widths:  # T = 256: where does one chunk start to win on NumPy?
        rng = np.random.default_rng(1)
        a = rng.uniform(0.01, 0.99, (256, width)).astype(np.float32)
        b, h0 = rng.normal(size=(256, width)).astype(np.float32), np.zeros(width, np.float32)
        crossover.append({"width": width,
                          "sequential": timed(linear_scan, (numpy, a, b, h0), repeats, clock, chunk=256),
                          "blocked": timed(linear_scan, (numpy, a, b, h0), repeats, clock,
                                           chunk=chunk_length(None, 256, width))})
    report = {"benchmark": "linear_scan", "date": time.strftime("%Y-%m-%d %H:%M"), "clock": args.clock,
              "repeats": repeats, "numpy": np.__version__, "rows": rows, "numpy_crossover_T256": crossover}
    names = list(rows[0]["seconds"])
    lines = ["# The linear recurrence four ways (float32, median ms)", "",
             f"clock: {args.clock}, {repeats} repeats; a ~ U(0.01, 0.99), b ~ N(0, 1)", "",
             "| T | B·H | blocked C | " + " | ".join(names) + " | log-space max abs error |",
             "|---:|---:|---:|" + "---:|" * (len(names) + 1)]
    for r in rows:
        lines.append(f"| {r['T']} | {r['width']} | {r['blocked_chunk']} | "
                     + " | ".join(f"{r['seconds'][n] * 1e3:.2f}" for n in names)
                     + f" | {r['log_space_max_abs_error']:.1e} |")
    lines += ["", "NumPy, T = 256: sequential vs blocked by width B·H (ms)", "",
              "| B·H | sequential | blocked | sequential faster |", "|---:|---:|---:|---|"]
    lines += [f"| {c['width']} | {c['sequential'] * 1e3:.2f} | {c['blocked'] * 1e3:.2f} | "
              f"{'yes' if c['sequential'] < c['blocked'] else 'no'} |" for c in crossover]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "linear_scan.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / "linear_scan.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
