"""One meaning per setting: `mlxrnn train FLAGS` and `train_language_model(**settings)` with the
same given settings hand the run the same TrainOptions, every field compared.

Both are caught where the run would begin (the run class is replaced by a recorder), so what is
compared is exactly what a run would train with, after every default that depends on other
settings (the level from the tokenizer, the dropout sites, the learning-rate floor) is resolved.
"""

from __future__ import annotations

from dataclasses import fields

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

import mlxrnn.run.loop as loop
from mlxrnn.run.option_declarations import full_cell_options
from mlxrnn.run.options import TrainOptions


class _Started(Exception):
    """Raised by the recorder in place of a run: the options have been seen."""


@pytest.fixture
def recorded(monkeypatch):
    seen: list[TrainOptions] = []

    class Recorder:
        def __init__(self, options, run_dir, **kwargs):
            seen.append(options)
            raise _Started

    monkeypatch.setattr(loop, "LanguageModelRun", Recorder)
    return seen


#: (the given settings by field name, the same on the command line)
CASES = [
    ({"dropout": 0.5}, ["--dropout", "0.5"]),
    ({"tokenizer": "whitespace"}, ["--tokenizer", "whitespace"]),
    ({"level": "word"}, ["--level", "word"]),
    ({"tokenizer": "words", "lowercase": True, "dropout": 0.3, "embed_dropout": 0.1},
     ["--tokenizer", "words", "--lowercase", "--dropout", "0.3", "--embed-dropout", "0.1"]),
    ({"optimizer": "sgd", "lr": 20.0, "clip": 0.25}, ["--optimizer", "sgd", "--lr", "20", "--clip", "0.25"]),
    ({"lr": 1e-3, "min_lr": 0.0, "output_dropout": 0.4}, ["--lr", "0.001", "--min-lr", "0", "--output-dropout", "0.4"]),
    ({"clip": 0, "hidden": 64, "embed": 0, "seq_len": 16, "batch_size": 4, "steps": 3},
     ["--clip", "0", "--hidden", "64", "--embed", "0", "--seq-len", "16", "--batch-size", "4", "--steps", "3"]),
    ({"cell": "gru", "cell_options": {"variant": "reset_after"}, "tie": True, "hidden": 32, "embed": 32},
     ["--cell", "gru", "--gru-variant", "reset_after", "--tie", "--hidden", "32", "--embed", "32"]),
    ({}, []),
]


def _compare(from_cli: TrainOptions, from_python: TrainOptions) -> None:
    for spec in fields(TrainOptions):
        cli_value, python_value = getattr(from_cli, spec.name), getattr(from_python, spec.name)
        if spec.name == "cell_options":  # the CLI spells out the cell's defaults; the meaning is compared
            cli_value = full_cell_options(from_cli.cell, cli_value)
            python_value = full_cell_options(from_python.cell, python_value)
        assert cli_value == python_value, f"`{spec.name}`: CLI {cli_value!r}, Python {python_value!r}"


@pytest.mark.parametrize("settings,argv", CASES, ids=[" ".join(argv) or "defaults" for _, argv in CASES])
def test_cli_and_python_resolve_every_field_alike(recorded, tmp_path, settings, argv):
    corpus = str(tmp_path / "text.txt")
    result = CliRunner().invoke(cli, ["train", corpus, *argv, "--out", str(tmp_path / "cli"), "--quiet"])
    assert isinstance(result.exception, _Started), result.output
    with pytest.raises(_Started):
        loop.train_language_model(corpus=corpus, run_dir=tmp_path / "python", **settings)
    from_cli, from_python = recorded
    _compare(from_cli, from_python)


def test_dropout_given_in_python_acts_at_all_three_places(recorded, tmp_path):
    with pytest.raises(_Started):
        loop.train_language_model(run_dir=tmp_path, dropout=0.5)
    options = recorded[0]
    assert (options.embed_dropout, options.dropout, options.output_dropout) == (0.5, 0.5, 0.5)


def test_the_level_follows_the_tokenizer_in_python(recorded, tmp_path):
    with pytest.raises(_Started):
        loop.train_language_model(run_dir=tmp_path, tokenizer="whitespace")
    assert recorded[0].level == "word"
    assert recorded[0].validate() is recorded[0]


def test_settings_over_given_options_re_resolve_what_was_not_given():
    """Options passed whole keep what they set; the defaults derived from the others follow the new settings."""
    base = TrainOptions(tokenizer="whitespace", lr=1.0, dropout=0.4)
    changed = TrainOptions.with_settings(base, {"lr": 0.5, "tokenizer": "chars"})
    assert (changed.level, changed.min_lr) == ("char", 0.005)  # derived: re-resolved
    assert (changed.dropout, changed.embed_dropout, changed.output_dropout) == (0.4, 0.4, 0.4)  # given: kept
    kept = TrainOptions.with_settings(TrainOptions(embed_dropout=0.1, min_lr=0.0), {"dropout": 0.3, "lr": 1.0})
    assert (kept.embed_dropout, kept.output_dropout, kept.min_lr) == (0.1, 0.3, 0.0)
    word = TrainOptions.with_settings(TrainOptions(level="word"), {"hidden": 8})
    assert (word.level, word.tokenizer) == ("word", "words")
