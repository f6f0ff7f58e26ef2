"""``mlxrnn train``: train a character- or word-level language model on a text file."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlxrnn.errors import ConfigError, Interrupted, spell_fields
from mlxrnn.lm.evaluation import perplexity
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.option_files import read_options_file
from mlxrnn.training.distributed import init_distributed, launched

from .common import EXIT_INTERRUPTED, check_backend, echo_json, fail, handle_errors
from .options import (
    flags_of,
    given_settings,
    init_from_rule,
    options_from_flags,
    resume_rule,
    train_options,
    typed_parameters,
)
from .progress import ProgressBar


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (symlinks resolved)."""
    try:
        path, directory = path.resolve(), directory.resolve()
    except (OSError, RuntimeError):
        return False
    return path == directory or directory in path.parents


def _loss_text(loss: float | None, summary) -> str:
    """"1.2345 (1.781 bits/char)" or "4.5678 (perplexity 96.3 per token, whitespace tokenizer)"."""
    if loss is None:
        return "n/a"
    if summary.level == "char":
        return f"{loss:.4f} ({loss / 0.6931471805599453:.3f} bits/char)"
    return f"{loss:.4f} (perplexity {perplexity(loss):.2f} per token, {summary.tokenizer or 'words'} tokenizer)"


def _choose_threads(options):
    """Set the NumPy backend's BLAS threads for this run's per-step products and the machine's
    load (mlxrnn/backend/threads.py); a ThreadGovernor that keeps the choice up to date (its
    ``choice.describe()`` is the start line), or None on MLX."""
    from mlxrnn.backend import get_backend
    from mlxrnn.backend.threads import ThreadGovernor, recurrent_step_flops, threads_for_recurrent_loop
    from mlxrnn.nn.cells import make_cell

    if get_backend(options.backend).name != "numpy":
        return None
    gates = make_cell(options.cell, 1, 1, **options.cell_options).num_gates
    choice = threads_for_recurrent_loop(options.batch_size, options.hidden, gates)
    return ThreadGovernor(recurrent_step_flops(options.batch_size, options.hidden, gates), choice)


def _governed(progress, governor, log):
    """``progress`` that first lets the governor look at the load, logging a changed thread count."""
    if governor is None or governor.choice.blas is None:
        return progress

    def report(p) -> None:
        changed = governor.tick()
        if changed is not None and log is not None:
            log(changed.describe())
        progress(p)

    return report


def default_run_dir(level: str, cell: str) -> str:
    return str(Path("runs") / f"{level}-{cell}-{time.strftime('%Y%m%d-%H%M%S')}")


@click.command()
@train_options  # CORPUS and one flag per TrainOptions field (mlxrnn/run/options.py), in declaration order
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
@click.option("--resume", is_flag=True, help=resume_rule())
@click.option(
    "--init-from",
    "init_from",
    type=click.Path(path_type=str),
    default=None,
    metavar="RUN",
    help=init_from_rule(),
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=str, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Read settings from FILE: a run's options.json, or JSON (TOML on Python 3.11+) with settings by name "
    "(hidden = 256, val_frac = 0.05, peephole = true). Flags typed on the command line override it.",
)
@click.option("--force", is_flag=True, help="Replace an existing run in --out.")
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
def train(distributed, run_dir, resume, init_from, config_file, force, sample_length, quiet, as_json, **settings):
    """Train a language model on CORPUS (default: the bundled tiny-shakespeare), a text file or a
    directory that `mlxrnn prepare` wrote (memory-mapped token ids).

    Checkpoints (best and last), options and a JSON-lines metrics log go to the run
    directory. Ctrl-C saves a checkpoint; --resume continues from it exactly.

    \b
    Examples:
      mlxrnn train --minutes 2 --out runs/shakespeare
      mlxrnn train my_text.txt --level word --cell gru --hidden 256 --epochs 5
      mlxrnn train train.txt --valid valid.txt --test test.txt --tokenizer whitespace --dropout 0.5
      mlxrnn train --resume --out runs/shakespeare --minutes 10 --lr 1e-3
      mlxrnn train other.txt --init-from runs/shakespeare --out runs/other --steps 500
      mlxrnn train --config runs/shakespeare/options.json --hidden 256 --out runs/smaller
      mlxrnn train big.txt --tokenizer bpe --vocab-size 8192 --out runs/bpe
      mlxrnn prepare big.txt --out data/big && mlxrnn train data/big --out runs/big
    """
    if resume and force:
        raise click.UsageError("--resume and --force contradict each other; pick one")
    if resume and init_from:
        raise click.UsageError("--resume continues a run and --init-from starts a new one; pick one")
    if resume and run_dir is None:
        raise click.UsageError("--resume needs --out RUN_DIR (the run to continue)")
    if sample_length < 0:
        raise click.UsageError(f"--sample-length must be >= 0 (0: no sample), got {sample_length}")
    typed = typed_parameters(click.get_current_context())
    config = read_options_file(config_file) if config_file else {}
    continuing = resume or init_from is not None
    options = options_from_flags(settings, typed, config, continuing=continuing)
    given = given_settings(typed, config)
    for label, path in (("CORPUS", options.corpus), ("--valid", options.valid), ("--test", options.test)):
        if force and path and run_dir and _inside(Path(path), Path(run_dir)):
            raise click.UsageError(f"{label} {path} is inside --out {run_dir}, which --force would empty; move it")
    check_backend(options.backend)
    if not resume:  # resuming takes the saved options; bad flags fail before anything is printed
        options.validate()
    if run_dir == "":  # not the default: an empty path would mean the current directory
        raise ConfigError("`run_dir` is empty; name the directory of the run")
    run_dir = run_dir if run_dir is not None else default_run_dir(options.level, options.cell)
    dist = init_distributed() if distributed or launched() else None
    main = dist is None or dist.is_main  # data-parallel: rank 0 alone prints
    quiet = quiet or not main
    bar = ProgressBar(enabled=not quiet)
    flags = flags_of(click.get_current_context().command)
    # The run's log lines name settings by field (`min_lr`), as its errors do: show them as flags.
    log = (lambda message: click.echo(spell_fields(message, flags), err=True)) if not quiet else None
    governor = _choose_threads(options)  # before any work: the load measured is the other processes'
    if not quiet:
        click.echo(f"run directory: {run_dir}", err=True)
        if governor is not None:
            click.echo(governor.choice.describe(), err=True)
        if dist is not None:
            click.echo(
                f"data-parallel over {dist.size} processes (--batch-size streams each); rank 0 prints and writes"
                if dist.size > 1
                else "--distributed: this is the only process (start several with mlx.launch); training as usual",
                err=True,
            )
    try:
        summary = train_language_model(
            options,
            run_dir,
            resume=resume,
            force=force,
            progress=_governed(bar, governor, log),
            log=log,
            distributed=dist,
            init_from=init_from,
            given=given,
        )
    except Interrupted as stop:
        bar.close()
        if main:
            try:
                click.echo(spell_fields(str(stop), flags), err=True)
            except OSError:  # after SIGHUP the terminal may be gone; the exit status still says what happened
                pass
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
        click.echo(
            f"{spell_fields(summary.stopped_because, flags)} after {summary.steps} steps, "
            f"{summary.elapsed_seconds / 60:.1f} min, {summary.tokens_per_second:,.0f} tok/s; "
            f"best validation loss {_loss_text(summary.best_val_loss, summary)}"
        )
        if summary.test_loss is not None:
            click.echo(f"test loss (best checkpoint) {_loss_text(summary.test_loss, summary)}")
        click.echo(f"checkpoints in {summary.run_dir} (sample: mlxrnn sample {summary.run_dir})")
    if sample_length and not as_json:
        from mlxrnn.lm.model import load_language_model
        from mlxrnn.lm.sampling import sample

        try:
            lm, _ = load_language_model(summary.run_dir, backend=options.backend)
            click.echo("--- sample ---")
            sample(lm, length=sample_length, seed=options.seed, on_token=lambda i, text: click.echo(text, nl=False),
                   keep=False)
        except KeyboardInterrupt:
            click.echo(err=True)
            fail(f"sample interrupted; the run is complete and saved in {summary.run_dir}", EXIT_INTERRUPTED)
        click.echo()
