"""``mlxrnn bench --plot``: the report's speed ratios as bars, one panel per task.

Each bar is an implementation's median tokens/s over the baseline's on the same cell, size and
task (the ``ratio`` of the report); the whisker spans ``ratio_min``–``ratio_max``, the extremes
of both spreads. The y axis is logarithmic, so 2× faster and 2× slower are the same height from
the baseline's line at 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mlxrnn.errors import DataError
from mlxrnn.plot import require_matplotlib, save_figure

_TICKS = (0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100)
_TASK_TITLES = {"train": "training step", "forward": "forward pass", "sample": "sampling at batch 1"}


def ratio_rows(report: dict) -> list[dict]:
    """The rows the chart draws: those with a ratio, the baseline's own (all 1) left out."""
    baseline = report.get("settings", {}).get("baseline")
    return [row for row in report.get("results", []) if "ratio" in row and row.get("impl") != baseline]


def plot_bench_ratios(report: dict, path: str | os.PathLike[str]) -> Path:
    """Draw the ratios of a ``run_benchmarks`` report (or its JSON) and write the chart to ``path``.

    Raises DataError when the report has no ratios (a single implementation, or no baseline measured).
    """
    rows = ratio_rows(report)
    baseline = report.get("settings", {}).get("baseline")
    if not rows:
        raise DataError(
            "the benchmark report has no ratios to draw: measure at least two implementations "
            "(e.g. --peers, or --backends numpy,mlx) so one can be the baseline"
        )
    plt = require_matplotlib()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    tasks = [task for task in _TASK_TITLES if any(row["task"] == task for row in rows)]
    tasks += sorted({row["task"] for row in rows} - set(tasks))
    impls = list(dict.fromkeys(row["impl"] for row in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks) + 0.6, 4.2), layout="constrained",
                                squeeze=False)
    for ax, task in zip(axes[0], tasks):
        task_rows = [row for row in rows if row["task"] == task]
        groups = list(dict.fromkeys((row["cell"], row["size"]) for row in task_rows))
        width, extremes = 0.8 / len(impls), []
        for k, impl in enumerate(impls):
            by_group = {(r["cell"], r["size"]): r for r in task_rows if r["impl"] == impl}
            positions = [g + (k - (len(impls) - 1) / 2) * width for g, key in enumerate(groups) if key in by_group]
            chosen = [by_group[key] for key in groups if key in by_group]
            if not chosen:
                continue
            ratio = np.array([r["ratio"] for r in chosen])
            low = np.array([r.get("ratio_min", r["ratio"]) for r in chosen])
            high = np.array([r.get("ratio_max", r["ratio"]) for r in chosen])
            # Bars grow from the baseline's 1×, up when faster and down when slower.
            ax.bar(positions, ratio - 1.0, bottom=1.0, width=width * 0.92, color=colors[k % len(colors)],
                   label=impl, yerr=np.vstack([ratio - low, high - ratio]), capsize=2, error_kw={"linewidth": 0.8})
            for x, value, lo, hi in zip(positions, ratio, low, high):
                up = value >= 1.0
                ax.annotate(f"{value:.2f}", (x, hi if up else lo), xytext=(0, 2 if up else -2),
                            textcoords="offset points", ha="center", va="bottom" if up else "top", fontsize="x-small")
            extremes += [*low, *high]
        ax.axhline(1.0, color="0.2", linewidth=1)
        ax.set_xticks(range(len(groups)), [f"{cell}\n{size}" for cell, size in groups])
        ax.set_yscale("log")
        bottom, top = min(min(extremes), 1.0) / 1.25, max(max(extremes), 1.0) * 1.25
        ax.set_ylim(bottom, top)
        ax.yaxis.set_major_locator(FixedLocator([t for t in _TICKS if bottom <= t <= top]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(_TASK_TITLES.get(task, task))
        ax.grid(True, axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"tokens/s ÷ {baseline}'s (median; whisker: min–max)")
    axes[0][0].legend(fontsize="small")
    machine = report.get("machine", {})
    where = f" on {machine['cpu']}, {machine['cores']} cores" if machine.get("cpu") else ""
    figure.suptitle(f"Speed relative to {baseline} (line at 1×){where}")
    return save_figure(figure, path)
