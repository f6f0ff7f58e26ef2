"""Training curves of runs (``mlxrnn plot``) and the quality benchmark's validation curve.

Six panels against steps or training minutes, every run in its own colour: loss (training as a
line, validation as markers), validation bits/char (perplexity when a run is word-level),
learning rate, gradient norm before clipping (with each run's ``--clip`` threshold dashed),
the share of steps that clipped, and throughput.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.plot import require_matplotlib, save_figure
from mlxrnn.run.metrics import RunMetrics

X_AXES = ("step", "minutes")


def plain_log_ticks(ax) -> None:
    """Label a log axis 0.5, 1, 2 instead of 5×10⁻¹, 10⁰, 2×10⁰ (plain numbers read faster)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # ticks even on a narrow range
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _x(run: RunMetrics, kind: str, axis: str) -> np.ndarray:
    if axis == "step":
        return (run.train if kind == "train" else run.evals)["step"]
    return run.train["elapsed"] / 60.0 if kind == "train" else run.eval_minutes()


def plot_training_curves(runs: Sequence[RunMetrics], path: str | os.PathLike[str], x: str = "step") -> Path:
    """Draw the runs' curves overlaid (six panels, see the module doc) and write them to ``path``."""
    if x not in X_AXES:
        raise ConfigError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    plt = require_matplotlib()
    figure, axes = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
    (loss_ax, quality_ax, lr_ax), (norm_ax, clip_ax, speed_ax) = axes
    all_char = all(run.level == "char" for run in runs)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, run in enumerate(runs):
        color = colors[index % len(colors)]
        train, evals = run.train, run.evals
        xt, xe = _x(run, "train", x), _x(run, "eval", x)
        label = f"{run.name} ({run.options.get('cell', '?')}, {run.status})"
        loss_ax.plot(xt, train["loss"], color=color, alpha=0.55, linewidth=1, label=f"{run.name} train")
        loss_ax.plot(xe, evals["val_loss"], "o-", color=color, markersize=3.5, label=f"{run.name} validation")
        secondary = evals["val_bpc"] if all_char else evals["val_perplexity"]
        quality_ax.plot(xe, secondary, "o-", color=color, markersize=3.5, label=label)
        lr_ax.plot(xt, train["lr"], color=color, label=run.name)
        norm_ax.plot(xt, train["grad_norm"], color=color, linewidth=1, label=run.name)
        if run.clip:
            norm_ax.axhline(run.clip, color=color, linestyle="--", linewidth=0.8, alpha=0.7)
        clip_ax.plot(xt, train["clip_rate"], color=color, linewidth=1, label=run.name)
        speed_ax.plot(xt, train["tokens_per_second"], color=color, linewidth=1, label=run.name)
    xlabel = "training step" if x == "step" else "training minutes (evaluations excluded)"
    loss_ax.set(title="Loss (nats per token)", ylabel="cross-entropy")
    quality_ax.set(title="Validation bits per character" if all_char else "Validation perplexity",
                   ylabel="bits/char" if all_char else "perplexity")
    if not all_char:
        quality_ax.set_yscale("log")
    lr_ax.set(title="Learning rate")
    lr_ax.set_ylim(bottom=0)  # a constant rate is a flat line, not noise around an offset
    norm_ax.set(title="Gradient norm before clipping (dashed: --clip)", yscale="log")
    plain_log_ticks(norm_ax)
    clip_ax.set(title="Share of steps clipped", ylim=(-0.03, 1.03))
    speed_ax.set(title="Throughput", ylabel="tokens/s")
    speed_ax.set_ylim(bottom=0)
    for ax in axes.flat:
        ax.set_xlabel(xlabel)
        ax.grid(True, which="major", alpha=0.3)
    loss_ax.legend(fontsize="small")
    quality_ax.legend(fontsize="small")
    figure.suptitle("Training curves" + (f": {runs[0].name}" if len(runs) == 1 else f" of {len(runs)} runs"))
    return save_figure(figure, path)


def plot_quality_curves(results: Sequence[dict], labels: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """The quality benchmark's validation curve(s) against wall-clock minutes, with the target.

    ``results`` are the JSON documents benchmarks/char_lm_quality.py writes (``curve``: a list of
    {step, minutes, val_loss, val_bpc, lr}; ``target_val_loss``); ``labels`` name them.
    """
    plt = require_matplotlib()
    figure, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained",
                                            gridspec_kw={"width_ratios": [2, 1]})
    target = None
    for result, label in zip(results, labels):
        curve = result.get("curve") or []
        minutes = [point["minutes"] for point in curve]
        best = result.get("best_val_loss")
        text = f"{label}: best {best:.4f}" if isinstance(best, (int, float)) else label
        loss_ax.plot(minutes, [point["val_loss"] for point in curve], "o-", markersize=4, label=text)
        lr_ax.plot(minutes, [point["lr"] for point in curve], "o-", markersize=3, label=label)
        target = result.get("target_val_loss", target)
    if target is not None:
        loss_ax.axhline(target, color="0.3", linestyle="--", linewidth=1, label=f"target {target}")
    secondary = loss_ax.secondary_yaxis("right", functions=(lambda v: v / math.log(2), lambda b: b * math.log(2)))
    secondary.set_ylabel("bits per character")
    loss_ax.set(title="Validation loss of the recommended character model", xlabel="wall-clock minutes",
                ylabel="nats per character")
    lr_ax.set(title="Learning rate", xlabel="wall-clock minutes")
    for ax in (loss_ax, lr_ax):
        ax.grid(True, alpha=0.3)
    loss_ax.legend(fontsize="small")
    return save_figure(figure, path)
