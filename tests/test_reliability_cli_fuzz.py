"""Reliability fuzz: tokenizers, text files, model metadata and CLI arguments on random input raise only
mlxrnn errors, in one line (bounded example counts)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlxrnn_cli.main import cli

from mlxrnn.errors import CheckpointError, ConfigError, DataError, MLXRNNError, ShapeError
from mlxrnn.lm.model import load_language_model
from mlxrnn.models.sequence_model import SequenceModelConfig
from mlxrnn.text.corpus import read_text
from mlxrnn.text.tokenizers import CharTokenizer, WordTokenizer, make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary
from tests.reliability_support import (  # noqa: F401 (pytest fixtures)
    FUZZ,
    JSON_VALUES,
    bad_files,
    char_run,
    checkpoint_dir,
    corpus,
    edit_meta,
    tree_digest,
    word_run,
)

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
    ckpt = checkpoint_dir(run)

    def apply(doc):
        for (path, key), value in edits:
            target = doc["meta"]
            for section in path:
                target = target.get(section) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target[key] = value

    edit_meta(ckpt, apply)
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

    edit_meta(checkpoint_dir(run), edit)
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
