"""The MLX table: mlxrnn's compiled step and sampler beside its eager ones and beside mlx.nn.

    python benchmarks/mlx_speed.py            # sizes ref and small, every cell, train and sample
    python benchmarks/mlx_speed.py --quick    # size small only, 3 repeats
    python benchmarks/mlx_speed.py --tiny     # smoke test of the script: tiny shapes, numbers mean nothing

Implementations (``mlxrnn.bench.workloads`` / ``mlxrnn.bench.peers``): ``mlx`` (the eager step,
``--no-compile``), ``mlx-compiled`` (the compiled step and sampler: what ``mlxrnn train`` and
``mlxrnn sample`` run on MLX), ``mlx.nn`` (MLX's own layers, ``nn.value_and_grad``) and
``mlx.nn-compiled`` (that step under ``mx.compile`` over model and optimizer state, as
mlx-examples write it). Sizes: ``ref`` (B32 T64 E128 H256) and ``small`` (hidden 64), where
per-op overhead dominates — on a CPU, a proxy for the GPU's per-kernel dispatch cost.

Writes, under benchmarks/results/ (NAME defaults to mlx_speed_metal on a Mac's GPU, else
mlx_speed_cpu, so the two never overwrite each other):
  NAME.json  the full report (machine, MLX device, every timing, graph node counts, notes)
  NAME.md    the table, the targets of the compiled step with their measured ratios, the graph
             nodes per training step, and a compact table for the README's speed section

Every configuration runs in a fresh process; one that other processes slowed (more than
``--max-background`` of the CPUs busy meanwhile) is measured again when the machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlxrnn.backend import mlx_installed
from mlxrnn.bench.harness import BenchSettings, mlx_device, run_benchmarks
from mlxrnn.bench.report import format_rate, format_summary, format_table

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ["mlx", "mlx-compiled", "mlx.nn", "mlx.nn-compiled"]

#: (task, size, ours, theirs, minimum ratio of ours to theirs in tokens/s)
TARGETS = [
    ("train", "small", "mlx-compiled", "mlx", 2.0),
    ("train", "small", "mlx-compiled", "mlx.nn-compiled", 1.5),
    ("train", "ref", "mlx-compiled", "mlx.nn-compiled", 1.2),
    ("sample", "ref", "mlx-compiled", "mlx.nn", 3.0),
    ("sample", "small", "mlx-compiled", "mlx.nn", 3.0),
]


def target_rows(report: dict, targets: list[tuple] = TARGETS) -> list[dict]:
    """Every target the report can judge, with the measured ratio (median and min–max) and a verdict."""
    rows = {(r["impl"], r["cell"], r["size"], r["task"]): r for r in report["results"]}
    verdicts = []
    for cell in report["settings"]["cells"]:
        for task, size, ours_name, theirs_name, minimum in targets:
            ours, theirs = rows.get((ours_name, cell, size, task)), rows.get((theirs_name, cell, size, task))
            if ours is None or theirs is None:
                continue
            ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
            verdicts.append({
                "target": f"{task}: {ours_name} ≥ {minimum:g}× {theirs_name}", "cell": cell, "size": size,
                "ratio": ratio, "ratio_min": ours["tokens_per_s_min"] / theirs["tokens_per_s_max"],
                "ratio_max": ours["tokens_per_s_max"] / theirs["tokens_per_s_min"], "met": ratio >= minimum,
            })
    return verdicts


def _rows(report: dict, task: str) -> dict:
    return {(r["cell"], r["size"], r["impl"]): r for r in report["results"] if r["task"] == task}


def graph_table(report: dict) -> list[str]:
    """Graph nodes (primitives) one training step evaluates, per implementation."""
    rows = _rows(report, "train")
    keys = sorted({(cell, size) for cell, size, _ in rows})
    impls = [i for i in IMPLS if any(k[2] == i for k in rows)]
    lines = ["| cell | size | " + " | ".join(impls) + " | eager ÷ compiled |", "|---|---|" + "---|" * (len(impls) + 1)]
    for cell, size in keys:
        nodes = [rows.get((cell, size, impl), {}).get("graph_nodes") for impl in impls]
        eager, compiled = (rows.get((cell, size, i), {}).get("graph_nodes") for i in ("mlx", "mlx-compiled"))
        shrink = f"{eager / compiled:.1f}×" if eager and compiled else ""
        lines.append(f"| {cell} | {size} | " + " | ".join(f"{n:,}" if n else "" for n in nodes) + f" | {shrink} |")
    return lines


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else ""


def readme_table(report: dict) -> list[str]:
    """The compact table for the README: tokens/s (median) per implementation, and the two ratios."""
    lines = ["| task | cell | size | " + " | ".join(f"`{i}`" for i in IMPLS)
             + " | compiled ÷ eager | compiled ÷ `mlx.nn` (`-compiled` for train) |",
             "|---|---|---|" + "---|" * (len(IMPLS) + 2)]
    for task in ("train", "sample"):
        rows = _rows(report, task)
        for cell, size in sorted({(c, s) for c, s, _ in rows}):
            rate = {impl: rows.get((cell, size, impl), {}).get("tokens_per_s") for impl in IMPLS}
            peer = rate["mlx.nn-compiled" if task == "train" else "mlx.nn"]
            cells = [task, cell, size, *(format_rate(rate[i]) if rate[i] else "" for i in IMPLS),
                     _ratio(rate["mlx-compiled"], rate["mlx"]), _ratio(rate["mlx-compiled"], peer)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    device = report["machine"].get("mlx_device") or "unknown"
    lines = [f"# mlxrnn on MLX ({device}): compiled step and sampler vs eager and mlx.nn", "",
             "```", format_summary(report), "```", "", "## Tokens per second", "",
             format_table(report, markdown=True), "", "## Targets", "",
             "| target | cell | size | measured ratio | min–max | met |", "|---|---|---|---|---|---|"]
    for v in target_rows(report):
        lines.append(f"| {v['target']} | {v['cell']} | {v['size']} | {v['ratio']:.2f} | "
                     f"{v['ratio_min']:.2f}–{v['ratio_max']:.2f} | {'yes' if v['met'] else '**no**'} |")
    lines += ["", "## Graph nodes per training step", "",
              "Primitives MLX evaluates for one step (forward, BPTT, clipping, Adam), counted from "
              "`mx.export_to_dot` of the step's unevaluated outputs; a fused kernel of a compiled function counts "
              "once (`mlxrnn.bench.workloads.count_graph_nodes`).", "", *graph_table(report), "",
              "## For the README", "", *readme_table(report), ""]
    return "\n".join(lines)


def default_name() -> str:
    device = mlx_device() or ""
    return "mlx_speed_metal" if "Metal" in device else "mlx_speed_cpu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="size small only, 3 repeats")
    parser.add_argument("--tiny", action="store_true", help="a smoke test: tiny shapes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--sample-tokens", type=int, default=300)
    parser.add_argument("--max-background", type=float, default=0.05)
    parser.add_argument("--name", default=None, help="results file stem (default: mlx_speed_metal or mlx_speed_cpu)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory to write to (default: %(default)s)")
    args = parser.parse_args(argv)
    if not mlx_installed():
        print("MLX is not installed: pip install 'mlx' (Apple silicon) or 'mlx[cpu]' (Linux)", file=sys.stderr)
        return 1
    if args.tiny:
        sizes, repeats, warmup, sample_tokens = ["tiny"], args.repeats or 1, 1, min(args.sample_tokens, 10)
    else:
        sizes = ["small"] if args.quick else ["ref", "small"]
        repeats, warmup, sample_tokens = args.repeats or (3 if args.quick else 7), 3, args.sample_tokens
    settings = BenchSettings(cells=args.cells.split(","), sizes=sizes, impls=IMPLS, tasks=["train", "sample"],
                             repeats=repeats, warmup=warmup, sample_tokens=sample_tokens, baseline="mlx.nn-compiled",
                             max_background=None if args.tiny else args.max_background)
    report = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.tiny:  # the targets are judged at ref and small only
        report["notes"].append("--tiny: a smoke test of the script; these numbers mean nothing")
    report["targets"] = target_rows(report)
    name = args.name or default_name()
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.results / f"{name}.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
