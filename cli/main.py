"""Entry point of the ``mlxrnn`` console script: a click group of subcommands."""

from __future__ import annotations

import click

import mlxrnn

from .info import info


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(mlxrnn.__version__, prog_name="mlxrnn")
def cli() -> None:
    """mlxrnn: train, sample and score recurrent language models on MLX or NumPy.

    \b
    Quick start:
      mlxrnn train --minutes 2          # a character model on the bundled tiny-shakespeare
      mlxrnn sample runs/latest         # text from it
      mlxrnn info                       # versions and which backend is used
    """


cli.add_command(info)

if __name__ == "__main__":
    cli()
