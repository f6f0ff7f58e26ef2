"""The unknown-word literal under ``lowercase`` (issue 29, item 4).

``--lowercase`` lowercases every line before it is split, so an upper-case ``--unk-token`` such as
``UNK`` must be compared lowercased too, or the corpus's unknown words would become an ordinary
word "unk" and <UNK> would never be seen in training.
"""

from __future__ import annotations

import pytest

from mlxrnn.nn.sequences import EOS, UNK
from mlxrnn.run.data import build_vocabulary, make_run_tokenizer
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.tokenizers import WhitespaceTokenizer, WordTokenizer


@pytest.mark.parametrize("kind", [WordTokenizer, WhitespaceTokenizer], ids=["words", "whitespace"])
@pytest.mark.parametrize("literal", ["UNK", "<UNK>", "Unk"])
def test_an_upper_case_unk_token_still_reads_as_unk_when_lowercasing(kind, literal):
    tokenizer = kind(lowercase=True, unk_token=literal)
    assert tokenizer.tokenize(f"The {literal} sat") == ["the", UNK, "sat", EOS]
    assert tokenizer.tokenize(f"the {literal.lower()} sat") == ["the", UNK, "sat", EOS]  # lowercased alike
    assert tokenizer.detokenize(["the", UNK, EOS]) == f"the {literal}\n"  # written back as the corpus has it
    exact = kind(lowercase=False, unk_token=literal)
    assert exact.tokenize(f"the {literal} sat")[1] == UNK
    assert (exact.tokenize(f"the {literal.lower()} sat")[1] == UNK) == (literal == literal.lower())


def test_a_run_with_lowercase_and_an_upper_case_unk_token_trains_on_unk():
    options = TrainOptions(level="word", tokenizer="whitespace", lowercase=True, unk_token="UNK")
    assert make_run_tokenizer(options).tokenize("A UNK b") == ["a", UNK, "b", EOS]
    _, vocab, tokens = build_vocabulary(options, "A UNK b\nthe UNK c UNK\n" * 3)
    assert tokens.count(UNK) == 9 and "unk" not in vocab.tokens and "UNK" not in vocab.tokens
