"""``mlxrnn train``: train a character- or word-level language model on a text file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlxrnn.lm.run import SCHEDULES, Interrupted, TrainOptions, train_language_model
from mlxrnn.nn.cells import CELLS, cell_option_names
from mlxrnn.training.distributed import init_distributed, launched

from .common import EXIT_INTERRUPTED, check_backend, echo_json, encoding_errors_option, fail, handle_errors
from .progress import ProgressBar


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (symlinks resolved)."""
    try:
        path, directory = path.resolve(), directory.resolve()
    except (OSError, RuntimeError):
        return False
    return path == directory or directory in path.parents


def default_run_dir(level: str, cell: str) -> str:
    return str(Path("runs") / f"{level}-{cell}-{time.strftime('%Y%m%d-%H%M%S')}")


@click.command()
@click.argument("corpus", required=False, type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--level",
    type=click.Choice(["char", "word"]),
    default="char",
    show_default=True,
    help="Tokens are characters or words (word models add <EOS> at each line end).",
)
@click.option("--lowercase", is_flag=True, help="Word models: lowercase the text first.")
@click.option(
    "--max-vocab",
    type=int,
    default=None,
    help="Word models: keep only the most frequent tokens (specials included); the rest become <UNK>.",
)
@click.option("--min-count", type=int, default=1, show_default=True, help="Drop tokens seen fewer times (→ <UNK>).")
@click.option("--cell", type=click.Choice(list(CELLS)), default="lstm", show_default=True, help="Recurrent cell.")
@click.option(
    "--activation",
    type=click.Choice(["tanh", "relu"]),
    default="tanh",
    show_default=True,
    help="Vanilla RNN activation.",
)
@click.option(
    "--gru-variant",
    type=click.Choice(["full", "reset_after", "simple"]),
    default="full",
    show_default=True,
    help="GRU form: the notes' full GRU, PyTorch's reset-after, or update-gate only.",
)
@click.option("--peephole", is_flag=True, help="LSTM: add peephole connections.")
@click.option("--layers", type=int, default=2, show_default=True, help="Stacked recurrent layers.")
@click.option("--hidden", type=int, default=512, show_default=True, help="Hidden units per layer.")
@click.option("--embed", type=int, default=128, show_default=True, help="Embedding size (0: one-hot inputs).")
@click.option("--dropout", type=float, default=0.2, show_default=True, help="Dropout between layers.")
@click.option("--tie", is_flag=True, help="Tie input and output embeddings (needs --embed = --hidden).")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Steps of truncated BPTT per window.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Parallel streams per step.")
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]), default="adam", show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--clip", type=float, default=5.0, show_default=True, help="Clip the global gradient norm (0: off).")
@click.option("--epochs", type=float, default=None, help="Stop after this many epochs (default 1 if no limit given).")
@click.option("--steps", type=int, default=None, help="Stop after this many steps.")
@click.option("--minutes", type=float, default=None, help="Stop after this much wall-clock time.")
@click.option(
    "--val-frac", type=float, default=0.1, show_default=True, help="Last fraction of the text kept for validation."
)
@click.option("--eval-every", type=int, default=200, show_default=True, help="Validate (and checkpoint) every N steps.")
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default="plateau",
    show_default=True,
    help="Learning-rate schedule: decay on validation plateau, cosine, or constant.",
)
@click.option("--lr-decay", type=float, default=0.5, show_default=True, help="Plateau decay factor.")
@click.option("--patience", type=int, default=None, help="Early stopping: evaluations without improvement.")
@click.option("--backend", type=click.Choice(["auto", "numpy", "mlx"]), default="auto", show_default=True)
@click.option("--compile/--no-compile", "compile_step", default=True, show_default=True,
              help="MLX: train through the compiled step; --no-compile runs the eager one (for debugging).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, dropout and sampling.")
@click.option(
    "--distributed",
    is_flag=True,
    help="Data-parallel training over the processes mlx.launch started (on by itself under mlx.launch): "
    "--batch-size streams each, gradients averaged every step, rank 0 prints and writes.",
)
@click.option(
    "--out",
    "run_dir",
    type=click.Path(path_type=str),
    default=None,
    help="Run directory (default: runs/LEVEL-CELL-TIMESTAMP).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing run in --out.")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of CORPUS.")
@encoding_errors_option
@click.option(
    "--sample-length",
    type=int,
    default=200,
    show_default=True,
    help="Print a sample of this many tokens when training ends (0: none).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@handle_errors
def train(
    corpus,
    level,
    lowercase,
    max_vocab,
    min_count,
    cell,
    activation,
    gru_variant,
    peephole,
    layers,
    hidden,
    embed,
    dropout,
    tie,
    seq_len,
    batch_size,
    lr,
    optimizer,
    weight_decay,
    clip,
    epochs,
    steps,
    minutes,
    val_frac,
    eval_every,
    schedule,
    lr_decay,
    patience,
    backend,
    compile_step,
    seed,
    distributed,
    run_dir,
    resume,
    force,
    encoding,
    encoding_errors,
    sample_length,
    quiet,
    as_json,
):
    """Train a language model on CORPUS (default: the bundled tiny-shakespeare).

    Checkpoints (best and last), options and a JSON-lines metrics log go to the run
    directory. Ctrl-C saves a checkpoint; --resume continues from it exactly.

    \b
    Examples:
      mlxrnn train --minutes 2 --out runs/shakespeare
      mlxrnn train my_text.txt --level word --cell gru --hidden 256 --epochs 5
      mlxrnn train --resume --out runs/shakespeare --minutes 10
    """
    if resume and force:
        raise click.UsageError("--resume and --force contradict each other; pick one")
    if resume and run_dir is None:
        raise click.UsageError("--resume needs --out RUN_DIR (the run to continue)")
    if sample_length < 0:
        raise click.UsageError(f"--sample-length must be >= 0 (0: no sample), got {sample_length}")
    if force and corpus and run_dir and _inside(Path(corpus), Path(run_dir)):
        raise click.UsageError(f"CORPUS {corpus} is inside --out {run_dir}, which --force would empty; move it")
    check_backend(backend)
    # Each cell takes the flags its constructor names; the others keep their defaults unused.
    flag_values = {"activation": activation, "variant": gru_variant, "peephole": peephole}
    cell_options = {name: flag_values[name] for name in cell_option_names(cell) if name in flag_values}
    options = TrainOptions(
        corpus=corpus,
        encoding=encoding,
        encoding_errors=encoding_errors,
        level=level,
        lowercase=lowercase,
        max_vocab=max_vocab,
        min_count=min_count,
        cell=cell,
        cell_options=cell_options,
        layers=layers,
        hidden=hidden,
        embed=embed,
        dropout=dropout,
        tie=tie,
        seq_len=seq_len,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        clip=clip or None,
        epochs=epochs,
        steps=steps,
        minutes=minutes,
        val_frac=val_frac,
        eval_every=eval_every,
        schedule=schedule,
        lr_decay=lr_decay,
        patience=patience,
        backend=backend,
        compile=compile_step,
        seed=seed,
    )
    if not resume:  # resuming takes the saved options; bad flags fail before anything is printed
        options.validate()
    run_dir = run_dir or default_run_dir(level, cell)
    dist = init_distributed() if distributed or launched() else None
    main = dist is None or dist.is_main  # data-parallel: rank 0 alone prints
    quiet = quiet or not main
    bar = ProgressBar(enabled=not quiet)
    log = (lambda message: click.echo(message, err=True)) if not quiet else None
    if not quiet:
        click.echo(f"run directory: {run_dir}", err=True)
        if dist is not None:
            click.echo(
                f"data-parallel over {dist.size} processes (--batch-size streams each); rank 0 prints and writes"
                if dist.size > 1
                else "--distributed: this is the only process (start several with mlx.launch); training as usual",
                err=True,
            )
    try:
        summary = train_language_model(
            options, run_dir, resume=resume, force=force, progress=bar, log=log, distributed=dist
        )
    except Interrupted as stop:
        bar.close()
        if main:
            click.echo(str(stop), err=True)
        sys.exit(128 + stop.signal_number)
    except KeyboardInterrupt:  # Ctrl-C while setting up, or a second one: stopped at once
        bar.close()
        click.echo(err=True)
        fail(
            f"interrupted: stopped at once without saving; the last checkpoint in {run_dir}, if any, is intact "
            f"(continue it with: mlxrnn train --resume --out {run_dir})",
            EXIT_INTERRUPTED,
        )
    finally:
        bar.close()
    if not main:
        return
    if as_json:
        echo_json(summary.to_dict())
    else:
        best = summary.best_val_loss
        extra = f" ({best / 0.6931471805599453:.3f} bits/char)" if level == "char" and best is not None else ""
        click.echo(
            f"{summary.stopped_because} after {summary.steps} steps, {summary.elapsed_seconds / 60:.1f} min, "
            f"{summary.tokens_per_second:,.0f} tok/s; best validation loss {best:.4f}{extra}"
        )
        click.echo(f"checkpoints in {summary.run_dir} (sample: mlxrnn sample {summary.run_dir})")
    if sample_length and not as_json:
        from mlxrnn.lm.model import load_language_model
        from mlxrnn.lm.sampling import sample

        try:
            lm, _ = load_language_model(summary.run_dir, backend=backend)
            click.echo("--- sample ---")
            sample(lm, length=sample_length, seed=seed, on_token=lambda i, text: click.echo(text, nl=False))
        except KeyboardInterrupt:
            click.echo(err=True)
            fail(f"sample interrupted; the run is complete and saved in {summary.run_dir}", EXIT_INTERRUPTED)
        click.echo()
