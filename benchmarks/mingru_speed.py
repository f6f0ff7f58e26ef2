"""Training speed of minGRU and minLSTM against our LSTM of the same parameter count, at T = 64, 256, 1024.

    python benchmarks/mingru_speed.py                        # NumPy and MLX, T = 64, 256, 1024
    python benchmarks/mingru_speed.py --backends numpy       # NumPy only
    python benchmarks/mingru_speed.py --tiny --out-dir /tmp  # a seconds-long check that it runs

Model: the language-model shape of ``mlxrnn bench`` (embedding E → L recurrent layers → linear
head over V tokens, softmax cross-entropy; a training step is forward, BPTT, clipping, Adam),
batch B. The LSTM has ``--hidden`` units; each minimal cell gets the hidden size (a multiple of
8) whose model has the parameter count nearest the LSTM model's (``--match hidden`` gives every
cell the LSTM's hidden size instead). Every (T, backend, cell) runs in a fresh process through
``mlxrnn.bench.harness``, interleaved T by T so load drift hits all cells alike; a configuration
that other processes slowed (more than ``--max-background`` of the CPUs busy) is measured again
when the machine is quiet. Tokens/s are medians of ``--repeats`` timed steps after ``--warmup``.

Writes ``<name>.json`` (every timing, the machine) and ``<name>.md`` (the table, the issue's
target: ≥ 3× the LSTM's training tokens/s at T = 256 on NumPy) to ``--out-dir``
(default benchmarks/results/).

Why equal parameters need not mean 3×: a training step costs ≈ 6 FLOPs per parameter per
token in GEMMs for all three cells (the LSTM's recurrent products are part of its parameter
count), so at equal size the minimal cells save only what the LSTM loses to small per-step
products, Python per step and its element-wise work; the ``GEMM GFLOP/step`` column shows it.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from mlxrnn.bench.harness import BenchSettings, run_benchmarks
from mlxrnn.bench.report import format_summary
from mlxrnn.bench.sizes import Shape, gemm_flops
from mlxrnn.nn.cells import make_cell

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = ("lstm", "mingru", "minlstm")
TARGET = ("numpy", 256, 3.0)  # (backend, T, minimum ratio to the LSTM): issue 18


@functools.cache
def _count_coefficients(cell: str) -> tuple[int, int, int]:
    """(a, b, c) with a layer's parameters = a·D·H + b·H² + c·H (every cell's weights have that
    form), read off 1- to 3-unit cells: nothing large is allocated."""
    def count(d: int, h: int) -> int:
        return sum(p.size for p in make_cell(cell, d, h).init_params(np.random.default_rng(0)).values())

    a = count(2, 1) - count(1, 1)
    b = (count(1, 2) - 2 * count(1, 1)) // 2
    c = count(1, 1) - a - b
    assert count(2, 3) == 6 * a + 9 * b + 3 * c, f"{cell}: parameter count is not a·D·H + b·H² + c·H"
    return a, b, c


def layer_parameters(cell: str, width: int, hidden: int) -> int:
    """Parameters of one layer of ``cell`` with input width D and hidden size H."""
    a, b, c = _count_coefficients(cell)
    return a * width * hidden + b * hidden * hidden + c * hidden


def parameter_count(cell: str, shape: Shape) -> int:
    """Parameters of the bench's language model: embedding, every recurrent layer, head."""
    total = shape.vocab * shape.embed + shape.hidden * shape.vocab + shape.vocab
    for layer in range(shape.layers):
        total += layer_parameters(cell, shape.embed if layer == 0 else shape.hidden, shape.hidden)
    return total


def matched_hidden(cell: str, reference: Shape, step: int = 8) -> int:
    """The hidden size (a multiple of ``step``) whose ``cell`` model is nearest the reference's parameter count."""
    goal = parameter_count("lstm", reference)
    sizes = range(step, 64 * reference.hidden + step, step)
    return min(sizes, key=lambda h: abs(parameter_count(cell, Shape(**{**reference.__dict__, "hidden": h})) - goal))


def size_text(shape: Shape) -> str:
    return f"B={shape.batch},T={shape.steps},E={shape.embed},H={shape.hidden},V={shape.vocab},L={shape.layers}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="64,256,1024", help="sequence lengths T, comma-separated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256, help="the LSTM's hidden size")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=65)
    parser.add_argument("--match", choices=["params", "hidden"], default="params")
    parser.add_argument("--backends", default="numpy,mlx", help="mlxrnn implementations, e.g. numpy,mlx,mlx-compiled")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-background", type=float, default=0.05)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, T = 8,16, one repeat: checks that it runs")
    parser.add_argument("--out-dir", default=str(RESULTS))
    parser.add_argument("--name", default=None,
                        help="results file stem (default: mingru_speed, or mingru_speed_equal_hidden)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.embed, args.hidden, args.vocab = "8,16", 2, 8, 16, 11
        args.repeats, args.warmup, args.max_background = 1, 0, None
    args.name = args.name or ("mingru_speed" if args.match == "params" else "mingru_speed_equal_hidden")
    steps = [int(t) for t in args.steps.split(",")]
    reference = Shape(batch=args.batch, steps=steps[0], embed=args.embed, hidden=args.hidden, vocab=args.vocab,
                      layers=args.layers)
    hidden = {cell: args.hidden if args.match == "hidden" or cell == "lstm" else matched_hidden(cell, reference)
              for cell in CELLS}
    params = {cell: parameter_count(cell, Shape(**{**reference.__dict__, "hidden": hidden[cell]})) for cell in CELLS}
    impls = args.backends.split(",")
    rows, notes, machine = [], [], None
    for T in steps:
        for cell in CELLS:
            shape = Shape(**{**reference.__dict__, "steps": T, "hidden": hidden[cell]})
            settings = BenchSettings(cells=[cell], sizes=[size_text(shape)], impls=impls, tasks=["train"],
                                     repeats=args.repeats, warmup=args.warmup, max_background=args.max_background,
                                     baseline=impls[0])
            report = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
            machine = machine or report
            notes += [n for n in report["notes"] if n not in notes]
            for row in report["results"]:
                row.update(steps=T, hidden=hidden[cell], parameters=params[cell],
                           gemm_gflop_per_step=gemm_flops(cell, shape, "train") / 1e9)
                rows.append(row)
    lstm = {(r["impl"], r["steps"]): r for r in rows if r["cell"] == "lstm"}
    for row in rows:
        base = lstm.get((row["impl"], row["steps"]))
        if base is not None:
            row["x_lstm"] = row["tokens_per_s"] / base["tokens_per_s"]
            row["x_lstm_min"] = row["tokens_per_s_min"] / base["tokens_per_s_max"]
            row["x_lstm_max"] = row["tokens_per_s_max"] / base["tokens_per_s_min"]
    target_rows = [r for r in rows if (r["impl"], r["steps"]) == TARGET[:2] and r["cell"] != "lstm"]
    result = {"benchmark": "mingru_speed", "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": machine["machine"], "sgemm_1024_gflops": machine["sgemm_1024_gflops"],
              "settings": {**vars(args), "hidden_sizes": hidden, "parameters": params}, "results": rows,
              "target": {"impl": TARGET[0], "steps": TARGET[1], "min_x_lstm": TARGET[2],
                         "met": {r["cell"]: r["x_lstm"] >= TARGET[2] for r in target_rows}},
              "notes": notes}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result, machine)
    (out_dir / f"{args.name}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def markdown(result: dict, report: dict) -> str:
    settings = result["settings"]
    matched = "parameter count" if settings["match"] == "params" else "hidden size"
    lines = [f"# Training speed: minGRU and minLSTM vs LSTM at equal {matched}", "", "```",
             format_summary({**report, "results": result["results"], "notes": result["notes"]}), "```", "",
             f"B {settings['batch']}, E {settings['embed']}, V {settings['vocab']}, L {settings['layers']}; "
             "hidden sizes and parameters: " + ", ".join(
                 f"{c} H={settings['hidden_sizes'][c]} ({settings['parameters'][c]:,})" for c in CELLS) + ".", "",
             "| T | backend | cell | tokens/s (median) | min–max | × LSTM | × LSTM min–max | GEMM GFLOP/step |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    order = {cell: i for i, cell in enumerate(CELLS)}
    for r in sorted(result["results"], key=lambda r: (r["steps"], r["impl"], order[r["cell"]])):
        ratio = f"{r['x_lstm']:.2f}" if "x_lstm" in r else ""
        spread = f"{r['x_lstm_min']:.2f}–{r['x_lstm_max']:.2f}" if "x_lstm" in r else ""
        lines.append(f"| {r['steps']} | {r['impl']} | {r['cell']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s_min']:,.0f}–{r['tokens_per_s_max']:,.0f} | {ratio} | {spread} | "
                     f"{r['gemm_gflop_per_step']:.3g} |")
    target = result["target"]
    lines += ["", f"Target: ≥ {target['min_x_lstm']:g}× the LSTM's training tokens/s at T = {target['steps']} on "
              f"{target['impl']}: " + (", ".join(f"{cell} {'met' if met else '**missed**'}"
                                                 for cell, met in target["met"].items()) or "not measured") + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
