"""Python that does what the CLI does (issue 27, section 3): sample(sentences=), evaluate of a
path, save(overwrite=True), score in input order with its index, a run's test loss equal to
``mlxrnn eval`` of the same file, the everyday helpers at the top level; and ``mlxrnn sample``
on a directory that holds something else says what it holds."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

import mlxrnn
from mlxrnn import CheckpointError, ConfigError

SMALL = dict(layers=1, hidden=12, embed=8, seq_len=8, batch_size=4, dropout=0.0, backend="numpy")


def _words(seed: int, lines: int) -> str:
    rng = random.Random(seed)
    words = "the a cat dog sat ran on in mat log big red".split()
    return "".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 8))) + "\n" for _ in range(lines))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small word model trained with a test file: (summary, test file)."""
    data = tmp_path_factory.mktemp("data")
    for name, seed, lines in (("train", 1, 300), ("valid", 2, 60), ("test", 3, 50)):
        (data / f"{name}.txt").write_text(_words(seed, lines), encoding="utf-8")
    summary = mlxrnn.train_language_model(corpus=str(data / "train.txt"), valid=str(data / "valid.txt"),
                                          test=str(data / "test.txt"), level="word", tokenizer="whitespace", steps=12,
                                          eval_every=4, lr=0.02, run_dir=data / "run", **SMALL)
    return summary, data / "test.txt"


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_sample_takes_sentences_as_the_cli_does(run):
    lm = mlxrnn.load(run[0].run_dir)
    text = lm.sample(length=200, sentences=3, seed=4)
    printed = _cli("sample", run[0].run_dir, "--length", "200", "--sentences", "3", "--seed", "4")
    assert printed.exit_code == 0
    # the CLI streams each word with its space after it: the same text, but for spaces at line ends
    assert [line.rstrip() for line in printed.stdout[:-1].split("\n")] == text.split("\n")
    assert text.count("\n") >= 2  # past the first <EOS>, unlike the default one sentence


def test_evaluate_of_a_path_reads_the_file_and_refuses_a_missing_one(run, tmp_path, monkeypatch):
    lm = mlxrnn.load(run[0].run_dir)
    test_file = run[1]
    expected = lm.evaluate_file(test_file)
    assert lm.evaluate(test_file).to_dict() == expected.to_dict()  # a pathlib.Path
    monkeypatch.chdir(test_file.parent)
    assert lm.evaluate(test_file.name).to_dict() == expected.to_dict()  # an existing file's name
    with pytest.raises(ConfigError, match="looks like a file path") as info:
        lm.evaluate("data/missing.txt")
    assert "\n" not in str(info.value) and "evaluate_file" in str(info.value)
    assert lm.evaluate("the cat sat on the mat").num_tokens == 7  # text is still text


def test_save_overwrite_replaces_a_saved_model_and_nothing_else(run, tmp_path):
    lm = mlxrnn.load(run[0].run_dir)
    path = lm.save(tmp_path / "model")
    with pytest.raises(CheckpointError, match="overwrite=True"):
        lm.save(path)
    again = mlxrnn.load(run[0].run_dir, tag="last")
    assert again.save(path, overwrite=True) == path
    assert mlxrnn.load(path).sample(length=20, seed=1) == again.sample(length=20, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no sibling left behind
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "thesis.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a saved model"):
        lm.save(keep, overwrite=True)
    assert (keep / "thesis.txt").read_text() == "precious"
    classifier = mlxrnn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2, backend="numpy")
    classifier.save(tmp_path / "signs")
    classifier.save(tmp_path / "signs", overwrite=True)  # the README's block, run twice
    assert isinstance(mlxrnn.load(tmp_path / "signs"), mlxrnn.SequenceClassifier)


def test_score_keeps_input_order_with_an_index_and_sorts_on_request(run, tmp_path):
    run_dir = run[0].run_dir
    lines = tmp_path / "sentences.txt"
    lines.write_text("the cat sat\n\nred red red red red red\nthe dog ran on the mat\n", encoding="utf-8")
    result = _cli("score", run_dir, "--file", str(lines), "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["text"] for r in records] == ["the cat sat", "red red red red red red", "the dog ran on the mat"]
    assert [r["index"] for r in records] == [0, 1, 2] and [r["line"] for r in records] == [1, 3, 4]
    lm = mlxrnn.load(run_dir)
    ours = lm.score([r["text"] for r in records])
    assert [s.index for s in ours] == [0, 1, 2]
    assert [s.log_prob for s in ours] == [r["log_prob"] for r in records]
    ranked = json.loads(_cli("score", run_dir, "--file", str(lines), "--json", "--sort").stdout)
    assert [r["log_prob"] for r in ranked] == sorted((r["log_prob"] for r in records), reverse=True)
    text = _cli("score", run_dir, "the cat sat", "red red red red red red").stdout.splitlines()
    assert text[0].startswith("1.") and "'the cat sat'" in text[0] and "'red red" in text[1]


def test_the_runs_test_loss_is_what_eval_of_the_same_file_says(run):
    summary, test_file = run
    result = _cli("eval", summary.run_dir, str(test_file), "--json")
    assert result.exit_code == 0, result.output
    assert summary.test_loss == pytest.approx(json.loads(result.stdout)["loss"], rel=1e-9)


def test_pad_sequences_and_interop_are_at_the_top_level():
    ids, lengths = mlxrnn.pad_sequences([[1, 2, 3], [4]])
    assert ids.shape == (2, 3) and lengths.tolist() == [3, 1]
    for name in ("pad_sequences", "from_torch", "to_torch", "from_keras", "to_keras", "from_mlx_nn", "to_mlx_nn"):
        assert name in mlxrnn.__all__ and callable(getattr(mlxrnn, name)), name
    assert mlxrnn.from_torch is mlxrnn.interop.from_torch


def test_sample_on_a_classifier_directory_says_what_it_holds(tmp_path):
    model = mlxrnn.SequenceClassifier(input_size=3, hidden_size=4, num_classes=2, backend="numpy")
    model.save(tmp_path / "signs")
    result = _cli("sample", str(tmp_path / "signs"))
    assert result.exit_code != 0
    line = result.stderr.strip().splitlines()[-1]
    assert "SequenceClassifier" in line and "mlxrnn.load" in line and "mlxrnn train" in line, line


def test_the_readmes_python_block_runs_again_over_its_own_output(tmp_path, monkeypatch, capsys):
    from tests.test_readme import _python_block

    monkeypatch.chdir(tmp_path)  # it writes runs/ where it runs
    first = mlxrnn.SequenceModel(input_kind="dense", input_size=1, hidden_size=16, output="last", output_size=1,
                                 loss="binary_cross_entropy")
    first.save("runs/signs")  # what a first run of the block left (model.save used to refuse it then)
    exec(compile(_python_block("From Python"), "README.md", "exec"), {})
    assert mlxrnn.load("runs/signs").numpy_parameters().keys() == first.numpy_parameters().keys()
