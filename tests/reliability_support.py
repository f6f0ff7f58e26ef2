"""Helpers and fixtures of the reliability tests: the CLI in-process and as a process, tiny runs, bad
files, checkpoint edits."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.run.loop import TrainOptions, train_language_model
from mlxrnn.text.corpus import bundled_corpus_path

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


def checkpoint_dir(run: Path) -> Path:
    return run / json.loads((run / "best.json").read_text())["checkpoint"]


def rewrite_file(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def rehash(ckpt: Path) -> None:
    doc = json.loads((ckpt / "meta.json").read_text())
    for name in doc["files"]:
        data = (ckpt / name).read_bytes()
        doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / "meta.json").write_text(json.dumps(doc))


def edit_meta(ckpt: Path, edit) -> None:
    doc = json.loads((ckpt / "meta.json").read_text())
    edit(doc)
    (ckpt / "meta.json").write_text(json.dumps(doc))


def _json_containers(children):
    return st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    _json_containers,
    max_leaves=6,
)
