"""Reliability, round three (issue 28): settings files and metrics logs are untrusted input.

* ``--config`` reads through the regular-file and size checks: a FIFO or a link to /dev/zero is
  one line, never a hang or a read until memory runs out (item 3);
* ``mlxrnn plot`` reads ``metrics.jsonl`` the same way (item 4);
* ``--config`` nested 100,000 deep (JSON or TOML) is one line, not a RecursionError (item 5);
* ``mlxrnn plot`` on records with null, text or huge numbers where numbers belong, and a start
  record with nonsense options: the bad records are skipped and counted in one line, the rest is
  summarised and drawn (item 6);
* nested ``cell_options`` values are type-checked as the flags are (item 11);
* a fuzz of both: random JSON values in every field of a metrics log and of a settings file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from mlxrnn_cli.main import cli
from mlxrnn_cli.plot import format_summary

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.nn.cells import CELLS, make_cell
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.metrics import read_run_metrics
from mlxrnn.run.option_files import read_options_file
from mlxrnn.run.option_types import option_fields
from mlxrnn.run.options import TrainOptions
from tests.reliability_support import FUZZ, JSON_VALUES, TINY, corpus
from tests.test_reliability_files import no_hang

__all__ = ["corpus"]  # a module fixture shared with test_reliability


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlxrnn")


def assert_one_line(result, code: int, *needles: str) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _special(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


# --------------------------------------------------------------------------------------------
# item 3: --config FIFO / /dev/zero


@pytest.mark.parametrize("kind", ["fifo", "dev zero"])
def test_a_special_settings_file_is_refused_without_reading_it(tmp_path, kind):
    path = _special(tmp_path / "settings.json", kind)
    with no_hang(20):
        with pytest.raises(DataError, match="not a regular file"):
            read_options_file(path)
        result = invoke("train", "--config", path, "--steps", "1", "--out", tmp_path / "run")
    assert_one_line(result, 1, str(path), "not a regular file")
    assert not (tmp_path / "run").exists()


def test_a_huge_settings_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as handle:
        handle.truncate(2 << 30)  # sparse: reading it would take 2 GB of memory
    with pytest.raises(DataError, match="more than"):
        read_options_file(path)


# --------------------------------------------------------------------------------------------
# item 5: nested 100,000 deep


@pytest.mark.parametrize("suffix, text", [
    (".json", '{"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    (".json", "[" * 100_000 + "]" * 100_000),
    (".json", '{"a": ' * 100_000 + "1" + "}" * 100_000),
    (".toml", "hidden = " + "[" * 100_000 + "]" * 100_000 + "\n"),
    (".toml", "hidden = " + "{a = " * 100_000 + "1" + "}" * 100_000 + "\n"),
])
def test_deeply_nested_settings_are_one_line(tmp_path, suffix, text):
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match="nested"):
        read_options_file(path)
    assert_one_line(invoke("train", "--config", path, "--out", tmp_path / "run"), 2, str(path))


def test_a_moderately_nested_value_is_named_briefly(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"hidden": json.loads("[" * 500 + "]" * 500), "lr": "x" * 100_000}))
    with pytest.raises(ConfigError) as error:
        read_options_file(path)
    assert "`hidden` must be an integer" in str(error.value) and len(str(error.value)) < 300


# --------------------------------------------------------------------------------------------
# item 11: nested values are type-checked


NESTED_CASES = [
    ({"cell": "lstm", "cell_options": {"peephole": "no"}}, "peephole", "true or false"),
    ({"cell": "lstm", "peephole": "no"}, "peephole", "true or false"),
    ({"cell": "lstm", "cell_options": {"peephole": 1}}, "peephole", "true or false"),
    ({"cell": "lstm", "cell_options": {"forget_bias": "big"}}, "forget_bias", "a number"),
    ({"cell": "lstm", "cell_options": {"forget_bias": True}}, "forget_bias", "a number"),
    ({"cell": "rnn", "cell_options": {"activation": 3}}, "activation", "a string"),
    ({"cell": "gru", "cell_options": {"variant": ["full"]}}, "variant", "a string"),
    ({"cell": "gru", "cell_options": {"nonsense": 1}}, "nonsense", "not an option"),
    ({"cell_options": ["peephole"]}, "cell_options", "a table"),
]


@pytest.mark.parametrize("settings, name, says", NESTED_CASES)
def test_nested_cell_options_are_type_checked_like_flags(tmp_path, settings, name, says):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=name) as error:
        read_options_file(path)
    assert says in str(error.value)
    result = invoke("train", "--config", path, "--steps", "1", "--out", tmp_path / "run")
    assert_one_line(result, 2, name)
    assert not (tmp_path / "run").exists()


def test_the_library_type_checks_cell_options_too(tmp_path, corpus):
    for options in ({"peephole": "no"}, {"forget_bias": "1"}, {"peephole": None}):
        with pytest.raises(ConfigError, match="cell_options"):
            train_language_model(TrainOptions(corpus=str(corpus), cell="lstm", cell_options=options, steps=1,
                                              backend="numpy", **TINY), tmp_path / "run")
    with pytest.raises(ConfigError, match="peephole"):
        make_cell("lstm", 4, 4, peephole="no")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# item 4: plot reads metrics.jsonl through the same checks


@pytest.mark.parametrize("kind", ["fifo", "dev zero"])
def test_plot_refuses_a_special_metrics_file(tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    _special(run / "metrics.jsonl", kind)
    with no_hang(20):
        with pytest.raises(DataError, match="not a regular file"):
            read_run_metrics(run)
        assert_one_line(invoke("plot", run), 1, "metrics.jsonl", "not a regular file")


# --------------------------------------------------------------------------------------------
# item 6: bad records are skipped and counted, the rest drawn


def _log(run: Path, records: list) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return run


START = {"event": "start", "step": 0, "options": {"cell": "lstm", "level": "char", "clip": 5.0}, "backend": "numpy"}
TRAIN = [{"event": "train", "step": s, "loss": 3.0 - s / 10, "grad_norm": 1.0, "clip_rate": 0.0, "lr": 0.002,
          "tokens_per_second": 100.0, "elapsed": float(s)} for s in (1, 2, 3, 4)]
EVALS = [{"event": "eval", "step": s, "val_loss": 2.9 - s / 10, "val_bpc": 4.0, "val_perplexity": 18.0, "lr": 0.002,
          "elapsed": float(s)} for s in (2, 4)]

BAD_RECORDS = {
    "val_loss null": [START, *TRAIN, {**EVALS[0], "val_loss": None}],
    "val_loss text": [START, *TRAIN, {**EVALS[0], "val_loss": "low"}, {**EVALS[1], "val_loss": "lower"}],
    "step null": [START, {**TRAIN[0], "step": None}, *TRAIN[1:], *EVALS],
    "step 1e400": [START, *TRAIN, '{"event": "eval", "step": 1e400, "val_loss": 2.0}'],
    "step -1e400": [START, '{"event": "train", "step": -1e400, "loss": 2.0}', *TRAIN],
    "step text": [START, *TRAIN, {**EVALS[1], "step": "four"}],
    "clip text": [{**START, "options": {"cell": "lstm", "clip": "big", "level": "char"}}, *TRAIN, *EVALS],
    "clip negative": [{**START, "options": {"cell": "lstm", "clip": -1, "level": ["char"]}}, *TRAIN, *EVALS],
    "options a list": [{**START, "options": [1, 2], "backend": {"a": 1}}, *TRAIN, *EVALS],
    "every eval bad": [START, *TRAIN, {**EVALS[0], "val_loss": None}, {**EVALS[1], "val_loss": math.inf}],
    "only bad train records": [START, {**TRAIN[0], "step": None}, {**TRAIN[1], "loss": "x"}],
    "stopped_because a dict": [START, *TRAIN, {"event": "end", "stopped_because": {"a": [1]}}],
    "layers a list": [{**START, "options": {"layers": [2], "hidden": {"x": 1}, "cell": None}}, *TRAIN],
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_plot_summarises_what_it_can_of_bad_records(tmp_path, case):
    run = _log(tmp_path / "run", BAD_RECORDS[case])
    metrics = read_run_metrics(run)
    text = format_summary(metrics)
    assert text.startswith("run")
    summary = metrics.summary()
    json.dumps(summary)  # what --json prints
    assert all(isinstance(step, float) and math.isfinite(step) and step >= 0 for step in metrics.train["step"])
    assert all(isinstance(step, float) and math.isfinite(step) and step >= 0 for step in metrics.evals["step"])
    result = invoke("plot", run)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert invoke("plot", run, "--json").exit_code == 0


def test_bad_records_are_counted_in_one_line_and_the_rest_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    records = [r for case in ("val_loss null", "step null", "step 1e400", "clip text") for r in BAD_RECORDS[case]]
    run = _log(tmp_path / "run", records)
    result = invoke("plot", run, "--out", tmp_path / "curves.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "curves.png").stat().st_size > 0
    notes = [line for line in result.output.splitlines() if "skipped" in line]
    assert len(notes) == 1 and "3 " in notes[0], result.output  # step null, step 1e400 and val_loss null
    metrics = read_run_metrics(run)
    assert metrics.clip is None and metrics.summary()["best_val_loss"] == EVALS[1]["val_loss"]


# --------------------------------------------------------------------------------------------
# fuzz: random JSON values in every field


RECORDS = [START, *TRAIN, *EVALS, {"event": "end", "stopped_because": "step limit reached", "steps": 4}]
FIELDS = [(i, key) for i, record in enumerate(RECORDS) for key in record]
OPTION_FIELDS = ["cell", "level", "clip", "layers", "hidden"]
HOSTILE = st.sampled_from([None, "x", "", 1e308, -1e308, 0, -1, 2**70, True, [], {}, [1.5], {"a": None}])
TEXT_NUMBERS = st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1e-400"])


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES | HOSTILE | TEXT_NUMBERS.map(lambda t: ("raw", t))),
                      min_size=1, max_size=6),
       option_edits=st.lists(st.tuples(st.sampled_from(OPTION_FIELDS), JSON_VALUES | HOSTILE), max_size=3))
def test_fuzz_metrics_records(edits, option_edits):
    records = [dict(record) for record in RECORDS]
    records[0]["options"] = dict(START["options"])
    raw = {}
    for (index, key), value in edits:
        if isinstance(value, tuple):
            raw[(index, key)] = value[1]  # a number JSON can write but Python's float cannot hold
            records[index][key] = "@RAW@"
        else:
            records[index][key] = copy.deepcopy(value)  # never the same object in two places
    for key, value in option_edits:
        if isinstance(records[0].get("options"), dict):
            records[0]["options"][key] = copy.deepcopy(value)
    lines = []
    for index, record in enumerate(records):
        line = json.dumps(record)
        for (i, key), text in raw.items():
            if i == index and record.get(key) == "@RAW@":
                line = line.replace('"@RAW@"', text, 1)
        lines.append(line)
    with tempfile.TemporaryDirectory() as directory:
        run = Path(directory) / "run"
        _log(run, lines)
        try:
            metrics = read_run_metrics(run)
        except DataError as error:  # only when no record at all is left
            assert "holds no metrics" in str(error)
            return
        for table in (metrics.train, metrics.evals):
            steps = table["step"]
            assert ((steps >= 0) & (steps < math.inf)).all()
            assert all(len(column) == len(steps) for column in table.values())
        summary = metrics.summary()
        json.dumps(summary)
        assert isinstance(format_summary(metrics), str)
        assert metrics.clip is None or (isinstance(metrics.clip, float) and metrics.clip > 0)
        if "best_val_loss" in summary:
            assert math.isfinite(summary["best_val_loss"])
        if "last_step" in summary:
            assert isinstance(summary["last_step"], int)


CELL_OPTION_TYPES = {"peephole": bool, "forget_bias": (int, float), "variant": str, "activation": str}
SETTING_NAMES = [spec.name for spec in option_fields()] + ["peephole", "variant", "activation", "forget_bias",
                                                            "val-frac", "nonsense"]


@FUZZ
@given(settings=st.dictionaries(st.sampled_from(SETTING_NAMES), JSON_VALUES | HOSTILE, max_size=6),
       nested=st.none() | st.dictionaries(st.sampled_from(["peephole", "variant", "activation", "forget_bias", "x"]),
                                          JSON_VALUES | HOSTILE, max_size=3),
       wrapped=st.booleans(), toml=st.booleans())
def test_fuzz_settings_files(settings, nested, wrapped, toml):
    doc = dict(settings)
    if nested is not None:
        doc["cell_options"] = nested
    if wrapped:
        doc = {"options": doc, "vocab_size": 10}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / ("settings.toml" if toml else "settings.json")
        if toml:
            tomli_w = pytest.importorskip("tomllib") and _toml(doc)
            if tomli_w is None:
                return
            path.write_text(tomli_w)
        else:
            path.write_text(json.dumps(doc))
        try:
            read = read_options_file(path)
        except (ConfigError, DataError) as error:
            assert "\n" not in str(error) and str(path) in str(error)
            return
    specs = {spec.name: spec for spec in option_fields()}
    for name, value in read.items():
        assert name in specs
        if name == "cell_options":  # every value of the type its cells take, as the flags give them
            assert isinstance(value, dict)
            for option, item in value.items():
                assert option in CELL_OPTION_TYPES, option
                assert isinstance(item, CELL_OPTION_TYPES[option]) and (
                    option == "peephole" or not isinstance(item, bool)), (option, item)
    try:
        options = TrainOptions(**read).validate()
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    if options.cell in CELLS:
        try:
            make_cell(options.cell, 4, 4, **options.cell_options)
        except ConfigError as error:
            assert "not an option" in str(error) or "unknown option" in str(error)


def _toml(doc) -> str | None:
    """A small TOML writer for the fuzz (None: a value TOML cannot hold, such as null)."""
    def value(v):
        if v is None:
            raise ValueError
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + "}"

    try:
        return "".join(f"{json.dumps(str(k))} = {value(v)}\n" for k, v in doc.items())
    except ValueError:
        return None
