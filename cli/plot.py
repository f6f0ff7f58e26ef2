"""``mlxrnn plot``: training curves of one or more runs, as a figure and a text summary.

The summary is always printed (it needs nothing but the run's ``metrics.jsonl``); the figure is
drawn when ``--out`` names a file and matplotlib (the ``plot`` extra) is installed. Without it the
summary still prints and a one-line error says how to install it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np

from mlxrnn.errors import MissingExtra
from mlxrnn.plot import INSTALL_HINT, check_output_path
from mlxrnn.plot.curves import plot_training_curves
from mlxrnn.run.metrics import RunMetrics, read_run_metrics, unique_names

from .common import EXIT_ERROR, echo_json, fail, handle_errors

_SPARKS = "▁▂▃▄▅▆▇█"


def matplotlib_missing() -> bool:
    return importlib.util.find_spec("matplotlib") is None


def draw(out: str, drawer: Callable[[Path], Path]) -> tuple[str | None, str | None]:
    """Run ``drawer(path)``: (the written path, None), or (None, the install hint) without matplotlib."""
    try:
        return str(drawer(Path(out))), None
    except MissingExtra as error:
        return None, str(error)


def finish(figure: str | None, problem: str | None, what: str, as_json: bool) -> None:
    """The closing line shared by the drawing commands: where the figure went, or why not."""
    if problem:
        fail(f"{problem} (the summary above needs nothing extra)", EXIT_ERROR)
    if figure and not as_json:
        click.echo(f"wrote {figure}")
    elif not figure and not as_json:
        hint = f"; {INSTALL_HINT}" if matplotlib_missing() else ""
        click.echo(f"(draw {what}: --out FILE.png or .svg{hint})")


def sparkline(values: np.ndarray, width: int = 24) -> str:
    """A one-line picture of a curve: at most ``width`` blocks, low to high as ▁ to █."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return ""
    if len(values) > width:  # evenly spaced points, first and last included
        values = values[np.linspace(0, len(values) - 1, width).round().astype(int)]
    low, high = values.min(), values.max()
    scaled = np.zeros(len(values), int) if high == low else ((values - low) / (high - low) * 7).round().astype(int)
    return "".join(_SPARKS[i] for i in scaled)


def _fmt(value, spec: str = ".4f") -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_summary(run: RunMetrics) -> str:
    """A few lines per run with the summary's numbers (the figure's data, in words)."""
    s = run.summary()
    status = s["status"] + (f": {s['stopped_because']}" if s["stopped_because"] and s["status"] == "finished" else "")
    status = "still training (or stopped without a closing record)" if s["status"] == "running" else status
    lines = [f"{s['name']}  [{status}]  {s['model']}, {s['level']}, {s['backend'] or '?'}"]
    if "last_train_loss" in s:
        lines.append(f"  step {s['last_step']} · {_fmt(s['minutes'], '.1f')} min · "
                     f"{_fmt(s['tokens_per_second'], ',.0f')} tokens/s · last train loss {_fmt(s['last_train_loss'])}  "
                     f"{sparkline(run.train['loss'])}")
        clip = f", clip {run.clip:g}" if run.clip else ", no clipping"
        lines.append(f"  lr {_fmt(s['lr_first'], '.3g')} → {_fmt(s['lr_last'], '.3g')} · grad norm median "
                     f"{_fmt(s['grad_norm_median'], '.3g')} (max {_fmt(s['grad_norm_max'], '.3g')}{clip}) · "
                     f"clipped {s['clip_rate']:.0%} of steps")
    else:
        lines.append("  no training step logged yet")
    if "best_val_loss" in s:
        secondary = (f"{_fmt(s['best_val_bpc'], '.3f')} bits/char" if s["level"] == "char"
                     else f"perplexity {_fmt(s['best_val_perplexity'], '.1f')}")
        lines.append(f"  validation: best {_fmt(s['best_val_loss'])} nats ({secondary}) at step {s['best_val_step']}, "
                     f"last {_fmt(s['last_val_loss'])}  {sparkline(run.evals['val_loss'])}")
    skipped = []
    if s["skipped_lines"]:
        skipped.append(f"{s['skipped_lines']} unreadable line(s) of metrics.jsonl skipped, e.g. one being written")
    if s["bad_records"]:
        skipped.append(f"{s['bad_records']} record(s) of metrics.jsonl with a missing or bad step or loss skipped")
    if skipped:
        lines.append(f"  ({'; '.join(skipped)})")
    return "\n".join(lines)


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--x", "x_axis", type=click.Choice(["step", "minutes"]), default="step", show_default=True,
              help="Horizontal axis: training steps or training minutes.")
@click.option("--out", "-o", type=click.Path(path_type=str), default=None,
              help="Write the figure to this .png, .svg or .pdf file (needs the plot extra).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def plot_command(runs, x_axis, out, as_json) -> None:
    """Training curves of RUN directories, overlaid: loss, validation bits/char (or perplexity),
    learning rate, gradient norm, clip rate and throughput.

    Reads each run's metrics.jsonl, also while `mlxrnn train` is still writing it. Prints a
    short summary per run; draws the figure with --out (pip install 'mlxrnn[plot]').

    \b
    Examples:
      mlxrnn plot runs/shakespeare
      mlxrnn plot runs/lstm runs/gru --x minutes --out curves.png
      mlxrnn plot runs/shakespeare --json
    """
    if out is not None:
        check_output_path(out)  # a bad name fails before anything is read
    names = unique_names(list(runs))
    metrics = [read_run_metrics(path, name=name) for path, name in zip(runs, names)]
    figure = problem = None
    if out is not None:
        figure, problem = draw(out, lambda path: plot_training_curves(metrics, path, x=x_axis))
    if as_json:
        echo_json({"runs": [run.summary() for run in metrics], "figure": figure})
    else:
        click.echo("\n".join(format_summary(run) for run in metrics))
    finish(figure, problem, "these curves", as_json)
