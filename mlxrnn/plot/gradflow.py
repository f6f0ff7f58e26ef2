"""The gradient-flow figure: how much of the last step's loss gradient reaches each earlier step.

Left: the batch median of ‖∂ℓ/∂h⟨t⟩‖ of the top layer (lower layers dashed) against the number
of steps between t and the loss, on a log scale: a straight falling line is geometric decay.
Middle: the same for the input ‖∂ℓ/∂x⟨t⟩‖. Right: the share of each sigmoid gate's values
that are saturated (< 0.05 or > 0.95) at each step, for the gated cells.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mlxrnn.models.gradflow import SATURATION_HIGH, SATURATION_LOW, GradientFlow
from mlxrnn.plot import require_matplotlib, save_figure

_GATE_STYLES = {"u": "-", "f": "--", "o": ":", "r": "-."}
_GATE_NAMES = {"u": "update", "f": "forget", "o": "output", "r": "reset"}


def _positive(values: np.ndarray) -> np.ndarray:
    """Zeros (e.g. a ReLU cell's dead units) cannot sit on a log axis: leave a gap instead."""
    return np.where(values > 0, values, np.nan)


def plot_gradient_flow(
    flows: Mapping[str, GradientFlow], path: str | os.PathLike[str], title: str | None = None
) -> Path:
    """Draw one line per labelled :class:`GradientFlow` in each panel and write the figure to ``path``."""
    plt = require_matplotlib()
    gated = any(flow.saturation for flow in flows.values())
    columns = 3 if gated else 2
    figure, axes = plt.subplots(1, columns, figsize=(4.6 * columns, 4.2), layout="constrained")
    hidden_ax, input_ax = axes[0], axes[1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, flow) in enumerate(flows.items()):
        color = colors[index % len(colors)]
        back = flow.steps_before_loss()
        medians = flow.median_hidden()
        layers = medians.shape[0]
        for layer in range(layers):
            top = layer == layers - 1
            hidden_ax.plot(back, _positive(medians[layer]), color=color, linestyle="-" if top else "--",
                           linewidth=1.8 if top else 1, label=label if top else f"{label}, layer {layer + 1}")
        input_ax.plot(back, _positive(flow.median_input()), color=color, label=label)
        if gated:
            for gate, values in flow.saturation.items():
                axes[2].plot(back, values[-1], color=color, linestyle=_GATE_STYLES.get(gate, "-"),
                             label=f"{label}: {_GATE_NAMES.get(gate, gate)} gate")
    hidden_ax.set(title="‖∂loss/∂h⟨t⟩‖ (median over the batch)", yscale="log")
    input_ax.set(title="‖∂loss/∂x⟨t⟩‖ (median over the batch)", yscale="log")
    hidden_ax.legend(fontsize="small")
    if gated:
        axes[2].set(title=f"Saturated gates (< {SATURATION_LOW} or > {SATURATION_HIGH}), top layer",
                    ylabel="share of gate values", ylim=(-0.02, 1.02))
        axes[2].legend(fontsize="x-small", ncol=1)
    for ax in axes:
        ax.set_xlabel("steps between t and the loss (loss on the last step)")
        ax.grid(True, which="major", alpha=0.3)
    any_flow = next(iter(flows.values()))
    batch = any_flow.hidden_norms.shape[2]
    figure.suptitle(title or f"Gradient flow through time ({any_flow.time_steps} steps, batch of {batch})")
    return save_figure(figure, path)
