"""Honest unknown words: when the training text never produced <UNK>, the run says so at the start
(with the fix), and `eval` and `score` say that the out-of-vocabulary tokens were expensive, not
"easier to predict"."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.lm.evaluation import UNKNOWN_IN_TRAINING, unknown_scoring_note
from mlxrnn.run.data import untrained_unknown_note
from mlxrnn.run.loop import train_language_model

SMALL = dict(level="word", tokenizer="whitespace", hidden=8, embed=8, layers=1, batch_size=2, seq_len=4, steps=2, eval_every=2,
             backend="numpy", seed=0)
#: every training word twice or more: without a cut nothing becomes <UNK>
TRAIN = "the king is here\nthe queen is there\n" * 20
#: one rare word (``crown``) that `min_count` 2 turns into <UNK>
RARE = TRAIN + "the crown\n"
VALID = "the zebra is here\nthe queen is there\n" * 3


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, text in (("train", TRAIN), ("rare", RARE), ("valid", VALID), ("test", "a zebra and a lion\n")):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def _train(files, run_dir, corpus="train", **settings) -> list[str]:
    lines: list[str] = []
    train_language_model(corpus=str(files[corpus]), valid=str(files["valid"]), test=str(files["test"]),
                         run_dir=run_dir, log=lines.append, **SMALL, **settings)
    return [line for line in lines if "<UNK>" in line]


def test_a_run_whose_training_text_never_produced_unk_says_so_once_with_the_fix(files, tmp_path):
    (line,) = _train(files, tmp_path / "run")
    assert "never produced <UNK>" in line and "`min_count` 2" in line and "`max_vocab`" in line
    assert "validation 3 of 30 (10.0%)" in line and "test 5 of 6 (83.3%)" in line  # zebra ×3; a, zebra, and, a, lion


def test_no_such_line_when_training_teaches_unk(files, tmp_path):
    assert _train(files, tmp_path / "cut", corpus="rare", min_count=2) == []


def test_the_cli_shows_the_fix_as_flags(files, tmp_path):
    result = CliRunner().invoke(cli, [
        "train", str(files["train"]), "--valid", str(files["valid"]), "--tokenizer", "whitespace", "--hidden", "8",
        "--embed", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "4", "--steps", "2", "--backend",
        "numpy", "--sample-length", "0", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "never produced <UNK>" in result.stderr and "--min-count 2" in result.stderr


def test_eval_and_score_say_plainly_when_unk_was_never_trained(files, tmp_path):
    _train(files, tmp_path / "run")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("the zebra is here\n", encoding="utf-8")
    for command in (["eval", tmp_path / "run", held_out], ["score", tmp_path / "run", "the zebra is here"]):
        result = CliRunner().invoke(cli, [str(part) for part in command] + ["--backend", "numpy"])
        assert result.exit_code == 0, result.output
        assert "easier to predict" not in result.stdout
        assert "never saw in training" in result.stdout and "--min-count 2" in result.stdout, result.stdout


def test_eval_says_what_a_trained_unk_means(files, tmp_path):
    _train(files, tmp_path / "cut", corpus="rare", min_count=2)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("the zebra is here\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "cut"), str(held_out), "--backend", "numpy"])
    assert result.exit_code == 0, result.output
    assert "learned from 1 training tokens" in result.stdout and "never saw" not in result.stdout


def test_the_notes_cover_every_case():
    assert untrained_unknown_note(0, {"validation": (0, 10)}) is None  # nothing unknown: nothing to say
    assert untrained_unknown_note(5, {"validation": (3, 10)}) is None  # <UNK> trained
    assert "validation 3 of 10 (30.0%)" in untrained_unknown_note(0, {"validation": (3, 10), "test": (0, 4)})
    assert "does not record" in unknown_scoring_note({})  # a model saved without a run
    assert "never saw" in unknown_scoring_note({UNKNOWN_IN_TRAINING: 0})
    assert "learned from 7" in unknown_scoring_note({UNKNOWN_IN_TRAINING: 7})
