"""One vocabulary for options: each TrainOptions field is one flag, and a library error naming a
field reaches the user as that flag."""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import asdict, fields
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli
from mlxrnn_cli.options import CELL_FLAGS, flag_name, flags_of, options_from_flags
from mlxrnn_cli.train import train

from mlxrnn.errors import FIELD_REFERENCE, ConfigError, DataError
from mlxrnn.nn.cells import CELLS, cell_option_names
from mlxrnn.run.option_declarations import option_choices, option_default
from mlxrnn.run.option_types import option_fields
from mlxrnn.run.options import TrainOptions

ROOT = Path(__file__).resolve().parents[1]
#: the train command's own parameters: how to run, not what to train (not stored in options.json)
COMMAND_ONLY = {"distributed", "run_dir", "resume", "init_from", "config_file", "force", "sample_length", "quiet", "as_json"}
#: options.json keys of runs written before this vocabulary existed: they must keep resuming
SAVED_BEFORE = {
    "corpus", "encoding", "encoding_errors", "level", "lowercase", "max_vocab", "min_count", "cell", "cell_options",
    "layers", "hidden", "embed", "dropout", "tie", "seq_len", "batch_size", "lr", "optimizer", "weight_decay", "clip",
    "epochs", "steps", "minutes", "val_frac", "eval_every", "log_every", "schedule", "lr_decay", "patience",
    "backend", "seed",
}


def _params() -> dict[str, click.Parameter]:
    return {param.name: param for param in train.params}


def test_every_field_has_exactly_one_flag_and_every_flag_one_field():
    params = _params()
    assert len(params) == len(train.params)  # no two parameters share a name
    for spec in option_fields():
        if spec.metadata["argument"]:
            assert isinstance(params[spec.name], click.Argument), spec.name
        elif spec.metadata["flag"]:
            assert isinstance(params[spec.name], click.Option), spec.name
            assert params[spec.name].opts == [flag_name(spec.name)], spec.name
        else:  # cell_options: built from the cell flags
            assert spec.name == "cell_options" and spec.name not in params
    field_names = {spec.name for spec in option_fields()}
    for name in params:
        assert (name in field_names) ^ (name in CELL_FLAGS) ^ (name in COMMAND_ONLY), name
    assert set(CELL_FLAGS) <= set(params)
    flags = [flag for param in train.params for flag in param.opts if flag.startswith("--")]
    assert len(flags) == len(set(flags))


def test_cell_flags_are_options_of_registered_cells():
    offered = {name for cell in CELLS for name in cell_option_names(cell)}
    assert set(CELL_FLAGS) <= offered


def test_flags_default_to_the_fields_defaults_and_choices():
    params = _params()
    for spec in option_fields():
        if not spec.metadata["flag"]:
            continue
        param = params[spec.name]
        assert param.default == option_default(spec), spec.name
        choices = option_choices(spec)
        if choices is not None:
            assert list(param.type.choices) == list(choices), spec.name
    # Building the options from the flags' defaults gives the library's defaults (cell options aside).
    context = train.make_context("train", [])
    built = options_from_flags({k: v for k, v in context.params.items() if k not in COMMAND_ONLY})
    expected = TrainOptions(cell_options={"peephole": False})  # lstm's flag, at its default
    assert asdict(built) == asdict(expected)


def test_cell_flags_reach_only_the_cell_that_takes_them():
    for cell, flags, expected in [
        ("gru", ["--gru-variant", "simple", "--peephole"], {"variant": "simple"}),
        ("rnn", ["--activation", "relu"], {"activation": "relu"}),
        ("lstm", ["--peephole", "--activation", "relu"], {"peephole": True}),
    ]:
        context = train.make_context("train", ["--cell", cell, *flags])
        options = options_from_flags({k: v for k, v in context.params.items() if k not in COMMAND_ONLY})
        assert options.cell_options == expected


def test_saved_options_of_older_runs_still_load():
    assert SAVED_BEFORE <= {spec.name for spec in fields(TrainOptions)}
    with pytest.raises(ConfigError, match="settings this mlxrnn does not know"):
        TrainOptions.from_saved({"hidden": 8, "from_the_future": 1})


def test_model_settings_are_the_one_place_options_get_model_names():
    settings = TrainOptions(hidden=16, layers=3, embed=0, tie=True).model_settings()
    assert settings["hidden_size"] == 16 and settings["num_layers"] == 3
    assert settings["embed_size"] == 0 and settings["tie_weights"] is True
    assert "hidden" not in settings and "layers" not in settings


def _first_rejected(spec) -> tuple[object, ConfigError] | None:
    for value in (-1, 0, 3, 1e10, math.nan, "zz"):
        try:
            TrainOptions(**{spec.name: value}).validate()
        except ConfigError as error:
            return value, error
        except TypeError:  # e.g. comparing a string with a number: not this field's kind of bad value
            continue
    return None


@pytest.mark.parametrize("spec", [s for s in option_fields() if s.metadata["check"] or s.metadata["choices"]],
                         ids=lambda s: s.name)
def test_a_bad_value_is_refused_naming_the_field_and_shown_as_its_flag(spec):
    found = _first_rejected(spec)
    assert found is not None, f"{spec.name}: no bad value was refused"
    _, error = found
    assert error.field == spec.name and str(error).startswith(f"`{spec.name}` ")
    assert error.message_with(flags_of(train)).startswith(flag_name(spec.name) + " ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--val-frac", "0"], "Error: --val-frac must be in (0, 1), got 0.0"),
        (["--dropout", "1"], "Error: --dropout must be in [0, 1), got 1.0"),
        (["--max-vocab", "3"], "Error: --max-vocab must be at least 4 (the 3 special tokens and one word), got 3"),
        (["--embed", "-1"], "Error: --embed must be an integer >= 0, got -1"),
    ],
)
def test_library_errors_reach_the_user_as_flags(args, expected):
    result = CliRunner().invoke(cli, ["train", *args, "--quiet"], prog_name="mlxrnn")
    assert result.exit_code == 2
    assert result.stderr.strip() == expected


def test_run_directory_errors_name_the_out_flag(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a run")
    result = CliRunner().invoke(cli, ["train", "--steps", "1", "--out", str(blocker), "--quiet"], prog_name="mlxrnn")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: --out {blocker} is a file, not a directory; choose another path"


def test_error_handler_maps_each_parameter_of_the_running_command():
    @click.command()
    @click.option("--out", "run_dir")
    @click.option("--num-samples", "-n", type=int)
    @click.argument("corpus", required=False)
    def command(run_dir, num_samples, corpus):
        from mlxrnn_cli.common import handle_errors

        @handle_errors
        def body():
            raise DataError("no room in `run_dir`, lower `num_samples`, see `corpus`; `unknown_field` stays")

        body()

    result = CliRunner().invoke(command, [])
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: no room in --out, lower --num-samples, see CORPUS; `unknown_field` stays"


def test_help_names_flags_not_fields():
    result = CliRunner().invoke(cli, ["train", "--help"], prog_name="mlxrnn")
    assert result.exit_code == 0 and not FIELD_REFERENCE.search(result.output)
    assert "needs --embed = --hidden" in " ".join(result.output.split())


def test_errors_keep_their_field_through_pickling_and_construction():
    error = ConfigError("must be > 0, got 0", field="lr")
    assert str(error) == "`lr` must be > 0, got 0" and error.fields == ("lr",)
    assert ConfigError(*error.args).field == "lr"
    assert DataError("raise `val_frac` or shorten `seq_len`").fields == ("val_frac", "seq_len")
    assert ConfigError("no field here").field is None


def _raised_strings(path: Path) -> list[str]:
    """The messages of every ``raise`` statement and module-level constant; an f-string as one
    text with ``{}`` for its values."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Raise)]
    nodes += [n for n in tree.body if isinstance(n, ast.Assign)]
    pieces, inside_fstrings = [], set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in sub.values]
                pieces.append("".join(parts))
                inside_fstrings |= {id(v) for v in sub.values}
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and id(sub) not in inside_fstrings:
                pieces.append(sub.value)
    return pieces


@pytest.mark.parametrize("package", ["text", "lm", "run", "io", "training"])
def test_library_messages_name_fields_not_cli_flags(package):
    """The library does not know the CLI's flags; literal command lines to run are the exception."""
    offenders = []
    for path in sorted((ROOT / "mlxrnn" / package).rglob("*.py")):
        for piece in _raised_strings(path):
            if re.search(r"(?<![\w-])--[a-z]", piece) and not re.search(r"mlxrnn (train|prepare)|mlx\.launch", piece):
                offenders.append(f"{path.relative_to(ROOT)}: {piece!r}")
    assert not offenders, "\n".join(offenders)


def test_options_json_holds_the_field_names(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, hello there. " * 60, encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        ["train", str(corpus), "--steps", "1", "--layers", "1", "--hidden", "8", "--embed", "4", "--seq-len", "8",
         "--batch-size", "2", "--backend", "numpy", "--sample-length", "0", "--quiet", "--out", str(tmp_path / "r")],
        prog_name="mlxrnn",
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "options.json").read_text())["options"]
    assert set(saved) == {spec.name for spec in fields(TrainOptions)}
    assert saved["hidden"] == 8 and saved["clip"] == 5.0 and saved["cell_options"] == {"peephole": False}
