"""``mlxrnn bench``: training, forward and sampling speed of the backends (and peers), side by side."""

from __future__ import annotations

import json

import click

from mlxrnn.backend import auto_choice
from mlxrnn.backend.blas import blas_report
from mlxrnn.bench.harness import IMPLS, OWN_IMPLS, BenchSettings, run_benchmarks, split_list
from mlxrnn.bench.report import format_summary, format_table
from mlxrnn.bench.sizes import CELLS, SIZES, TASKS
from mlxrnn.io.files import check_writable, write_file_atomically
from mlxrnn.plot import check_output_path
from mlxrnn.plot.bench import plot_bench_ratios

from .common import echo_json, handle_errors
from .plot import draw, finish


def _default_backends() -> list[str]:
    # mlx-compiled is what `mlxrnn train` and `mlxrnn sample` run on MLX; plain mlx is --no-compile
    return ["numpy", "mlx-compiled"] if auto_choice().name == "mlx" else ["numpy"]


@click.command()
@click.option("--cells", default=",".join(CELLS), show_default=True,
              help=f"Comma-separated: {', '.join(CELLS)} (the peers have only lstm, gru, rnn).")
@click.option("--sizes", default="ref,large", show_default=True,
              help=f"Comma-separated names ({', '.join(SIZES)}) or 'B=..,T=..,E=..,H=..,V=..,L=..' "
                   "(unset keys from ref; separate several custom sizes with ';').")
@click.option("--backends", default=None,
              help=f"mlxrnn implementations, comma-separated: {', '.join(OWN_IMPLS)} (mlx: the eager step, "
                   "--no-compile; mlx-compiled: the default on MLX). [default: numpy, plus mlx-compiled when MLX "
                   "has a GPU]")
@click.option("--peers", is_flag=True,
              help="Also measure PyTorch CPU and, next to an mlx backend, mlx.nn (when installed).")
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated: train, forward, sample.")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1), help="Timed calls per task.")
@click.option("--warmup", default=2, show_default=True, type=click.IntRange(min=0), help="Untimed calls first.")
@click.option("--sample-tokens", default=300, show_default=True, type=click.IntRange(min=1),
              help="Tokens drawn per timed sampling call.")
@click.option("--baseline", default=None, help=f"Implementation the ratios divide by ({', '.join(IMPLS)}). "
                                               "[default: torch when measured, else the first backend]")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--max-background", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Re-measure (up to 3 times, after waiting for a quiet moment) any configuration during which "
                   "other processes used more than this share of the CPUs, e.g. 0.05. Linux only.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write the JSON report to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--plot", "plot_file", type=click.Path(path_type=str), default=None,
              help="Also draw the ratios as bars into this .png, .svg or .pdf file (needs the plot extra).")
@handle_errors
def bench(cells, sizes, backends, peers, tasks, repeats, warmup, sample_tokens, baseline, seed, max_background,
          as_json, markdown, output, quiet, plot_file) -> None:
    """Measure tokens/s of a training step, a forward pass and batch-1 sampling.

    The network is language-model shaped (embedding → recurrent → linear → cross-entropy); the
    training step is forward, BPTT, clipping by global norm and Adam. Every configuration runs
    in a fresh process (peak memory is that process's maximum resident size) with warm-up and
    repeats; the table shows medians, min–max and the ratio to the baseline.

    \b
    Examples:
      mlxrnn bench                              # numpy, all cells, sizes ref and large
      mlxrnn bench --peers --sizes ref          # side by side with PyTorch CPU
      mlxrnn bench --backends mlx,mlx-compiled,mlx-autodiff --sizes small --peers
      mlxrnn bench --cells lstm --tasks train --json -o lstm.json
      mlxrnn bench --peers --sizes ref --plot ratios.png
    """
    if plot_file is not None:
        check_output_path(plot_file)  # before minutes of measuring
    if output:
        check_writable(output, "the report")  # before the benchmark, not after it has run for an hour
    impls = split_list(backends) if backends else _default_backends()
    notes = []
    if peers:
        impls.append("torch")
        if any(impl.startswith("mlx") for impl in impls):
            impls += ["mlx.nn", "mlx.nn-compiled"]
        else:
            notes.append("mlx.nn is the peer of the mlx backend: add --backends numpy,mlx to measure it")
    size_list = [part.strip() for part in sizes.split(";")] if "=" in sizes else split_list(sizes)
    settings = BenchSettings(
        cells=split_list(cells), sizes=size_list, impls=impls, tasks=split_list(tasks), repeats=repeats,
        warmup=warmup, sample_tokens=sample_tokens, baseline=baseline, seed=seed, max_background=max_background,
        extra_notes=notes,
    ).validate()  # a bad setting fails in one line before the report below
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    if progress is not None:  # the kernel first: a pinned old one halves every numpy row
        blas = blas_report()
        progress("NumPy's BLAS: " + ("; ".join(blas["blas"]) if blas["blas"] else "unknown (no threadpoolctl)"))
        if blas["blas_warning"]:
            progress(blas["blas_warning"])
    report = run_benchmarks(settings, progress=progress)
    if output:
        write_file_atomically(output, json.dumps(report, indent=2), what="the report")
    if as_json:
        echo_json(report)
    else:
        click.echo(format_table(report, markdown=markdown))
        click.echo()
        click.echo(format_summary(report))
    if plot_file is not None:
        finish(*draw(plot_file, lambda path: plot_bench_ratios(report, path)), "the ratios", as_json)
