"""Reliability (issue 6): bad input, crashes and interruptions lose nothing and explain themselves.

Every bad input below goes through the real CLI (in-process with click's CliRunner, and through
a subprocess where the process boundary matters: exit codes, signals, a blocked `import mlx`)
or through the library API. The contract:

* a usage error (bad flag value, bad hyper-parameter) exits 2, naming the flag;
* a data, checkpoint or environment error exits 1;
* either way stderr is exactly one ``Error: ...`` line, with no traceback, and no input file,
  checkpoint or run directory the user passed is modified.

The fuzz tests at the end check the same contract on random input (bounded example counts).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as st_numpy
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn import mlx_installed
from mlxrnn.errors import CheckpointError, ConfigError, DataError, MLXRNNError, ShapeError
from mlxrnn.io.checkpoint import load_checkpoint, save_checkpoint
from mlxrnn.lm.evaluation import evaluate_ids
from mlxrnn.lm.model import language_model_config, load_language_model
from mlxrnn.models.sequence_model import SequenceModel, SequenceModelConfig
from mlxrnn.nn.optim import Adam
from mlxrnn.run.loop import Interrupted, TrainingDiverged, TrainOptions, train_language_model
from mlxrnn.text.corpus import bundled_corpus_path, read_text
from mlxrnn.text.tokenizers import CharTokenizer, WordTokenizer, make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary
from mlxrnn.training.trainer import Trainer

TINY = dict(layers=1, hidden=16, embed=8, seq_len=16, batch_size=4, eval_every=3, log_every=1, dropout=0.0)
TINY_FLAGS = ["--layers", "1", "--hidden", "8", "--embed", "4", "--seq-len", "8", "--batch-size", "4",
              "--steps", "2", "--eval-every", "5", "--backend", "numpy", "--quiet", "--sample-length", "0"]
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------------------
# helpers and fixtures


def tree_digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (and of symlink targets' names): 'nothing changed'."""
    digest = {}
    for root in paths:
        root = Path(root)
        if not os.path.lexists(root):
            digest[str(root)] = "<absent>"
            continue
        items = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for item in items:
            if item.is_symlink():
                digest[str(item)] = "link:" + os.readlink(item)
            elif item.is_file():
                digest[str(item)] = hashlib.sha256(item.read_bytes()).hexdigest()
            else:
                digest[str(item)] = "<dir>"
    return digest


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, prog_name="mlxrnn")


def assert_clean(result, code: int, *needles: str) -> str:
    """The CLI failed cleanly: exit ``code``, one ``Error:`` line on stderr, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_process(*args: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "mlxrnn_cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_clean_process(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, corpus) -> Path:
    run = tmp_path_factory.mktemp("runs") / "char"
    train_language_model(TrainOptions(corpus=str(corpus), steps=6, backend="numpy", **TINY), run)
    return run


@pytest.fixture(scope="module")
def word_run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "apple", "and", "pear", "salad", "is", "good", "a", "green", "fresh"]
    text = "\n".join(" ".join(rng.choice(words, size=rng.integers(3, 8))) for _ in range(300)) + "\n"
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text(text, encoding="utf-8")
    run = path.parent / "run"
    train_language_model(TrainOptions(corpus=str(path), level="word", steps=3, backend="numpy", **TINY), run)
    return run


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    files = {
        "empty": b"",
        "whitespace": b"  \n\t \r\n",
        "short_for_batch": b"abc",  # training split of 2 tokens, 4 rows need 5
        "short_for_validation": b"abcdefghi",  # 8 training tokens are enough, 1 validation token is not
        "not_utf8": b"hello\xff\xfeworld, " * 40,
        "binary": bytes(range(256)) * 8,
        "utf16": "a b c\n".encode("utf-16") * 50,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / f"{name}.txt"
        paths[name].write_bytes(data)
    paths["directory"] = root / "a_directory"
    paths["directory"].mkdir()
    paths["missing"] = root / "missing.txt"
    return paths


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
# checkpoints: missing, truncated, corrupted, tampered, foreign, newer, inconsistent


def _checkpoint_dir(run: Path) -> Path:
    return run / json.loads((run / "best.json").read_text())["checkpoint"]


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _rehash(ckpt: Path) -> None:
    doc = json.loads((ckpt / "meta.json").read_text())
    for name in doc["files"]:
        data = (ckpt / name).read_bytes()
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / "meta.json").write_text(json.dumps(doc))


def _edit_meta(ckpt: Path, edit) -> None:
    doc = json.loads((ckpt / "meta.json").read_text())
    edit(doc)
    (ckpt / "meta.json").write_text(json.dumps(doc))


def _edit_weights(ckpt: Path, edit) -> None:
    weights = st_numpy.load_file(str(ckpt / "model.safetensors"))
    edit(weights)
    _rewrite(ckpt / "model.safetensors", st_numpy.save(weights))
    _rehash(ckpt)


def _truncate(ckpt: Path, name: str) -> None:
    data = (ckpt / name).read_bytes()
    _rewrite(ckpt / name, data[: len(data) // 2])


def _flip(ckpt: Path) -> None:
    data = bytearray((ckpt / "model.safetensors").read_bytes())
    data[-7] ^= 0xFF
    _rewrite(ckpt / "model.safetensors", bytes(data))


def _tamper_header(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    _rewrite(ckpt / "model.safetensors", data[:8] + data[8 : 8 + n].replace(b'"F32"', b'"F16"', 1) + data[8 + n :])
    _rehash(ckpt)


def _recurrent(doc: dict) -> dict:
    """The recurrent settings of a checkpoint's model config (nested since RecurrentSpec)."""
    return doc["meta"]["model_config"]["recurrent"]


def _shrink_vocab(doc: dict) -> None:
    doc["meta"]["vocab"]["tokens"] = doc["meta"]["vocab"]["tokens"][:-5]
    doc["meta"]["model_config"]["input_size"] -= 5
    doc["meta"]["model_config"]["output_size"] -= 5


CHECKPOINT_FAULTS = {
    "run directory missing": (lambda run, ck: shutil.rmtree(run), "no checkpoint at"),
    "pointers missing": (lambda run, ck: [(run / n).unlink() for n in ("best.json", "last.json")], "no checkpoint at"),
    "pointer garbage": (lambda run, ck: (run / "best.json").write_text("{{{"), "not a valid checkpoint pointer"),
    "pointer outside the run": (lambda run, ck: (run / "best.json").write_text('{"checkpoint": "../../etc"}'),
                                "outside its run directory"),
    "weights missing": (lambda run, ck: (ck / "model.safetensors").unlink(), "model.safetensors is missing"),
    "weights truncated": (lambda run, ck: _truncate(ck, "model.safetensors"), "sha256 mismatch"),
    "weights truncated, hash updated": (lambda run, ck: (_truncate(ck, "model.safetensors"), _rehash(ck)),
                                        "not a valid safetensors file"),
    "meta.json truncated": (lambda run, ck: _truncate(ck, "meta.json"), "meta.json is not valid JSON"),
    "a flipped byte": (lambda run, ck: _flip(ck), "sha256 mismatch"),
    "random bytes, hash updated": (lambda run, ck: (_rewrite(ck / "model.safetensors", os.urandom(4000)),
                                                    _rehash(ck)), "not a valid safetensors file"),
    "tampered header dtype": (lambda run, ck: _tamper_header(ck), "not a valid safetensors file"),
    "tampered tensor shape": (lambda run, ck: _edit_weights(ck, lambda w: w.update({"embedding.weight": np.zeros(
        (3, 3), np.float32)})), "weight 'embedding.weight' has shape (3, 3)"),
    "a tensor missing": (lambda run, ck: _edit_weights(ck, lambda w: w.pop("head.b")), "missing ['head.b']"),
    "NaN weights": (lambda run, ck: _edit_weights(ck, lambda w: w["head.b"].fill(np.nan)), "contains NaN or Inf"),
    "integer weights": (lambda run, ck: _edit_weights(ck, lambda w: w.update({"head.b": w["head.b"].astype(
        np.int32)})), "has dtype int32"),
    "written by another library": (lambda run, ck: _edit_meta(ck, lambda d: d.update(library="torch")),
                                   "written by another library ('torch')"),
    "another program's directory": (lambda run, ck: (shutil.rmtree(run), run.mkdir(), st_numpy.save_file(
        {"w": np.zeros(3, np.float32)}, str(run / "model.safetensors"))), "no checkpoint at"),
    "newer format version": (lambda run, ck: _edit_meta(ck, lambda d: d.update(format_version=2)),
                             "written by a newer mlxrnn (format 2); upgrade mlxrnn"),
    "vocabulary shorter than the weights": (lambda run, ck: _edit_meta(ck, lambda d: d["meta"]["vocab"].update(
        tokens=d["meta"]["vocab"]["tokens"][:-5])), "vocabulary has"),
    "vocabulary and config shrunk together": (lambda run, ck: _edit_meta(ck, _shrink_vocab),
                                              "the model expects ("),
    "vocabulary duplicated token": (lambda run, ck: _edit_meta(ck, lambda d: d["meta"]["vocab"]["tokens"].__setitem__(
        5, d["meta"]["vocab"]["tokens"][6])), "appears more than once"),
    "vocabulary level differs from the tokenizer": (lambda run, ck: _edit_meta(
        ck, lambda d: d["meta"]["tokenizer"].update(level="word")), "the tokenizer is word-level"),
    "config: unknown cell option": (lambda run, ck: _edit_meta(ck, lambda d: _recurrent(d).update(
        cell_options={"bogus": 1})), "unknown option(s) bogus"),
    "config: unknown cell": (lambda run, ck: _edit_meta(ck, lambda d: _recurrent(d).update(
        cell="transformer")), "unknown cell 'transformer'"),
    "config: hidden_size 10**12": (lambda run, ck: _edit_meta(ck, lambda d: _recurrent(d).update(
        hidden_size=10**12)), "checkpoint metadata is invalid"),
    "config: hidden_size 4096": (lambda run, ck: _edit_meta(ck, lambda d: _recurrent(d).update(
        hidden_size=4096)), "checkpoint stores"),
    "config: a recurrent setting given twice": (lambda run, ck: _edit_meta(
        ck, lambda d: d["meta"]["model_config"].update(hidden_size=16)), "both at the top level and under 'recurrent'"),
    "config: recurrent settings not a dict": (lambda run, ck: _edit_meta(
        ck, lambda d: d["meta"]["model_config"].update(recurrent=None)), "recurrent must be a dict"),
    "config: not a language model head": (lambda run, ck: _edit_meta(ck, lambda d: d["meta"]["model_config"].update(
        output="last")), "output='last'"),
    "config: negative seed": (lambda run, ck: _edit_meta(ck, lambda d: d["meta"]["model_config"].update(seed=-3)),
                              "seed must be an integer >= 0"),
    "kind: a classifier": (lambda run, ck: _edit_meta(ck, lambda d: d["meta"].update(kind="classifier")),
                           "not a language model"),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_bad_checkpoints_through_sample_score_and_eval(tmp_path, char_run, corpus, fault):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    damage, message = CHECKPOINT_FAULTS[fault]
    damage(run, _checkpoint_dir(run))
    before = tree_digest(run, corpus)
    for args in (["sample", run, "--length", "5"], ["score", run, "hello"], ["eval", run, corpus]):
        assert_clean(invoke(*args, "--backend", "numpy"), 1, message)
    assert tree_digest(run, corpus) == before  # loading never writes


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


# --------------------------------------------------------------------------------------------
# faults during training: divergence, clipping statistics, signals


def test_divergence_before_any_checkpoint_says_so_and_suggests_clipping(tmp_path, corpus):
    options = TrainOptions(corpus=str(corpus), steps=40, lr=50.0, clip=None, optimizer="sgd", backend="numpy",
                           **{**TINY, "eval_every": 1000})
    with pytest.raises(TrainingDiverged, match=r"no checkpoint had been saved yet; try a lower `lr` \(now 50\) "
                                               r"or `clip` 5"):
        train_language_model(options, tmp_path / "run")
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert events[-1] == "diverged"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, corpus):
    options = TrainOptions(corpus=str(corpus), steps=40, lr=50.0, clip=None, optimizer="sgd", backend="numpy",
                           **{**TINY, "eval_every": 1})
    with pytest.raises(TrainingDiverged, match="the last good checkpoint is kept in"):
        train_language_model(options, tmp_path / "run")
    good = load_checkpoint(tmp_path / "run", tag="last")  # loads: finite weights, hashes intact
    assert all(np.isfinite(w).all() for w in good.weights.values())
    diverged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert diverged["event"] == "diverged"
    assert good.meta["training"]["state"]["step"] == diverged["step"] - 1  # evaluated (saved) after every step


def test_gradient_norms_and_clip_rate_are_logged(tmp_path, corpus):
    for clip, expected in ((1e-4, 1.0), (None, 0.0)):
        run = tmp_path / f"clip-{clip}"
        train_language_model(TrainOptions(corpus=str(corpus), steps=6, clip=clip, backend="numpy",
                                          **{**TINY, "log_every": 3}), run)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r["event"] == "train"]
        assert [r["step"] for r in train] == [3, 6]
        assert all(r["grad_norm"] > 0 and r["clip_rate"] == expected for r in train)


def test_ctrl_c_during_the_final_evaluation_saves_and_exits_cleanly(tmp_path, corpus, monkeypatch):
    from mlxrnn.run import records

    original = records.evaluate_windows

    def interrupted_evaluation(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the (only, final) evaluation runs
        return original(*args, **kwargs)

    monkeypatch.setattr(records, "evaluate_windows", interrupted_evaluation)
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match="SIGINT received: saved step 4") as stop:
        train_language_model(TrainOptions(corpus=str(corpus), steps=4, backend="numpy",
                                          **{**TINY, "eval_every": 1000}), run)
    assert stop.value.signal_number == signal.SIGINT
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 4  # no step lost
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-2:] == ["eval", "interrupted"]


def _default_sigint() -> None:
    """Run in the child before exec: a shell that started the test run in the background
    (``cmd &`` without job control) makes SIGINT ignored, children inherit that, and Python
    then never raises KeyboardInterrupt. Reset it so the test sends a real Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate, process, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_ctrl_c_during_the_final_sample_exits_130_and_keeps_the_run(tmp_path, corpus):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "train", str(corpus), *TINY_FLAGS, "--sample-length",
         "100000000", "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    metrics = run / "metrics.jsonl"
    _wait_for(lambda: metrics.exists() and '"end"' in metrics.read_text(), process)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("Error: sample interrupted; the run is complete and saved")
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 2


def test_ctrl_c_during_sampling_exits_130(char_run):
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrnn_cli.main", "sample", str(char_run), "--length", "100000000", "--backend",
         "numpy"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_default_sigint)
    assert process.stdout.read(5)  # tokens are streaming: the command is running
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    stderr = stderr.decode()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == ["Error: interrupted (Ctrl-C); nothing more "
                                                                         "was written"]


# --------------------------------------------------------------------------------------------
# run directories: --force never deletes what is not a run's, no user path is overwritten


def _foreign_layouts(root: Path, good_run: Path) -> dict[str, Path]:
    layouts = {}

    def new(name):
        layouts[name] = root / name
        layouts[name].mkdir()
        return layouts[name]

    (new("a user file") / "thesis.tex").write_text("precious")
    (new("a user options.json") / "options.json").write_text('{"mine": true}')
    (new("an empty-looking tmp file") / ".tmp-notes").write_text("notes")
    (new("a directory named like a run file") / "options.json").mkdir()
    (layouts["a directory named like a run file"] / "options.json" / "inner.txt").write_text("keep")
    target = root / "elsewhere"
    target.mkdir()
    (target / "data.csv").write_text("1,2,3")
    (new("checkpoints is a symlink") / "checkpoints").symlink_to(target, target_is_directory=True)
    layouts["a user file inside checkpoints"] = root / "run-with-notes"
    shutil.copytree(good_run, layouts["a user file inside checkpoints"])
    (layouts["a user file inside checkpoints"] / "checkpoints" / "notes.txt").write_text("mine")
    return layouts


def test_force_never_deletes_what_is_not_a_runs(tmp_path, corpus, char_run):
    layouts = _foreign_layouts(tmp_path, char_run)
    before = tree_digest(tmp_path)
    for directory in layouts.values():
        with pytest.raises(ConfigError, match="not an mlxrnn run's"):
            train_language_model(TrainOptions(corpus=str(corpus), steps=1, backend="numpy", **TINY), directory,
                                 force=True)
        assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", directory, "--force"), 2, "not an mlxrnn run's")
    assert tree_digest(tmp_path) == before


def test_a_failed_forced_run_keeps_the_old_run(tmp_path, corpus, bad_files, char_run):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)
    before = tree_digest(run)
    for corpus_path, flags, code in [
        (bad_files["missing"], [], 1),
        (bad_files["short_for_validation"], [], 1),
        (bad_files["not_utf8"], [], 1),
        (corpus, ["--hidden", "0"], 2),
        (corpus, ["--hidden", "1000000"], 2),
    ]:
        assert_clean(invoke("train", corpus_path, *TINY_FLAGS, *flags, "--out", run, "--force"), code)
        assert tree_digest(run) == before
    assert invoke("train", corpus, *TINY_FLAGS, "--out", run, "--force").exit_code == 0  # a real run may go
    assert load_checkpoint(run, tag="last").meta["training"]["state"]["step"] == 2


def test_no_path_the_user_passes_is_overwritten(tmp_path, corpus, char_run):
    inside = tmp_path / "run"
    shutil.copytree(char_run, inside)
    shutil.copy(corpus, inside / "corpus.txt")  # a corpus kept inside the run directory
    before = tree_digest(tmp_path, corpus)
    assert_clean(invoke("train", inside / "corpus.txt", *TINY_FLAGS, "--out", inside, "--force"), 2,
                 "inside --out")
    assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", corpus), 2, "is a file, not a directory")
    assert_clean(invoke("train", corpus, *TINY_FLAGS, "--out", inside), 2, "already exists; pass --resume")
    assert_clean(invoke("train", corpus, "--resume", "--out", tmp_path / "absent", "--quiet"), 1, "cannot resume")
    assert tree_digest(tmp_path, corpus) == before


def test_real_processes_fail_in_one_line(tmp_path, bad_files, char_run):
    """The in-process results hold for a real process too (exit status, stderr, no traceback)."""
    assert_clean_process(run_process("train", bad_files["binary"], *TINY_FLAGS, "--out", tmp_path / "r"), 1,
                         "byte offset 128")
    assert_clean_process(run_process("train", "--lr", "-1", *TINY_FLAGS, "--out", tmp_path / "r"), 2, "--lr")
    assert_clean_process(run_process("sample", tmp_path / "nowhere"), 1, "no checkpoint at")
    assert_clean_process(run_process("sample", char_run, "--top-p", "2"), 2, "--top-p")


# --------------------------------------------------------------------------------------------
# fuzzing


@FUZZ
@given(text=st.text(max_size=300) | st.text(st.sampled_from(["\ud800", "\udcff", "a", " ", "\n", "'", "İ", "ß", "."])),
       lowercase=st.booleans(), max_size=st.none() | st.integers(-2, 40),
       min_count=st.integers(-1, 4))
def test_fuzz_tokenizers_raise_only_our_errors(text, lowercase, max_size, min_count):
    for tokenizer in (CharTokenizer(), WordTokenizer(lowercase=lowercase)):
        tokens = tokenizer.tokenize(text)
        assert all(isinstance(t, str) and t for t in tokens)
        again = tokenizer.tokenize(tokenizer.detokenize(tokens))
        assert again == tokens if tokenizer.level == "word" else tokenizer.detokenize(tokens) == text
        try:
            vocab = Vocabulary.build(tokens, max_size=max_size, min_count=min_count, level=tokenizer.level)
        except (ConfigError, DataError):
            continue
        ids = vocab.encode(tokens)
        assert ids.dtype == np.int32 and (ids >= 0).all() and (ids < len(vocab)).all()
        assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
        decoded = vocab.decode(ids)
        assert [t if t in vocab else "<UNK>" for t in tokens] == decoded


@FUZZ
@given(level=st.text(max_size=6) | st.sampled_from(["char", "word"]),
       options=st.dictionaries(st.text(max_size=10), st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                               max_size=2))
def test_fuzz_make_tokenizer_options(level, options):
    try:
        make_tokenizer(level, **options)
    except ConfigError:
        pass


ENCODINGS = ["utf-8", "latin-1", "utf-16", "utf-8-sig", "ascii", "cp1252", "idna", "punycode", "unicode_escape",
             "rot13", "base64", "hex", "zlib", "no-such-codec", "", "utf\x00-8"]


@FUZZ
@given(data=st.binary(max_size=300), encoding=st.sampled_from(ENCODINGS),
       errors=st.sampled_from(["strict", "replace", "ignore", "bogus"]))
def test_fuzz_read_text_raises_only_our_errors_and_leaves_the_file(tmp_path, data, encoding, errors):
    path = tmp_path / "corpus.bin"
    path.write_bytes(data)
    try:
        text = read_text(path, encoding=encoding, errors=errors)
        assert text.strip() and "\r" not in text
    except (DataError, ConfigError) as error:
        assert "\n" not in str(error)
    assert path.read_bytes() == data


def _json_containers(children):
    return st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    _json_containers,
    max_leaves=6,
)
META_FIELDS = [(("model_config",), k) for k in ("input_kind", "input_size", "embed_size", "recurrent",
                                                 "output_size", "output", "loss", "tie_weights", "seed",
                                                 "cell", "hidden_size")]  # the last two: flat, beside "recurrent"
META_FIELDS += [(("model_config", "recurrent"), k) for k in ("cell", "hidden_size", "num_layers", "bidirectional",
                                                              "merge", "dropout", "cell_options")]
META_FIELDS += [(("vocab",), "level"), (("vocab",), "tokens"), (("tokenizer",), "level"),
                (("tokenizer",), "lowercase"), ((), "kind"), ((), "model_config"), ((), "vocab"), ((), "tokenizer")]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(META_FIELDS), JSON_VALUES | st.sampled_from(
    [0, -1, 1, 2, 10**9, 10**15, "lstm", "gru", "word", "char", True, False, None])), min_size=1, max_size=3))
def test_fuzz_language_model_metadata(tmp_path, char_run, edits):
    run = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    shutil.copytree(char_run, run)
    ckpt = _checkpoint_dir(run)

    def apply(doc):
        for (path, key), value in edits:
            target = doc["meta"]
            for section in path:
                target = target.get(section) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[key] = value

    _edit_meta(ckpt, apply)
    try:
        lm, checkpoint = load_language_model(run, backend="numpy")
    except CheckpointError as error:
        assert "\n" not in str(error)
        return
    # A load that succeeds is the model the edited metadata describes, holding the stored weights.
    meta = json.loads((ckpt / "meta.json").read_text())["meta"]
    assert lm.model.config.to_dict() == SequenceModelConfig.from_dict(meta["model_config"]).to_dict()
    assert lm.vocab == Vocabulary.from_dict(meta["vocab"])
    assert lm.tokenizer.to_dict() == make_tokenizer(**meta["tokenizer"]).to_dict()
    parameters = lm.model.numpy_parameters()
    assert sorted(parameters) == sorted(checkpoint.weights)
    for name, value in parameters.items():
        np.testing.assert_array_equal(value, checkpoint.weights[name].astype(value.dtype), err_msg=name)
    log_probs, _ = lm.log_probs(np.array([[lm.start_id] * 3]))
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("key,value", [("seed", 123), ("dropout", 0.5)])
def test_metadata_edits_that_leave_the_network_alone_load_the_same_model(tmp_path, char_run, key, value):
    """The fuzz above rarely draws an edit that loads; these two always do, and must not change
    a single prediction (the seed only draws initial weights, dropout only acts in training)."""
    run = tmp_path / "run"
    shutil.copytree(char_run, run)

    def edit(doc):  # recurrent settings (dropout) live under the config's "recurrent" spec
        config = doc["meta"]["model_config"]
        (config if key in config else config["recurrent"])[key] = value

    _edit_meta(_checkpoint_dir(run), edit)
    original, _ = load_language_model(char_run, backend="numpy")
    edited, _ = load_language_model(run, backend="numpy")
    assert getattr(edited.model.config, key) == value
    ids = original.encode("First Citizen")[None, :]
    np.testing.assert_array_equal(edited.log_probs(ids)[0], original.log_probs(ids)[0])


def _cli_value(huge_ok: bool):
    numbers = st.integers(-3, 24).map(str) | st.floats(-2, 3).map(repr)
    junk = st.sampled_from(["0", "-1", "nan", "inf", "-inf", "", " ", "abc", "1.5", "0x10", "--", "é", "1e-300"])
    huge = st.sampled_from(["99999999999999999999", "1e308", "1e400", str(2**63)])
    return numbers | junk | st.text(max_size=8) | (huge if huge_ok else junk)


SIZE_FLAGS = ["--layers", "--hidden", "--embed", "--batch-size", "--seq-len", "--lr", "--dropout", "--clip",
              "--val-frac", "--lr-decay", "--max-vocab", "--min-count", "--weight-decay", "--seed", "--eval-every",
              "--patience", "--epochs", "--minutes"]
LOOP_FLAGS = ["--steps"]  # a huge valid value here would just train for a long time, as asked
CHOICE_FLAGS = {"--level": ["char", "word", "byte"], "--cell": ["rnn", "gru", "lstm", "cnn"],
                "--optimizer": ["adam", "sgd", "adamw", "rmsprop", "x"], "--schedule": ["plateau", "cosine", "none",
                                                                                        "y"],
                "--backend": ["numpy", "auto", "cuda", ""], "--encoding": ["utf-8", "latin-1", "rot13", "zz"],
                "--encoding-errors": ["strict", "replace", "ignore"]}
SAMPLE_FLAGS = {"--length": False, "--num-samples": True, "--temperature": True, "--top-k": True, "--top-p": True,
                "--seed": True, "--checkpoint": True, "--backend": True}


@st.composite
def cli_invocations(draw):
    command = draw(st.sampled_from(["train", "train", "sample", "score", "eval", "info"]))
    args: list = []
    if command == "train":
        args += [draw(st.sampled_from(["CORPUS"] * 4 + ["WORDS"] * 2 + ["MISSING", "DIR", "BINARY", "EMPTY"]))]
        args += ["--steps", "1", "--layers", "1", "--hidden", "8", "--embed", "4", "--seq-len", "8",
                 "--batch-size", "2", "--sample-length", draw(st.sampled_from(["0", "0", "0", "5", "-1"])), "--quiet"]
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["size", "size", "loop", "choice", "flag"]))
            if kind == "size":
                flag = draw(st.sampled_from(SIZE_FLAGS))
                args += [flag, draw(_cli_value(huge_ok=flag not in ("--eval-every",)))]
            elif kind == "loop":
                args += [draw(st.sampled_from(LOOP_FLAGS)), draw(_cli_value(huge_ok=False))]
            elif kind == "choice":
                flag = draw(st.sampled_from(sorted(CHOICE_FLAGS)))
                args += [flag, draw(st.sampled_from(CHOICE_FLAGS[flag]))]
            else:
                args += [draw(st.sampled_from(["--resume", "--force", "--tie", "--lowercase", "--peephole",
                                               "--json"]))]
        args += ["--out", draw(st.sampled_from(["FRESH"] * 6 + ["CORPUS", "FOREIGN"]))]
    elif command == "info":
        args += draw(st.sampled_from([[], ["--json"], ["--bogus"]]))
    else:
        args += [draw(st.sampled_from(["RUN", "RUN", "WORDRUN", "MISSING", "CORPUS", "DIR"]))]
        if command == "score":
            args += draw(st.lists(st.text(max_size=20), min_size=0, max_size=3))
        if command == "eval":
            args += [draw(st.sampled_from(["CORPUS", "WORDS", "MISSING", "DIR", "BINARY", "EMPTY"]))]
            if draw(st.booleans()):
                args += ["--encoding", draw(st.sampled_from(CHOICE_FLAGS["--encoding"]))]
        if command == "sample":
            args += ["--length", "8", "--prime", draw(st.text(max_size=10) | st.sampled_from(["", "First", "the "]))]
            for flag in draw(st.lists(st.sampled_from(sorted(SAMPLE_FLAGS)), max_size=3)):
                args += [flag, draw(_cli_value(huge_ok=SAMPLE_FLAGS[flag]))]
            if draw(st.booleans()):
                args += [draw(st.sampled_from(["--greedy", "--allow-unk", "--json"]))]
        args += ["--backend", draw(st.sampled_from(["numpy"] * 4 + ["auto", "gpu"]))]
    return command, args


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory, corpus, char_run, word_run, bad_files):
    root = tmp_path_factory.mktemp("fuzz")
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    words = next(word_run.parent.glob("*.txt"))
    return {"CORPUS": corpus, "WORDS": words, "MISSING": bad_files["missing"], "DIR": bad_files["directory"],
            "BINARY": bad_files["binary"], "EMPTY": bad_files["empty"], "RUN": char_run, "WORDRUN": word_run,
            "FOREIGN": foreign}


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(invocation=cli_invocations())
def test_fuzz_cli_arguments_fail_only_cleanly(tmp_path, fuzz_files, invocation):
    command, args = invocation
    fresh = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
    argv = [command] + [str(fresh) if a == "FRESH" else str(fuzz_files.get(a, a)) for a in args]
    watched = [p for k, p in fuzz_files.items() if k != "MISSING"]
    before = tree_digest(*watched)
    result = CliRunner().invoke(cli, argv, prog_name="mlxrnn")
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
    assert "Traceback" not in result.output, argv
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.output)
    if result.exit_code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (argv, result.stderr)
    assert tree_digest(*watched) == before, argv  # no input file, checkpoint or foreign directory changed
    assert not fuzz_files["MISSING"].exists()


def test_the_cli_errors_are_mlxrnn_errors():
    """Every library error the CLI maps is one class tree: ConfigError → 2, other MLXRNNError → 1."""
    assert issubclass(ConfigError, MLXRNNError) and issubclass(ShapeError, ConfigError)
    assert issubclass(DataError, MLXRNNError) and issubclass(CheckpointError, MLXRNNError)
    assert not issubclass(DataError, ConfigError) and not issubclass(CheckpointError, ConfigError)
