"""The word recipe's pieces: evaluating at each epoch's end (`eval_every` "epoch"), from Python,
the command line and a settings file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.errors import ConfigError
from mlxrnn.run.loop import train_language_model
from mlxrnn.run.options import TrainOptions

SMALL = dict(tokenizer="whitespace", hidden=8, embed=8, layers=1, batch_size=2, seq_len=5, backend="numpy", seed=0)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("the king is here\nthe queen is there and the crown too\n" * 12, encoding="utf-8")
    return path


def _evaluated_steps(run_dir) -> list[int]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["event"] == "eval"]


def test_eval_every_epoch_validates_at_each_epoch_end(corpus, tmp_path):
    records: list[dict] = []
    train_language_model(corpus=str(corpus), run_dir=tmp_path / "run", eval_every="epoch", epochs=3,
                         metrics=records.append, **SMALL)
    per_epoch = next(r["steps_per_epoch"] for r in records if r["event"] == "start")
    assert per_epoch > 1 and _evaluated_steps(tmp_path / "run") == [per_epoch, 2 * per_epoch, 3 * per_epoch]


def test_eval_every_epoch_on_the_command_line_and_in_a_settings_file(corpus, tmp_path):
    flags = ["--tokenizer", "whitespace", "--hidden", "8", "--embed", "8", "--layers", "1", "--batch-size", "2",
             "--seq-len", "5", "--backend", "numpy", "--epochs", "2", "--sample-length", "0", "--quiet"]
    result = CliRunner().invoke(cli, ["train", str(corpus), *flags, "--eval-every", "epoch", "--out",
                                      str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "cli" / "options.json").read_text())["options"]
    assert saved["eval_every"] == "epoch" and len(_evaluated_steps(tmp_path / "cli")) == 2
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"eval_every": "epoch"}), encoding="utf-8")
    from_file = CliRunner().invoke(cli, ["train", str(corpus), *flags, "--config", str(settings), "--out",
                                         str(tmp_path / "file")])
    assert from_file.exit_code == 0, from_file.output
    assert json.loads((tmp_path / "file" / "options.json").read_text())["options"]["eval_every"] == "epoch"
    numbers = CliRunner().invoke(cli, ["train", str(corpus), *flags, "--eval-every", "3", "--out",
                                       str(tmp_path / "steps")])
    assert numbers.exit_code == 0, numbers.output
    assert _evaluated_steps(tmp_path / "steps")[:2] == [3, 6]


@pytest.mark.parametrize("value", ["week", 0, -2, 1.5, True])
def test_other_words_and_counts_are_refused_naming_the_setting(value):
    with pytest.raises(ConfigError, match=r"`eval_every` must be an integer >= 1 or 'epoch'"):
        TrainOptions(eval_every=value).validate()


def test_the_cli_refuses_a_wrong_word_naming_the_flag(corpus, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(corpus), "--eval-every", "week", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0 and "--eval-every must be an integer >= 1 or 'epoch', got 'week'" in result.output
