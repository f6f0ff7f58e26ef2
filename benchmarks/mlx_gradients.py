"""MLX backend: hand-written BPTT vs MLX autodiff, eager vs ``mx.compile``, and ``mlx.nn``'s own layers.

    python benchmarks/mlx_gradients.py            # a small shape (the Linux CPU build is slow)
    python benchmarks/mlx_gradients.py --size ref

Implementations (see ``mlxrnn.bench.workloads``): ``mlx`` (hand-written BPTT, eager: the
``--no-compile`` step), ``mlx-compiled`` (the whole step under ``mx.compile``: what the Trainer
runs on MLX by default), ``mlx-autodiff`` and ``mlx-autodiff-compiled`` (gradients from
``mx.value_and_grad`` of the forward), and the peers ``mlx.nn`` / ``mlx.nn-compiled``
(``mlx.nn.LSTM/GRU/RNN`` with ``nn.value_and_grad``), with mlxrnn's NumPy backend for scale.
Writes benchmarks/results/mlx_gradients.{json,md}. For the README's MLX table and the targets
of the compiled step, see benchmarks/mlx_speed.py.

On Linux the ``mlx[cpu]`` wheel multiplies matrices with a reference BLAS (tens of times slower
than NumPy's OpenBLAS), so these numbers say which gradient path has less overhead, not how MLX
performs on Apple silicon; run the script on a Mac for that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mlxrnn.backend import mlx_installed
from mlxrnn.bench.harness import BenchSettings, run_benchmarks
from mlxrnn.bench.report import format_summary, format_table

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ["mlx", "mlx-compiled", "mlx-autodiff", "mlx-autodiff-compiled", "mlx.nn", "mlx.nn-compiled", "numpy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="B=16,T=32,E=32,H=64,V=65", help="a size name or B=..,T=..,E=..,H=..")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-background", type=float, default=0.05)
    args = parser.parse_args(argv)
    if not mlx_installed():
        print("MLX is not installed: pip install 'mlx[cpu]' (Linux) or 'mlx' (Apple silicon)", file=sys.stderr)
        return 1
    settings = BenchSettings(sizes=[args.size], impls=IMPLS, repeats=args.repeats, warmup=3, baseline="mlx",
                             sample_tokens=100, max_background=args.max_background)
    report = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mlx_gradients.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = "\n".join([
        "# MLX: hand-written BPTT vs autodiff, eager vs compiled (ratios to `mlx`, the eager step)", "",
        "```", format_summary(report), "```", "", format_table(report, markdown=True), "",
        "On Linux the MLX wheel's CPU BLAS is a reference implementation: compare the MLX rows with each other, "
        "not with NumPy, and not as a forecast for Apple silicon.", "",
    ])
    (RESULTS / "mlx_gradients.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
