"""Runs that continue honestly: ``--resume`` applies (and logs) given optimisation settings and
refuses changes to the model or its data; ``--init-from`` starts a new run from another's weights
with a grown vocabulary; ``--config`` reads settings from a file, typed flags overriding it."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mlxrnn_cli.main import cli

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.checkpoint import load_checkpoint
from mlxrnn.lm.model import LanguageModel, language_model_config, load_language_model
from mlxrnn.models.sequence_model import SequenceModel
from mlxrnn.run.init_from import source_architecture, transplant_weights
from mlxrnn.run.loop import LanguageModelRun, train_language_model
from mlxrnn.run.option_files import read_options_file
from mlxrnn.run.option_types import option_fields
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.corpus import bundled_corpus_path
from mlxrnn.text.tokenizers import make_tokenizer
from mlxrnn.text.vocabulary import Vocabulary

try:  # TOML: the standard library from Python 3.11, tomli before it
    import tomllib  # noqa: F401

    HAS_TOML = True
except ImportError:
    HAS_TOML = importlib.util.find_spec("tomli") is not None
needs_toml = pytest.mark.skipif(not HAS_TOML, reason="reading TOML needs Python 3.11+ or tomli")

SMALL = dict(layers=1, hidden=16, embed=8, seq_len=16, batch_size=4, eval_every=2, log_every=1, dropout=0.0)
SMALL_FLAGS = [
    "--layers",
    "1",
    "--hidden",
    "16",
    "--embed",
    "8",
    "--seq-len",
    "16",
    "--batch-size",
    "4",
    "--eval-every",
    "2",
    "--log-every",
    "1",
    "--dropout",
    "0",
    "--backend",
    "numpy",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(bundled_corpus_path().read_text(encoding="utf-8")[:5000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def other_corpus(tmp_path_factory) -> str:
    """A different text with characters tiny-shakespeare's first 5000 lack (digits, Z, %)."""
    path = tmp_path_factory.mktemp("other") / "other.txt"
    path.write_text("Zebra 42 jumps over 7 lazy dogs at 99% speed.\n" * 80, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, corpus) -> str:
    run = tmp_path_factory.mktemp("runs") / "source"
    train_language_model(TrainOptions(corpus=corpus, steps=20, lr=0.01, **SMALL), run)
    return str(run)


def _records(run, event: str) -> list[dict]:
    lines = Path(run, "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def _invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlxrnn")


# --- resume -------------------------------------------------------------------------------------
def test_resume_refuses_changed_model_settings_naming_each_and_writes_nothing(tmp_path, corpus):
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=corpus, steps=2, **SMALL), run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    changed = TrainOptions(corpus=corpus, steps=4, **{**SMALL, "hidden": 32, "seq_len": 8, "lr": 1e-3})
    with pytest.raises(ConfigError) as info:
        train_language_model(changed, run, resume=True)
    message = str(info.value)
    assert "\n" not in message and "`hidden` 16 → 32" in message and "`seq_len` 16 → 8" in message
    assert "lr" not in message  # a resumable change is not what is wrong
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_applies_and_logs_the_optimisation_settings_given(tmp_path, corpus):
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=corpus, steps=4, lr=0.01, **SMALL), run)
    messages = []
    new = TrainOptions(corpus=corpus, steps=8, lr=0.003, clip=1e-6, patience=5, **SMALL)
    summary = train_language_model(
        new, run, resume=True, log=messages.append, given={"lr", "clip", "patience", "steps"}
    )
    assert summary.steps == 8
    start = _records(run, "start")[-1]
    assert start["resumed"] is True
    assert start["changed"] == {"lr": [0.01, 0.003], "clip": [5.0, 1e-6], "steps": [4, 8], "patience": [None, 5]}
    assert any("`lr` 0.01 → 0.003" in m and "`clip` 5 → 1e-06" in m for m in messages), messages
    resumed = [r for r in _records(run, "train") if r["step"] > 4]
    assert resumed[0]["lr"] == 0.003  # the new rate, not the saved (or a decayed) one
    assert all(r["clipped"] for r in resumed)  # a gradient norm above 1e-6 is always clipped now
    saved = load_checkpoint(run, tag="last").meta["training"]
    assert saved["options"]["lr"] == 0.003 and saved["options"]["clip"] == 1e-6
    assert saved["schedule"]["base_lr"] == 0.003


def test_resume_keeps_what_is_not_given_and_replaces_the_budget_as_a_whole(tmp_path, corpus):
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=corpus, steps=3, epochs=5.0, **SMALL), run)
    # Whole options from Python: the settings at their defaults count as not given (hidden 512 here).
    summary = train_language_model(TrainOptions(steps=5), run, resume=True)
    saved = load_checkpoint(run, tag="last").meta["training"]["options"]
    assert summary.steps == 5 and saved["hidden"] == 16 and saved["corpus"] == corpus
    assert saved["epochs"] is None  # a new budget replaces the saved one: "5 steps", not "and 5 epochs"
    assert _records(run, "start")[-1]["changed"] == {"epochs": [5.0, None], "steps": [3, 5]}


def test_resume_with_a_new_schedule_takes_over_at_the_current_rate(tmp_path, corpus):
    run = tmp_path / "run"
    train_language_model(TrainOptions(corpus=corpus, steps=4, lr=0.01, schedule="plateau", **SMALL), run)
    current = load_checkpoint(run, tag="last").meta["training"]["optimizer"]["lr"]
    train_language_model(TrainOptions(steps=8, schedule="cosine"), run, resume=True, given={"steps", "schedule"})
    saved = load_checkpoint(run, tag="last").meta["training"]
    assert saved["schedule"]["name"] == "cosine" and saved["schedule"]["base_lr"] == current
    lrs = [r["lr"] for r in _records(run, "train") if r["step"] > 4]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < current  # cosine over the run: 5/8 of the way down


def test_cli_resume_rule_is_in_help_and_typed_flags_count_even_at_their_default(tmp_path, corpus):
    help_text = re.sub(r"-\s+", "-", " ".join(_invoke("train", "--help").output.split()))  # click wraps at "-"
    assert "Flags you leave out keep the run's values" in help_text and "--lr, --weight-decay, --clip" in help_text
    run = tmp_path / "run"
    assert (
        _invoke(
            "train",
            corpus,
            *SMALL_FLAGS,
            "--lr",
            "0.01",
            "--steps",
            "2",
            "--out",
            run,
            "--quiet",
            "--sample-length",
            "0",
        ).exit_code
        == 0
    )
    # --lr 0.002 is the flag's default: only click's ParameterSource shows it was typed.
    result = _invoke("train", "--resume", "--out", run, "--lr", "0.002", "--steps", "3", "--sample-length", "0")
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stderr and "--lr 0.01 → 0.002" in result.stderr  # spelled as flags
    assert _records(run, "start")[-1]["changed"]["lr"] == [0.01, 0.002]
    refused = _invoke("train", "--resume", "--out", run, "--hidden", "32", "--peephole", "--steps", "4", "--quiet")
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        "Error: a resumed run keeps its model and data, but --hidden 16 → 32, --peephole False → True would change; "
        "leave those out to continue the run as it was, or start a new run from its weights with --init-from"
    ]
    gru = tmp_path / "gru"
    assert (
        _invoke(
            "train",
            corpus,
            *SMALL_FLAGS,
            "--cell",
            "gru",
            "--steps",
            "1",
            "--out",
            gru,
            "--quiet",
            "--sample-length",
            "0",
        ).exit_code
        == 0
    )
    wrong_cell_flag = _invoke("train", "--resume", "--out", gru, "--peephole", "--quiet")
    assert wrong_cell_flag.exit_code == 2 and "--peephole is not an option of the gru cell" in wrong_cell_flag.stderr


# --- init-from ----------------------------------------------------------------------------------
def test_init_from_copies_the_weights_and_appends_new_tokens_with_fresh_rows(tmp_path, source_run, other_corpus):
    source, _ = load_language_model(source_run, backend="numpy")
    run = LanguageModelRun(TrainOptions(corpus=other_corpus, steps=1, seed=3), tmp_path / "ft", init_from=source_run)
    vocab, old = run.lm.vocab, source.vocab
    assert vocab.tokens[: len(old)] == old.tokens and {"Z", "4", "%"} <= set(vocab.tokens[len(old) :])
    assert run.options.hidden == 16 and run.options.embed == 8  # the source's, not the defaults (512, 128)
    fresh = SequenceModel(run.lm.model.config, backend="numpy").numpy_parameters()  # same config and seed
    ours, theirs = run.lm.model.numpy_parameters(), source.model.numpy_parameters()
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name][tuple(slice(0, n) for n in value.shape)], value, err_msg=name)
        if value.shape != ours[name].shape:  # the new tokens' rows: the new model's own initialisation
            axis = next(a for a, (o, n) in enumerate(zip(value.shape, ours[name].shape)) if o != n)
            new_rows = np.take(ours[name], np.arange(len(old), len(vocab)), axis=axis)
            np.testing.assert_array_equal(new_rows, np.take(fresh[name], np.arange(len(old), len(vocab)), axis=axis))
    record = json.loads((tmp_path / "ft" / "options.json").read_text())["init_from"]
    assert record == {"run": source_run, "step": 20, "new_tokens": len(vocab) - len(old)}


def test_init_from_starts_where_the_source_stopped(tmp_path, source_run, corpus):
    """On the source's own corpus the first loss is the trained model's, far below a fresh one's
    (20 steps took the source from about 4.0 to about 3.1 nats)."""
    options = TrainOptions(corpus=corpus, steps=1, lr=0.01, **SMALL)
    train_language_model(options, tmp_path / "fresh")
    train_language_model(options, tmp_path / "ft", init_from=source_run)
    first = {name: _records(tmp_path / name, "train")[0]["loss"] for name in ("fresh", "ft")}
    assert first["ft"] < first["fresh"] - 0.5, first


def test_init_from_refusals(tmp_path, source_run, other_corpus):
    with pytest.raises(ConfigError, match=r"`layers` 1 → 3, `hidden` 16 → 64") as info:
        LanguageModelRun(TrainOptions(corpus=other_corpus, hidden=64, layers=3), tmp_path / "a", init_from=source_run)
    assert "\n" not in str(info.value) and not (tmp_path / "a").exists()
    same = TrainOptions(corpus=other_corpus, hidden=16, lr=0.1)  # agreeing with the source is fine
    assert LanguageModelRun(same, tmp_path / "b", init_from=source_run, given={"hidden", "lr"}).options.lr == 0.1
    with pytest.raises(ConfigError, match="lies in `run_dir`"):
        LanguageModelRun(TrainOptions(corpus=other_corpus), source_run, force=True, init_from=source_run)
    assert (Path(source_run) / "last.json").exists()
    with pytest.raises(ConfigError, match="pass one of them"):
        LanguageModelRun(TrainOptions(), source_run, resume=True, init_from=source_run)


def test_init_from_with_max_vocab_at_the_source_size_keeps_its_vocabulary(tmp_path, source_run, other_corpus):
    size = len(load_language_model(source_run, backend="numpy")[0].vocab)
    run = LanguageModelRun(TrainOptions(corpus=other_corpus, max_vocab=size), tmp_path / "ft", init_from=source_run)
    assert len(run.lm.vocab) == size and run.lm.encode("Z")[0] == run.lm.vocab.unk_id


def test_vocabulary_extended_keeps_ids_orders_new_tokens_and_obeys_the_limits():
    base = Vocabulary.build(list("abcab"), level="char")
    grown = base.extended([*"zyyxa", "<EOS>", *"zzq"], min_count=1)  # specials are in every vocabulary
    assert grown.tokens[: len(base)] == base.tokens and grown.tokens[len(base) :] == ("z", "y", "x", "q")
    assert base.extended(list("zyyxzz"), min_count=2).tokens[len(base) :] == ("z", "y")
    assert base.extended(list("zyyxzz"), max_size=len(base) + 1).tokens[len(base) :] == ("z",)
    assert base.extended(list("zz"), max_size=4) == base  # a cap below the base size adds nothing, drops nothing
    with pytest.raises(ConfigError):
        base.extended("ab", min_count=0)


@pytest.mark.parametrize("embed,tie", [(0, False), (12, True)], ids=["one-hot", "tied"])
def test_transplant_copies_every_vocabulary_axis(embed, tie):
    """One-hot inputs put the vocabulary on layer 0's input rows, tying shares it with the head."""
    hidden, old_v, new_v = 12, 9, 13
    models = [
        SequenceModel(
            language_model_config(v, hidden_size=hidden, num_layers=1, embed_size=embed, tie_weights=tie, seed=s),
            backend="numpy",
        )
        for v, s in ((old_v, 1), (new_v, 2))
    ]
    old, new = (m.numpy_parameters() for m in models)
    merged = transplant_weights(new, old, old_v, new_v)
    assert any(old[n].shape != new[n].shape for n in old)  # the vocabulary axis really differs somewhere
    for name in old:
        np.testing.assert_array_equal(merged[name][tuple(slice(0, n) for n in old[name].shape)], old[name])
    models[1].load_parameters(merged)  # the shapes are the new model's


def test_source_architecture_covers_exactly_the_architecture_settings():
    lm = LanguageModel(
        SequenceModel(language_model_config(20, hidden_size=8, embed_size=0, num_layers=2), backend="numpy"),
        Vocabulary(["<PAD>", "<UNK>", "<EOS>", "a"]),
        make_tokenizer("word", lowercase=True),
    )
    arch = source_architecture(lm)
    assert set(arch) == {spec.name for spec in option_fields() if spec.metadata["architecture"]}
    assert (arch["embed"], arch["layers"], arch["level"], arch["lowercase"]) == (0, 2, "word", True)


# --- config files -------------------------------------------------------------------------------
def test_a_runs_options_json_reads_back_as_its_options(source_run):
    saved = json.loads(Path(source_run, "options.json").read_text())["options"]
    assert asdict(TrainOptions(**read_options_file(Path(source_run, "options.json")))) == saved


@needs_toml
def test_config_files_json_and_toml_with_dashes_and_cell_options(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('hidden = 64\nval-frac = 0.2\nlr = 1\nclip = 0\ncell = "gru"\nvariant = "reset_after"\n')
    expected = {
        "hidden": 64,
        "val_frac": 0.2,
        "lr": 1.0,
        "clip": 0.0,
        "cell": "gru",
        "cell_options": {"variant": "reset_after"},
    }
    assert read_options_file(toml) == expected
    as_json = tmp_path / "c.json"
    as_json.write_text(
        json.dumps(
            {
                "hidden": 64,
                "val_frac": 0.2,
                "lr": 1,
                "clip": 0,
                "cell": "gru",
                "cell_options": {"variant": "reset_after"},
                "patience": None,
            }
        )
    )
    assert read_options_file(as_json) == {**expected, "patience": None}


@pytest.mark.parametrize(
    ("text", "suffix", "error", "message"),
    [
        ('{"hiden": 3}', ".json", ConfigError, r"does not have: hiden \(did you mean hidden\?\)"),
        ('{"hidden": "3"}', ".json", ConfigError, r"`hidden` must be an integer, got '3'"),
        ('{"hidden": true}', ".json", ConfigError, r"`hidden` must be an integer, got True"),
        ('{"tie": 1}', ".json", ConfigError, r"`tie` must be true or false"),
        ('{"hidden": null}', ".json", ConfigError, r"`hidden` must be an integer, got None"),
        ("[1, 2]", ".json", ConfigError, r"must hold a table of settings"),
        ('{"hidden": 3', ".json", ConfigError, r"is not valid JSON"),
        pytest.param("hidden = ", ".toml", ConfigError, r"is not valid TOML", marks=needs_toml),
        ("hidden = 3", ".cfg", ConfigError, r"needs the .toml suffix"),
        (b"\xff\xfe", ".json", DataError, r"cannot read the settings file"),
    ],
)
def test_bad_config_files_fail_in_one_line(tmp_path, text, suffix, error, message):
    path = tmp_path / f"settings{suffix}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(error, match=message) as info:
        read_options_file(path)
    assert "\n" not in str(info.value)


def test_cli_config_with_typed_flags_overriding_it(tmp_path, corpus, source_run):
    result = _invoke(
        "train",
        "--config",
        Path(source_run, "options.json"),
        "--steps",
        "1",
        "--cell",
        "gru",
        "--hidden",
        "12",
        "--out",
        tmp_path / "r",
        "--quiet",
        "--sample-length",
        "0",
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "options.json").read_text())["options"]
    source = json.loads(Path(source_run, "options.json").read_text())["options"]
    assert (saved["cell"], saved["hidden"], saved["steps"]) == ("gru", 12, 1)  # typed
    assert saved["cell_options"] == {"variant": "full"}  # the LSTM's peephole does not follow --cell gru
    typed = {"cell", "cell_options", "hidden", "steps"}
    assert {k: v for k, v in saved.items() if k not in typed} == {k: v for k, v in source.items() if k not in typed}
    # Resuming with the run's own options.json changes nothing; a typed flag still wins over it.
    again = _invoke(
        "train",
        "--resume",
        "--out",
        tmp_path / "r",
        "--config",
        tmp_path / "r" / "options.json",
        "--steps",
        "2",
        "--quiet",
        "--sample-length",
        "0",
    )
    assert again.exit_code == 0, again.output
    assert _records(tmp_path / "r", "start")[-1]["changed"] == {"steps": [1, 2]}
    missing = _invoke("train", "--config", tmp_path / "absent.json", "--quiet")
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: cannot read the settings file")


def test_cli_init_from_on_another_corpus(tmp_path, source_run, other_corpus):
    result = _invoke(
        "train",
        other_corpus,
        "--init-from",
        source_run,
        "--steps",
        "2",
        "--backend",
        "numpy",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--out",
        tmp_path / "ft",
        "--sample-length",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert f"starting from the weights of {source_run} (step 20)" in result.stderr
    lm, _ = load_language_model(tmp_path / "ft", backend="numpy")
    assert lm.model.config.hidden_size == 16 and "Z" in lm.vocab
    refused = _invoke(
        "train", other_corpus, "--init-from", source_run, "--hidden", "64", "--out", tmp_path / "x", "--quiet"
    )
    assert refused.exit_code == 2 and "--hidden 16 → 64" in refused.stderr and "--init-from" in refused.stderr
    both = _invoke("train", "--init-from", source_run, "--resume", "--out", source_run)
    assert both.exit_code == 2 and "pick one" in both.stderr


def test_every_setting_is_resumable_or_refused_on_purpose():
    """The rule in one place: changing these on resume is applied; every other change refused."""
    resumable = {spec.name for spec in fields(TrainOptions) if spec.metadata["resumable"]}
    assert resumable == {
        "corpus",
        "valid",  # like CORPUS: the same text (sha256) at another path
        "test",
        "lr",
        "weight_decay",
        "clip",
        "epochs",
        "steps",
        "minutes",
        "eval_every",
        "log_every",
        "tensorboard",  # where the records also go, not what is trained
        "schedule",
        "lr_decay",
        "patience",
        "backend",
        "compile",  # MLX: compiled or eager step, the same numbers
        "decay_patience",  # the word-model schedule settings, optimisation like lr_decay
        "min_lr",
        "at_min_lr",
        "warmup",
    }


def test_toml_without_a_toml_reader_says_to_use_json(tmp_path, monkeypatch):
    """Python 3.10 without tomli: a clear one-line error, not an ImportError."""
    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", None)
    path = tmp_path / "settings.toml"
    path.write_text("hidden = 8\n")
    with pytest.raises(ConfigError, match=r"reading TOML needs Python 3.11\+ \(or pip install tomli\)"):
        read_options_file(path)
