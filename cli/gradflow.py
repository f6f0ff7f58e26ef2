"""``mlxrnn gradflow``: how far back the last step's loss gradient reaches, per cell or per run."""

from __future__ import annotations

import click

from mlxrnn.errors import ConfigError
from mlxrnn.lm.gradflow import DEFAULT_CELLS, compare_fresh_cells, run_gradient_flow
from mlxrnn.models.gradflow import GradientFlow
from mlxrnn.nn.cells import CELLS
from mlxrnn.plot import check_output_path
from mlxrnn.plot.gradflow import plot_gradient_flow
from mlxrnn.run.metrics import unique_names
from mlxrnn.text.corpus import bundled_corpus_path, read_text

from .common import check_backend, echo_json, handle_errors
from .options import encoding_errors_option
from .plot import draw, finish

#: steps before the loss shown in the text table (those beyond the sequence are left out)
TABLE_STEPS = (0, 1, 5, 10, 20, 30, 40, 50, 100, 200)


def format_table(flows: dict[str, GradientFlow]) -> str:
    """Median ‖∂ℓ/∂h‖ (top layer) and ‖∂ℓ/∂x‖ at a few distances from the loss, and mean gate saturation."""
    T = next(iter(flows.values())).time_steps
    steps = [k for k in TABLE_STEPS if k < T] + ([T - 1] if T - 1 not in TABLE_STEPS else [])
    width = max(len(label) for label in flows) + 2
    lines = ["steps before the loss".ljust(width + 6) + "".join(f"{k:>10d}" for k in steps)]
    for label, flow in flows.items():
        hidden, inputs = flow.median_hidden()[-1][::-1], flow.median_input()[::-1]  # index = steps before
        lines.append(f"{label:<{width}}‖∂h‖  " + "".join(f"{hidden[k]:>10.2e}" for k in steps))
        lines.append(f"{'':<{width}}‖∂x‖  " + "".join(f"{inputs[k]:>10.2e}" for k in steps))
    lines.append("")
    lines.append(f"loss at the last step only, median over {next(iter(flows.values())).hidden_norms.shape[2]} "
                 "sequences; h of the top layer, x the embedded input")
    for label, flow in flows.items():
        if flow.saturation:
            shares = ", ".join(f"{gate} {values[-1].mean():.1%}" for gate, values in flow.saturation.items())
            lines.append(f"{label}: saturated gates (< 0.05 or > 0.95), mean over steps: {shares}")
    return "\n".join(lines)


@click.command("gradflow")
@click.option("--run", "runs", multiple=True, type=click.Path(path_type=str),
              help="A trained run directory (repeat to compare); without it, fresh models of --cells.")
@click.option("--cells", default=",".join(DEFAULT_CELLS), show_default=True,
              help=f"Fresh models to compare, comma-separated: {', '.join(CELLS)}.")
@click.option("--hidden", type=int, default=128, show_default=True, help="Fresh models: hidden units per layer.")
@click.option("--layers", type=int, default=1, show_default=True, help="Fresh models: stacked layers.")
@click.option("--embed", type=int, default=64, show_default=True, help="Fresh models: embedding size.")
@click.option("--seq-len", type=int, default=50, show_default=True, help="Time steps the gradient flows back.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Windows of text in the batch.")
@click.option("--text", type=click.Path(path_type=str), default=None,
              help="Text the windows are cut from. [default: the bundled tiny-shakespeare]")
@encoding_errors_option
@click.option("--checkpoint", "tag", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of a --run to use.")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the windows and the fresh weights.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "mlx"]), default="auto", show_default=True)
@click.option("--out", "-o", type=click.Path(path_type=str), default=None,
              help="Write the figure to this .png, .svg or .pdf file (needs the plot extra).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-step numbers as JSON.")
@handle_errors
def gradflow_command(runs, cells, hidden, layers, embed, seq_len, batch_size, text, encoding_errors, tag, seed,
                     backend, out, as_json) -> None:
    """Gradient of the last step's loss with respect to every earlier hidden state and input.

    The course notes' vanishing-gradient argument, measured by the layers' own backward: for a
    vanilla RNN ‖∂loss/∂h⟨t⟩‖ falls geometrically with the distance from the loss, for GRU and
    LSTM it falls far less. Also shows the share of saturated sigmoid gates per step.

    \b
    Examples:
      mlxrnn gradflow                                  # fresh RNN, GRU and LSTM side by side
      mlxrnn gradflow --seq-len 100 --out gradflow.png
      mlxrnn gradflow --run runs/shakespeare --json
    """
    check_backend(backend)
    if out is not None:
        check_output_path(out)
    if seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {seed}")
    cell_names = [name.strip() for name in cells.split(",") if name.strip()]
    unknown = [name for name in cell_names if name not in CELLS]
    if unknown or not cell_names:
        raise ConfigError(f"--cells takes a comma-separated list of {', '.join(CELLS)}; got {cells!r}")
    corpus = read_text(text or bundled_corpus_path(), errors=encoding_errors)
    if runs:
        flows = {name: run_gradient_flow(run, corpus, seq_len=seq_len, batch_size=batch_size, seed=seed,
                                         backend=backend, tag=tag)
                 for run, name in zip(runs, unique_names(list(runs)))}
        flows = {f"{name} ({flow.cell})": flow for name, flow in flows.items()}
    else:
        flows = compare_fresh_cells(corpus, cell_names, hidden_size=hidden, num_layers=layers, embed_size=embed,
                                    seq_len=seq_len, batch_size=batch_size, seed=seed, backend=backend)
    figure = problem = None
    if out is not None:
        figure, problem = draw(out, lambda path: plot_gradient_flow(flows, path))
    if as_json:
        settings = {"seq_len": seq_len, "batch_size": batch_size, "seed": seed, "text": text or "tiny-shakespeare",
                    "runs": list(runs)} if runs else {"cells": cell_names, "hidden": hidden, "layers": layers,
                                                      "embed": embed, "seq_len": seq_len, "batch_size": batch_size,
                                                      "seed": seed, "text": text or "tiny-shakespeare"}
        echo_json({"settings": settings, "models": {label: flow.to_dict() for label, flow in flows.items()},
                   "figure": figure})
    else:
        click.echo(format_table(flows))
    finish(figure, problem, "the figure", as_json)
