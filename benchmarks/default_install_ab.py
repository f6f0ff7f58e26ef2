"""Is the default install (plain NumPy kernels, no numba) slower than an earlier commit on any row?

    python benchmarks/default_install_ab.py --before /path/to/old/checkout [--rounds 3]

The two trees are measured alternately, one `mlxrnn bench` process per (tree, cell, size),
``--rounds`` times, and each row's medians are compared: on a shared 2-core machine the speed
drifts by 20–40% between runs minutes apart (torch's own rows moved that much between two
runs), so only interleaved measurements can answer "no slower". The old checkout needs its CLI
importable as ``mlxrnn_cli`` (``ln -s cli mlxrnn_cli`` in it). Writes
benchmarks/results/default_install_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NOW = HERE.parent


def measure(tree: Path, cell: str, size: str, repeats: int) -> dict:
    """tokens/s per task of one fresh `mlxrnn bench` process on ``tree``'s code, plain NumPy kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "MLXRNN_KERNELS": "numpy"}
        command = [sys.executable, "-m", "mlxrnn_cli.main", "bench", "--backends", "numpy", "--cells", cell,
                   "--sizes", size, "--repeats", str(repeats), "--json", "-o", str(out)]
        subprocess.run(command, check=True, env=env, cwd=tree, capture_output=True)
        report = json.loads(out.read_text())
    return {r["task"]: r["tokens_per_s"] for r in report["results"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, type=Path, help="the earlier checkout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--sizes", default="ref,large")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "now": NOW}
    samples: dict = {}
    for round_ in range(args.rounds):
        for cell in args.cells.split(","):
            for size in args.sizes.split(","):
                for name, tree in (trees.items() if round_ % 2 == 0 else reversed(list(trees.items()))):
                    for task, rate in measure(tree, cell, size, args.repeats).items():
                        samples.setdefault((cell, size, task), {}).setdefault(name, []).append(rate)
                print(f"round {round_ + 1}: {cell} {size} done", file=sys.stderr)
    rows = []
    for (cell, size, task), by_tree in samples.items():
        before, now = np.median(by_tree["before"]), np.median(by_tree["now"])
        rows.append({"cell": cell, "size": size, "task": task, "before": before, "now": now, "ratio": now / before,
                     "before_all": by_tree["before"], "now_all": by_tree["now"]})
    lines = ["# Default install (plain NumPy kernels) against an earlier commit, measured alternately", "",
             f"Before: `{trees['before']}`; now: this checkout. {args.rounds} rounds, each a fresh `mlxrnn bench` "
             f"process per tree, cell and size ({args.repeats} timed calls, medians); the table shows the median "
             "over rounds.", "",
             "| cell | size | task | before tok/s | now tok/s | now ÷ before | per-round ratios |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        per_round = ", ".join(f"{n / b:.2f}" for b, n in zip(r["before_all"], r["now_all"]))
        lines.append(f"| {r['cell']} | {r['size']} | {r['task']} | {r['before']:,.0f} | {r['now']:,.0f} | "
                     f"{r['ratio']:.2f} | {per_round} |")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "default_install_ab.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.results_dir / "default_install_ab.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
