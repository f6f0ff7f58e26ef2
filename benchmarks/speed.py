"""Reproduce the README's speed table: mlxrnn's NumPy backend side by side with PyTorch on the CPU.

    python benchmarks/speed.py              # sizes ref and large, every cell, train/forward/sample
    python benchmarks/speed.py --quick      # ref only, 3 repeats

Writes, under benchmarks/results/:
  speed.json  the full report of ``mlxrnn.bench.harness`` (machine, versions, every timing, notes)
  speed.md    the table, issue 12's targets with their measured ratios (median and min–max),
              and the share of the machine's float32 matmul peak each training run reaches

With numba installed (``pip install 'mlxrnn[fast]'``) the ``numpy`` rows run its compiled
kernels and ``numpy-nojit`` rows are added: the plain NumPy kernels an install without numba runs.

Each configuration runs in a fresh process; one that other processes slowed (more than
``--max-background`` of the CPUs busy meanwhile) is measured again once the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlxrnn.backend.kernels import numba_installed
from mlxrnn.bench.harness import BenchSettings, run_benchmarks
from mlxrnn.bench.report import format_summary, format_table

RESULTS = Path(__file__).resolve().parent / "results"

#: issue 12: (task, size, minimum ratio of numpy to torch tokens/s, cells it applies to)
SPEED_TARGETS = [
    ("train", "ref", 1.0, ("lstm", "gru")), ("train", "large", 1.0, ("lstm", "gru")),
    ("train", "ref", 1.1, ("rnn",)), ("train", "large", 1.1, ("rnn",)),
    ("forward", "ref", 1.0, None), ("forward", "large", 1.0, None),
    ("sample", "ref", 8.0, None),
]
#: issue 12: (cell, size, minimum share of the sgemm peak reached by numpy training)
GEMM_SHARE_TARGETS = [("lstm", "ref", 0.85), ("lstm", "large", 0.85)]


def target_rows(report: dict) -> list[dict]:
    """Every target of issue 12 that the report can judge, with the measured ratio and a verdict."""
    rows = {(r["impl"], r["cell"], r["size"], r["task"]): r for r in report["results"]}
    verdicts = []
    for cell in report["settings"]["cells"]:
        for task, size, minimum, cells in SPEED_TARGETS:
            ours, theirs = rows.get(("numpy", cell, size, task)), rows.get(("torch", cell, size, task))
            if ours is None or theirs is None or (cells is not None and cell not in cells):
                continue
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            spread = (ours["tokens_per_s_min"] / theirs["tokens_per_s_max"],
                      ours["tokens_per_s_max"] / theirs["tokens_per_s_min"])
            verdicts.append({"target": f"{task} tokens/s ≥ {minimum:g}× torch", "cell": cell, "size": size,
                             "ratio": ratio, "ratio_min": spread[0], "ratio_max": spread[1], "met": ratio >= minimum})
        for target_cell, size, minimum in GEMM_SHARE_TARGETS:
            ours = rows.get(("numpy", cell, size, "train"))
            if target_cell == cell and ours is not None and "fraction_of_sgemm_peak" in ours:
                share = ours["fraction_of_sgemm_peak"]
                verdicts.append({"target": f"train GEMM share ≥ {minimum:.0%} of the sgemm peak", "cell": cell,
                                 "size": size, "ratio": share, "detail": f"{share:.0%}", "met": share >= minimum})
        ours, theirs = rows.get(("numpy", cell, "ref", "train")), rows.get(("torch", cell, "ref", "train"))
        if ours is not None and theirs is not None:
            verdicts.append({"target": "training peak RSS ≤ torch", "cell": cell, "size": "ref",
                             "ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
                             "detail": f"{ours['peak_rss_mb']:.0f} vs {theirs['peak_rss_mb']:.0f} MB; above setup "
                                       f"{ours['peak_rss_mb'] - ours['setup_rss_mb']:.0f} vs "
                                       f"{theirs['peak_rss_mb'] - theirs['setup_rss_mb']:.0f} MB",
                             "met": ours["peak_rss_mb"] <= theirs["peak_rss_mb"]})
    return verdicts


def markdown(report: dict) -> str:
    lines = ["# mlxrnn speed: NumPy backend vs PyTorch CPU", "", "```", format_summary(report), "```", "",
             "## Tokens per second", "", format_table(report, markdown=True), "", "## Targets (issue 12)", "",
             "| target | cell | size | measured ratio | min–max | met |", "|---|---|---|---|---|---|"]
    for v in target_rows(report):
        spread = f"{v['ratio_min']:.2f}–{v['ratio_max']:.2f}" if "ratio_min" in v else v.get("detail", "")
        lines.append(f"| {v['target']} | {v['cell']} | {v['size']} | {v['ratio']:.2f} | {spread} | "
                     f"{'yes' if v['met'] else '**no**'} |")
    lines += ["", "## Share of the float32 matmul peak reached by training", "",
              f"Yardstick: NumPy's own 1024² sgemm, {report['sgemm_1024_gflops']:.0f} GFLOP/s. GEMM FLOPs of a step "
              "are counted analytically for the standard algorithm (`mlxrnn.bench.sizes.gemm_flops`), so an "
              "implementation that skips work (the folded embedding) scores above its true BLAS efficiency.", "",
              "| cell | size | implementation | GEMM GFLOP/step | achieved GFLOP/s | share of peak |",
              "|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["task"] == "train" and "gemm_gflops" in r:
            lines.append(f"| {r['cell']} | {r['size']} | {r['impl']} | {r['gemm_gflops'] * r['median_seconds']:.2f} | "
                         f"{r['gemm_gflops']:.0f} | {r['fraction_of_sgemm_peak']:.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    # The `mlxrnn` command keeps freed activation memory in the heap between steps (see
    # mlxrnn.backend.numpy_backend); measure what its users get, as `mlxrnn bench` does. The
    # workers inherit it. MLXRNN_MALLOC=default measures the library without it.
    os.environ.setdefault("MLXRNN_MALLOC", "tuned")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="size ref only, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--max-background", type=float, default=0.05)
    parser.add_argument("--name", default="speed", help="results file stem (default: speed)")
    args = parser.parse_args(argv)
    impls = ["numpy", "numpy-nojit", "torch"] if numba_installed() else ["numpy", "torch"]
    settings = BenchSettings(
        cells=args.cells.split(","), sizes=["ref"] if args.quick else ["ref", "large"], impls=impls,
        repeats=args.repeats or (3 if args.quick else 7), warmup=2, max_background=args.max_background,
    )
    report = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    report["targets"] = target_rows(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / f"{args.name}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
