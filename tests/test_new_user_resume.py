"""What a new user trips on when training (issue 27, sections 1 and 2): resume from anywhere,
say when there is nothing to train, budgets without Python's None; the start-up line and the
warnings about weak settings; perplexity in word-model evaluation lines; an ETA that waits for
a few steps; messages that name the flags."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

import mlxrnn

TINY = ["--layers", "1", "--hidden", "12", "--embed", "8", "--seq-len", "8", "--batch-size", "4",
        "--dropout", "0", "--backend", "numpy", "--tokenizer", "whitespace", "--sample-length", "0"]
SMALL = dict(layers=1, hidden=12, embed=8, seq_len=8, batch_size=4, dropout=0.0, backend="numpy")


def _words(seed: int, lines: int) -> str:
    rng = random.Random(seed)
    words = "the a cat dog sat ran on in mat log big red".split()
    return "".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "\n" for _ in range(lines))


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    """A user's project: data/{train,valid,test}.txt, commands run from its top directory."""
    data = tmp_path / "data"
    data.mkdir()
    for name, seed, lines in (("train", 1, 300), ("valid", 2, 60), ("test", 3, 60)):
        (data / f"{name}.txt").write_text(_words(seed, lines), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train(*args: str):
    return CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)


def _started(project: Path, steps: int = 4, *extra: str):
    result = _train("data/train.txt", "--valid", "data/valid.txt", "--test", "data/test.txt", "--out",
                    "data/runs/words", "--steps", str(steps), "--eval-every", "2", *TINY, *extra)
    assert result.exit_code == 0, result.output
    return result


# --- 1. resume that keeps working ---------------------------------------------------------------
def test_every_file_path_is_stored_absolute(project):
    _started(project)
    saved = json.loads((project / "data/runs/words/options.json").read_text())["options"]
    for name, file in (("corpus", "train"), ("valid", "valid"), ("test", "test")):
        assert Path(saved[name]).is_absolute() and Path(saved[name]) == project / f"data/{file}.txt", name


def test_resume_from_another_directory_finds_valid_and_test(project, monkeypatch):
    _started(project)
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = _train("--resume", "--out", "../data/runs/words", "--steps", "6")
    assert result.exit_code == 0, result.output
    assert "step limit reached after 6 steps" in result.stdout


def test_the_same_valid_file_under_another_path_is_accepted_another_text_refused(project):
    _started(project)
    result = _train("--resume", "--out", "data/runs/words", "--valid", "./data/../data/valid.txt", "--steps", "6")
    assert result.exit_code == 0, result.output
    copy = project / "moved_valid.txt"
    copy.write_text((project / "data/valid.txt").read_text())
    result = _train("--resume", "--out", "data/runs/words", "--valid", str(copy), "--steps", "8")
    assert result.exit_code == 0, result.output
    other = project / "other_valid.txt"
    other.write_text(_words(9, 60))
    result = _train("--resume", "--out", "data/runs/words", "--valid", str(other), "--steps", "10")
    assert result.exit_code != 0
    assert "--valid" in result.stderr and "sha256" in result.stderr and "Traceback" not in result.output


def test_a_finished_run_resumed_without_a_new_budget_says_so_and_fails(project):
    _started(project)
    result = _train("--resume", "--out", "data/runs/words")
    assert result.exit_code != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "nothing to train" in line and "--steps" in line and "4" in line, line
    assert "0 tok/s" not in result.output


def test_a_new_budget_is_shown_without_python_none(project):
    _started(project)
    result = _train("--resume", "--out", "data/runs/words", "--epochs", "2")
    assert result.exit_code == 0, result.output
    resumed = next(line for line in result.stderr.splitlines() if line.startswith("resuming"))
    assert "None" not in resumed and "2.0" not in resumed, resumed
    assert "--epochs no epoch limit → 2" in resumed and "--steps 4 → no step limit" in resumed, resumed


# --- 2. say what is about to happen, warn about weak settings -------------------------------------
def test_the_start_line_is_printed_and_recorded(project):
    result = _started(project, 4)
    line = next(line for line in result.stderr.splitlines() if line.startswith("training "))
    for part in ("word-level", "whitespace tokenizer", "vocabulary", "parameters", "steps per epoch",
                 "4 steps", "evaluat", "numpy backend", "kernels", "BLAS thread"):
        assert part in line, (part, line)
    records = [json.loads(text) for text in (project / "data/runs/words/metrics.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and start["plan"]["line"] == line
    for key in ("tokenizer", "level", "vocab_size", "parameters", "steps_per_epoch", "steps", "eval_every",
                "backend", "kernels", "blas_threads"):
        assert key in start["plan"], key


def test_a_character_model_on_a_word_corpus_is_visible_in_the_start_line(project):
    result = _train("data/train.txt", "--valid", "data/valid.txt", "--out", "runs/chars", "--steps", "2",
                    *[flag for flag in TINY if flag not in ("--tokenizer", "whitespace")])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stderr.splitlines() if line.startswith("training "))
    assert "char-level" in line and "chars tokenizer" in line


def test_weak_settings_are_warned_about_in_one_line_each(project):
    result = _train("data/train.txt", "--valid", "data/valid.txt", "--out", "runs/weak", "--steps", "3",
                    "--eval-every", "200", *TINY)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("3 steps" in line for line in warnings), warnings
    assert any("--eval-every 200" in line and "no evaluation before the end" in line for line in warnings), warnings
    long = _train("data/train.txt", "--valid", "data/valid.txt", "--out", "runs/long", "--epochs", "2",
                  *TINY, "--seq-len", "1000")
    assert long.exit_code == 0, long.output
    assert any("--seq-len 1000" in line and "one window per epoch" in line
               for line in long.stderr.splitlines() if line.startswith("warning:")), long.stderr


def test_word_model_evaluation_lines_show_perplexity():
    from mlxrnn_cli.progress import eval_line  # new in issue 27

    word = mlxrnn.Progress(10, 20, 0, 5.0, 100.0, 1.0, None, 0.01, val_loss=4.0, event="eval", level="word")
    assert "perplexity 54.60" in eval_line(word)
    char = mlxrnn.Progress(10, 20, 0, 2.0, 100.0, 1.0, None, 0.01, val_loss=1.0, event="eval", level="char")
    assert "bits/char" in eval_line(char)


def test_the_eta_waits_for_a_few_steps(project):
    seen = []
    mlxrnn.train_language_model(corpus="data/train.txt", valid="data/valid.txt", run_dir="runs/eta",
                                level="word", tokenizer="whitespace", steps=8, eval_every=100, progress=seen.append, **SMALL)
    train = [p for p in seen if p.event == "train"]
    assert [p.eta_seconds for p in train[:3]] == [None, None, None]
    assert all(p.eta_seconds is not None and p.eta_seconds >= 0 for p in train[4:7])


# --- 4. messages that name the flags ---------------------------------------------------------------
def test_tie_names_the_flags(project):
    result = _train("data/train.txt", "--tie", "--out", "runs/tie", *TINY, "--hidden", "16")
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "--embed 8" in line and "--hidden 16" in line and "tie_weights" not in line, line
