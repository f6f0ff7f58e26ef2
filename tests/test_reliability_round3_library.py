"""Reliability, round three (issue 28): library probes and checkpoint vocabularies.

* ``mlxrnn.load`` of a checkpoint whose kind is not a string, or of something that is not a
  path; ``fit`` without targets or with callbacks that are not callbacks: an mlxrnn error saying
  what to pass (item 9);
* vocabulary entries are checked when a checkpoint is loaded: one character each for a character
  model, no whitespace and a bounded length for a word model, no duplicates (item 12).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import mlxrnn
from mlxrnn.errors import CheckpointError, ConfigError, DataError, MLXRNNError
from mlxrnn.models.classifier import SequenceClassifier, SequenceClassifierConfig
from mlxrnn.text import vocabulary
from mlxrnn.text.vocabulary import Vocabulary
from tests.reliability_support import assert_clean, char_run, checkpoint_dir, corpus, edit_meta, invoke, word_run

__all__ = ["char_run", "corpus", "word_run"]  # module fixtures shared with test_reliability

MAX_WORD_CHARS = getattr(vocabulary, "MAX_WORD_CHARS", 1000)


# --------------------------------------------------------------------------------------------
# item 9


@pytest.fixture(scope="module")
def classifier():
    return SequenceClassifier(SequenceClassifierConfig(input_size=10, embed_size=4, hidden_size=4, num_classes=2),
                              backend="numpy")


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory, classifier) -> Path:
    return classifier.save(tmp_path_factory.mktemp("models") / "classifier")


@pytest.mark.parametrize("kind", [["classifier"], {"a": 1}, 3, None, True])
def test_load_of_a_checkpoint_whose_kind_is_not_a_string(tmp_path, saved_classifier, kind):
    copy = tmp_path / "model"
    shutil.copytree(saved_classifier, copy)
    doc = json.loads((copy / "meta.json").read_text())
    doc["meta"]["kind"] = kind
    (copy / "meta.json").write_text(json.dumps(doc))
    for load in (mlxrnn.load, SequenceClassifier.load):
        with pytest.raises(CheckpointError, match="kind"):
            load(copy)


@pytest.mark.parametrize("path", [123, None, 1.5, ["a"], b"\xff"])
def test_load_of_something_that_is_not_a_path(path):
    for load in (mlxrnn.load, SequenceClassifier.load):
        with pytest.raises(MLXRNNError, match="path") as error:
            load(path)
        assert isinstance(error.value, (ConfigError, CheckpointError))


def test_fit_without_targets_says_what_to_pass(classifier):
    x = np.ones((6, 5), np.int32)
    y = np.zeros(6, np.int32)
    for data in ({"inputs": x}, [{"inputs": x}], {"targets": y}):
        with pytest.raises(ConfigError, match="targets|inputs"):
            classifier.fit(data, epochs=1)
    with pytest.raises(ConfigError, match="validation"):
        classifier.fit({"inputs": x, "targets": y}, {"inputs": x}, epochs=1)


@pytest.mark.parametrize("callbacks", [5, "early", [5], [object()], {"a": 1}.values()])
def test_fit_with_callbacks_that_are_not_callbacks(classifier, callbacks):
    x, y = np.ones((6, 5), np.int32), np.zeros(6, np.int32)
    before = classifier.numpy_parameters()
    with pytest.raises(ConfigError, match="callbacks"):
        classifier.fit((x, y), epochs=1, callbacks=callbacks)
    after = classifier.numpy_parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # refused before any step


def test_fit_still_takes_real_callbacks(classifier):
    from mlxrnn.training.callbacks import EarlyStopping

    x, y = np.ones((6, 5), np.int32), np.zeros(6, np.int32)

    class Counter:
        batches = 0

        def on_batch_end(self, loop, index, loss):
            Counter.batches += 1

    history = classifier.fit((x, y), (x, y), epochs=2, batch_size=3, callbacks=(EarlyStopping(patience=3), Counter()))
    assert len(history.epochs) == 2 and Counter.batches == 4


# --------------------------------------------------------------------------------------------
# item 12


SPECIALS = ["<PAD>", "<UNK>", "<EOS>"]
VOCAB_CASES = {
    "a char entry of 300,000 characters": ("char", SPECIALS + ["a", "x" * 300_000, "b"], "one character"),
    "a char entry of two characters": ("char", SPECIALS + ["a", "ab"], "one character"),
    "an empty char entry": ("char", SPECIALS + ["a", ""], "one character"),
    "a duplicate char": ("char", SPECIALS + ["a", "b", "a"], "more than once"),
    "a word with a space": ("word", SPECIALS + ["the", "a cat"], "whitespace"),
    "a word with a newline": ("word", SPECIALS + ["the", "cat\n"], "whitespace"),
    "an empty word": ("word", SPECIALS + ["the", ""], "empty"),
    "an endless word": ("word", SPECIALS + ["the", "w" * (MAX_WORD_CHARS + 1)], "longer than"),
    "a duplicate word": ("word", SPECIALS + ["the", "cat", "the"], "more than once"),
}


@pytest.mark.parametrize("case", list(VOCAB_CASES))
def test_vocabulary_entries_are_checked_on_load(case):
    level, tokens, says = VOCAB_CASES[case]
    with pytest.raises(DataError, match=says):
        Vocabulary.from_dict({"level": level, "tokens": tokens}).check_entries()


def test_good_vocabularies_still_load():
    chars = Vocabulary.from_dict({"level": "char", "tokens": SPECIALS + ["a", "\n", " ", "é", "\U0001f600"]})
    words = Vocabulary.from_dict({"level": "word", "tokens": SPECIALS + ["the", "<unk>", "don't", "w" * MAX_WORD_CHARS]})
    chars.check_entries(), words.check_entries()
    assert len(chars) == 8 and len(words) == 7


def test_building_a_word_vocabulary_leaves_endless_words_unknown():
    long = "w" * (MAX_WORD_CHARS + 1)
    vocab = Vocabulary.build(["the", long, long, "cat"], level="word")
    assert long not in vocab and "the" in vocab
    assert Vocabulary.from_dict(vocab.to_dict()).check_entries() == vocab
    extended = vocab.extended([long, "dog"])
    assert long not in extended and "dog" in extended


@pytest.mark.parametrize("entry", ["x" * 300_000, "ab", ""])
def test_a_checkpoint_with_a_bad_char_entry_fails_in_one_line(tmp_path, char_run, entry):
    run = tmp_path / "run"
    shutil.copytree(char_run, run)

    def replace(doc):
        doc["meta"]["vocab"]["tokens"][5] = entry

    edit_meta(checkpoint_dir(run), replace)
    assert_clean(invoke("sample", run, "--length", "5", "--backend", "numpy"), 1, "vocabulary")
    with pytest.raises(CheckpointError, match="vocabulary"):
        mlxrnn.load(run)


def test_a_checkpoint_with_a_bad_word_entry_fails_in_one_line(tmp_path, word_run):
    run = tmp_path / "run"
    shutil.copytree(word_run, run)

    def replace(doc):
        doc["meta"]["vocab"]["tokens"][4] = "two words"

    edit_meta(checkpoint_dir(run), replace)
    assert_clean(invoke("score", run, "the apple", "--backend", "numpy"), 1, "vocabulary", "whitespace")
