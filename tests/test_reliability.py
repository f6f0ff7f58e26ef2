"""Reliability: bad input through the CLI and the library fails in one clean line and changes nothing.

The contract: a usage error (bad flag value, bad hyper-parameter) exits 2, naming the flag; a data,
checkpoint or environment error exits 1; either way stderr is exactly one ``Error: ...`` line, with no
traceback, and no input file, checkpoint or run directory the user passed is modified.
Helpers and fixtures: tests/reliability_support.py."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from mlxrnn import mlx_installed
from mlxrnn.errors import CheckpointError, ConfigError, DataError, ShapeError
from mlxrnn.io.checkpoint import save_checkpoint
from mlxrnn.lm.evaluation import evaluate_ids
from mlxrnn.lm.model import language_model_config, load_language_model
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.nn.optim import Adam
from mlxrnn.text.corpus import read_text
from mlxrnn.training.trainer import Trainer
from tests.reliability_support import (  # noqa: F401 (pytest fixtures)
    TINY_FLAGS,
    assert_clean,
    assert_clean_process,
    bad_files,
    char_run,
    corpus,
    invoke,
    run_process,
    tree_digest,
    word_run,
)

# --------------------------------------------------------------------------------------------
# bad corpus and text files (train and eval)

DATA_CASES = [  # (file, exit code, what the message must say)
    ("missing", 1, "no such file"),
    ("directory", 1, "is a directory"),
    ("empty", 1, "is empty"),
    ("whitespace", 1, "is empty"),
    ("short_for_batch", 1, "lower --batch-size"),
    ("short_for_validation", 1, "raise --val-frac"),
    ("not_utf8", 1, "invalid byte 0xff at byte offset 5; pass the right --encoding"),
    ("binary", 1, "invalid byte 0x80 at byte offset 128"),
]


@pytest.mark.parametrize("name,code,message", DATA_CASES)
def test_train_on_a_bad_corpus_fails_cleanly_and_creates_nothing(tmp_path, bad_files, name, code, message):
    before = tree_digest(*bad_files.values())
    result = invoke("train", bad_files[name], *TINY_FLAGS, "--out", tmp_path / "run")
    assert_clean(result, code, message)
    assert not (tmp_path / "run").exists()  # a failed start leaves no half-made run directory
    assert tree_digest(*bad_files.values()) == before


@pytest.mark.parametrize("name,code,message", [c for c in DATA_CASES if not c[0].startswith("short")])
def test_eval_of_a_bad_file_fails_cleanly(char_run, bad_files, name, code, message):
    assert_clean(invoke("eval", char_run, bad_files[name], "--backend", "numpy"), code, message)


@pytest.mark.parametrize("command", ["train", "eval"])
def test_encoding_options(tmp_path, char_run, bad_files, command):
    def run(*flags):
        if command == "train":
            out = tempfile.mkdtemp(dir=tmp_path) + "/run"
            return invoke("train", bad_files["not_utf8"], *TINY_FLAGS, "--out", out, *flags)
        return invoke("eval", char_run, bad_files["not_utf8"], "--backend", "numpy", *flags)

    assert run("--encoding", "latin-1").exit_code == 0
    assert run("--encoding-errors", "replace").exit_code == 0
    assert_clean(run("--encoding", "no-such-codec"), 2, "unknown encoding 'no-such-codec'", "--encoding")
    assert_clean(run("--encoding", "rot13"), 2, "'rot13' is not a text encoding")
    assert_clean(run("--encoding", "base64"), 2, "not a text encoding")


def test_text_that_utf8_cannot_store_is_refused(tmp_path):
    path = tmp_path / "escaped.txt"
    path.write_bytes(b"caf\xe9 au lait, " * 20)
    with pytest.raises(DataError, match="unpaired surrogate at character 3"):
        read_text(path, errors="surrogateescape")  # the library accepts any codec error handler
    with pytest.raises(CheckpointError, match="unpaired surrogate"):
        save_checkpoint(tmp_path / "ckpt", {"w": np.zeros(2, np.float32)}, {"vocab": ["a", "\udce9"]})
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this platform")
def test_a_device_is_refused_instead_of_read_forever(tmp_path):
    assert_clean(invoke("train", "/dev/zero", *TINY_FLAGS, "--out", tmp_path / "run"), 1, "is a device")


# --------------------------------------------------------------------------------------------
# nonsense hyper-parameters: exit 2, naming the flag

TRAIN_FLAG_CASES = [
    ("--layers", "0"), ("--layers", "-1"), ("--hidden", "0"), ("--hidden", "-5"), ("--embed", "-1"),
    ("--seq-len", "0"), ("--seq-len", "-3"), ("--batch-size", "0"), ("--batch-size", "-2"),
    ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "nan"), ("--lr", "inf"), ("--dropout", "1"), ("--dropout", "nan"),
    ("--clip", "-1"), ("--clip", "nan"), ("--clip", "inf"), ("--epochs", "0"), ("--epochs", "-1"),
    ("--epochs", "inf"), ("--epochs", "1e308"), ("--steps", "0"), ("--steps", "-1"), ("--minutes", "0"),
    ("--minutes", "nan"), ("--minutes", "inf"), ("--val-frac", "0"), ("--val-frac", "1"), ("--val-frac", "nan"),
    ("--eval-every", "0"), ("--lr-decay", "0"), ("--lr-decay", "1.5"), ("--patience", "0"),
    ("--max-vocab", "3"), ("--min-count", "0"), ("--weight-decay", "-1"), ("--weight-decay", "nan"),
    ("--sample-length", "-1"), ("--seed", "-1"),
    ("--hidden", "99999999999999999999"), ("--embed", "99999999999999999999"), ("--layers", "100000000"),
    ("--hidden", "1000000"),  # would need ~64 TB: refused before anything is allocated
    ("--layers", "two"), ("--lr", "fast"), ("--backend", "cuda"), ("--level", "byte"), ("--cell", "transformer"),
    ("--optimizer", "lbfgs"), ("--schedule", "linear"), ("--encoding-errors", "ignore"),
]


@pytest.mark.parametrize("flag,value", TRAIN_FLAG_CASES)
def test_nonsense_training_flags_exit_2_naming_the_flag(tmp_path, corpus, flag, value):
    started = time.perf_counter()
    result = invoke("train", corpus, *TINY_FLAGS, flag, value, "--out", tmp_path / "run")
    assert_clean(result, 2, flag)
    assert not (tmp_path / "run").exists()
    assert time.perf_counter() - started < 5  # refused up front, not after trying


SAMPLE_FLAG_CASES = [
    ("--length", "0"), ("--length", "-1"), ("--num-samples", "0"), ("--num-samples", "-3"),
    ("--num-samples", "1000000000000"), ("--temperature", "0"), ("--temperature", "-1"),
    ("--temperature", "nan"), ("--temperature", "inf"), ("--top-k", "0"), ("--top-k", "-1"), ("--top-p", "0"),
    ("--top-p", "1.5"), ("--top-p", "-0.1"), ("--top-p", "nan"), ("--seed", "-1"), ("--checkpoint", "middle"),
    ("--backend", "cuda"), ("--length", "many"),
]


@pytest.mark.parametrize("flag,value", SAMPLE_FLAG_CASES)
def test_nonsense_sampling_flags_exit_2_naming_the_flag(char_run, flag, value):
    assert_clean(invoke("sample", char_run, "--backend", "numpy", "--length", "5", flag, value), 2, flag)


def test_extreme_but_valid_sampling_flags_work_quietly(char_run):
    for flags in (["--temperature", "1e-300"], ["--temperature", "1e300"], ["--top-k", "99999999999999999999"],
                  ["--top-p", "1e-300"], ["--seed", "99999999999999999999"]):
        result = invoke("sample", char_run, "--backend", "numpy", "--length", "20", *flags)
        assert result.exit_code == 0 and result.stderr == "", (flags, result.stderr)
    # A vanishing temperature is greedy decoding, not NaN probabilities.
    greedy = invoke("sample", char_run, "--backend", "numpy", "--length", "20", "--greedy").stdout
    assert invoke("sample", char_run, "--backend", "numpy", "--length", "20", "--temperature", "1e-300").stdout == greedy


def test_an_absurd_learning_rate_never_crashes_the_reports(tmp_path, corpus):
    run = tmp_path / "run"
    result = invoke("train", corpus, *TINY_FLAGS, "--steps", "1", "--lr", "1e20", "--out", run, "--json")
    assert result.exit_code == 0, result.output  # one step cannot diverge yet; its loss is astronomical
    assert json.loads(result.stdout)["best_val_perplexity"] == float("inf")
    evaluation = invoke("eval", run, corpus, "--backend", "numpy", "--json")
    assert evaluation.exit_code == 0 and json.loads(evaluation.stdout)["perplexity"] == float("inf")
    assert invoke("score", run, "hello there", "--backend", "numpy").exit_code == 0


def test_usage_errors_of_click_itself_are_one_line(char_run):
    assert_clean(invoke("score", char_run), 2, "Missing argument 'SENTENCES...'", "mlxrnn score --help")
    assert_clean(invoke("sample"), 2, "Missing argument 'RUN'")
    assert_clean(invoke("eval", char_run, "x.txt", "--no-such-flag"), 2, "No such option '--no-such-flag'")
    assert_clean(invoke("frobnicate"), 2, "No such command 'frobnicate'")
    assert invoke("train", "--help").exit_code == 0


# --------------------------------------------------------------------------------------------
# prime text and sentences


def test_prime_outside_the_vocabulary(char_run, word_run):
    assert_clean(invoke("sample", char_run, "--backend", "numpy", "--prime", "price: €"), 1,
                 "outside the model's vocabulary: '€'", "--allow-unk")
    assert_clean(invoke("sample", word_run, "--backend", "numpy", "--prime", "the zebra"), 1, "'zebra'", "--allow-unk")
    assert invoke("sample", word_run, "--backend", "numpy", "--prime", "the zebra", "--allow-unk",
                  "--length", "5").exit_code == 0
    assert_clean(invoke("score", char_run, "", "--backend", "numpy"), 1, "no tokens")
    assert invoke("score", word_run, "zebra crossing", "--backend", "numpy").exit_code == 0  # scored as <UNK>


# --------------------------------------------------------------------------------------------
# backends

BLOCK_MLX = """
import importlib.abc, importlib.machinery, sys
MODE = {mode!r}
class _Loader(importlib.abc.Loader):
    def create_module(self, spec): return None
    def exec_module(self, module): raise ImportError("libmlx.so: cannot open shared object file")
class _Finder:
    def find_spec(self, name, path=None, target=None):
        if MODE == "missing" and (name == "mlx" or name.startswith("mlx.")):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        if MODE == "broken" and name == "mlx.core":
            return importlib.machinery.ModuleSpec(name, _Loader())
        return None
sys.meta_path.insert(0, _Finder())
"""


@pytest.mark.parametrize("mode,message", [("missing", "MLX is not installed"), ("broken", "cannot be imported")])
def test_mlx_requested_but_not_usable(tmp_path, corpus, char_run, mode, message):
    if mode == "broken" and not mlx_installed():
        pytest.skip("simulating a broken MLX needs the mlx package present")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_MLX.format(mode=mode))
    env = {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    train = run_process("train", corpus, *TINY_FLAGS, "--backend", "mlx", "--out", tmp_path / "run", env_extra=env)
    assert_clean_process(train, 1, message, "pip install")
    assert not (tmp_path / "run").exists()
    assert_clean_process(run_process("sample", char_run, "--backend", "mlx", env_extra=env), 1, message)
    auto = run_process("sample", char_run, "--length", "5", env_extra=env)  # auto falls back to NumPy
    assert auto.returncode == 0, auto.stderr


def test_unknown_backend(char_run):
    assert_clean(invoke("sample", char_run, "--length", "3", env={"MLXRNN_BACKEND": "cuda"}), 2,
                 "unknown backend (from MLXRNN_BACKEND) 'cuda'")
    with pytest.raises(ConfigError, match="unknown backend"):
        SequenceModel(SequenceModelConfig(), backend="tpu")


# --------------------------------------------------------------------------------------------
# the library API: token ids, NaN/Inf inputs and targets, bad batches


@pytest.fixture(scope="module")
def lm(char_run):
    return load_language_model(char_run, backend="numpy")[0]


def test_token_ids_out_of_range_through_the_library(lm):
    V = len(lm.vocab)
    for bad in ([[1, V]], [[-1, 2]], [[2**32 + 5]]):  # 2**32 + 5 would wrap to 5 in an int32 cast
        with pytest.raises(ConfigError, match="out of range"):
            lm.next_token_logits(np.array(bad))
        with pytest.raises(ConfigError, match="out of range"):
            lm.log_probs(np.array(bad))
    with pytest.raises(ShapeError, match="must be integers"):
        lm.log_probs(np.array([[1.0, 2.0]]))
    with pytest.raises(ConfigError, match="out of range"):
        evaluate_ids(lm, np.array([1, 2, 2**40]))
    with pytest.raises(ConfigError, match="out of range"):
        lm.decode([V])
    model = SequenceModel(SequenceModelConfig(input_kind="one_hot", input_size=5, output_size=5, hidden_size=4))
    with pytest.raises(ConfigError, match="token id 5 is out of range"):
        model.forward(np.array([[0, 5]]))


def _dense_models():
    common = dict(input_kind="dense", input_size=3, hidden_size=6, seed=1)
    return {
        "bce": SequenceModel(SequenceModelConfig(output="last", output_size=1, loss="binary_cross_entropy", **common),
                             backend="numpy"),
        "mse": SequenceModel(SequenceModelConfig(output="sequence", output_size=2, loss="mse", **common),
                             backend="numpy"),
    }


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_inputs_and_targets_are_refused_before_any_update(value):
    models = _dense_models()
    x = np.zeros((2, 4, 3))
    targets = {"bce": np.zeros((2, 1)), "mse": np.zeros((2, 4, 2))}
    for name, model in models.items():
        bad_x = x.copy()
        bad_x[1, 2, 0] = value
        with pytest.raises(DataError, match=r"NaN or Inf \(first at index \(1, 2, 0\)"):
            model.forward(bad_x)
        trainer = Trainer(model, Adam(lr=0.1))
        before = model.numpy_parameters()
        with pytest.raises(DataError, match=r"batch\['inputs'\] contains NaN or Inf"):
            trainer.step({"inputs": bad_x, "targets": targets[name]})
        bad_y = targets[name].copy()
        bad_y.flat[0] = value
        with pytest.raises(DataError, match=r"batch\['targets'\] contains NaN or Inf"):
            trainer.step({"inputs": x, "targets": bad_y})
        after = model.numpy_parameters()
        assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing was updated
        trainer.step({"inputs": x, "targets": targets[name]})  # and clean data still trains


def test_bad_batches_and_configs_through_the_library():
    model = _dense_models()["bce"]
    trainer = Trainer(model, Adam(lr=0.1))
    with pytest.raises(ConfigError, match="'inputs' and 'targets'"):
        trainer.step({"inputs": np.zeros((2, 4, 3))})
    with pytest.raises(ConfigError, match="a batch must be a dict"):
        trainer.step([np.zeros((2, 4, 3)), np.zeros((2, 1))])
    with pytest.raises(ShapeError, match="got dtype <U"):
        model.forward(np.array([[["a", "b", "c"]]]))
    with pytest.raises(ShapeError, match="rectangular"):
        model.forward([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    ids_model = SequenceModel(SequenceModelConfig(input_size=5, output_size=5, hidden_size=4, embed_size=3))
    with pytest.raises(ShapeError, match="rectangular"):
        ids_model.forward([[1, 2], [3]])
    for bad, match in [
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(tie_weights="yes"), "tie_weights must be True or False"),
        (dict(cell_options={"bogus": 1}), "unknown option"),
        (dict(cell_options={"forget_bias": "high"}), "invalid cell_options"),
        (dict(hidden_size=10**7), "smaller hidden_size"),
    ]:
        with pytest.raises(ConfigError, match=match):
            SequenceModel(SequenceModelConfig(**bad), backend="numpy")
    with pytest.raises(ConfigError, match="--hidden"):
        language_model_config(65, hidden_size=10**9, num_layers=1000)  # refused without allocating


