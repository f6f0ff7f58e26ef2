"""Evaluating a language model: mean negative log-likelihood per token over a token stream.

One loop serves every caller: the training run's validation (B parallel streams cut into
windows by an :class:`~mlxrnn.text.batching.LMBatcher`) and ``mlxrnn eval`` (one stream of a
whole file). Windows are read in order and the recurrent state is carried from one to the
next, as in training, so the model sees each token with all of its past:

    loss = −(1/N) Σ_t log p(y_t | y_<t)        perplexity = exp(loss)        bits = loss / ln 2
    bits per character = (N · loss) / C / ln 2      (total nats over the text's C characters)

N counts the tokens of the model's tokenizer (for word models every word, punctuation mark and
<EOS>), so a perplexity is per token of that tokenizer; :class:`Evaluation` says which. Bits per
character divide the same total by the characters of the evaluated text (``len(text)``, spaces and
newlines included), which every tokenizer shares: a char, word and bpe model of one text compare
by it (for a character model it equals the bits per token). Words the vocabulary does not know are
scored as <UNK>: the out-of-vocabulary rate says how much of the text that is, and
:func:`unknown_scoring_note` what it did to the loss (cheaper than the words themselves when
training taught <UNK>; many nats each when the training text never produced it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, DataError, ShapeError
from mlxrnn.lm.network import LanguageNetwork
from mlxrnn.nn.losses import softmax_cross_entropy


def perplexity(loss: float) -> float:
    """exp(loss), inf instead of an OverflowError for the absurd losses of a broken model."""
    return math.exp(loss) if loss < 709.0 else math.inf


def unknown_rate(tokens: list[str], vocab: Any) -> tuple[int, float]:
    """(count, fraction) of ``tokens`` outside ``vocab``: words scored as <UNK> that the text
    spelled out. A literal unknown-word marker (already <UNK> in the tokens) is not counted."""
    unknown = sum(1 for token in tokens if token not in vocab)
    return unknown, unknown / max(len(tokens), 1)


#: the checkpoint key (runs since 0.2.0's issue 24) counting the <UNK> tokens of the training text
UNKNOWN_IN_TRAINING = "unknown_in_training"


def unknown_scoring_note(meta: Any) -> str:
    """How out-of-vocabulary tokens were scored, from what the checkpoint ``meta`` says of training.

    <UNK> is one class for every unknown word. When the training text produced it (rare words cut
    by `min_count` or `max_vocab`, or a literal unknown-word marker) the model predicts "some
    unknown word comes", which is cheaper than predicting the word itself. When it never did,
    <UNK> was never a target: its probability was pushed toward zero and each such token costs
    many nats. Models saved without a training run say neither.
    """
    trained = meta.get(UNKNOWN_IN_TRAINING) if isinstance(meta, dict) else None
    if isinstance(trained, bool) or not isinstance(trained, int):
        return ("scored as <UNK> (this checkpoint does not record whether its training text had <UNK>: if it had "
                "none, each of these tokens costs many nats)")
    if trained == 0:
        return ("scored as <UNK>, which the model never saw in training: it gives <UNK> almost no probability, so "
                "each of these tokens costs many nats and the perplexity is worse than the words' own; retrain with "
                "`min_count` 2 (or a `max_vocab` cap) so that rare training words teach <UNK>")
    return (f"scored as <UNK>, which the model learned from {trained:,} training tokens: it predicts that an "
            "unknown word comes, not which one, so these tokens cost less than the words themselves would")


@dataclass
class Evaluation:
    """What ``mlxrnn eval`` reports; each attribute has the name of its key in ``--json``."""

    loss: float  #: mean negative log-likelihood per token (nats)
    num_tokens: int
    level: str
    tokenizer: str | None = None  #: the kind of token the loss is per ("chars", "words", "whitespace")
    num_unknown: int | None = None  #: tokens outside the vocabulary (scored as <UNK>), when known
    num_chars: int | None = None  #: characters of the evaluated text, when known (bits per character)

    @property
    def perplexity(self) -> float:
        """exp(loss): the per-token perplexity."""
        return perplexity(self.loss)

    @property
    def bits_per_token(self) -> float:
        """The loss in bits (loss / ln 2)."""
        return self.loss / math.log(2)

    @property
    def bits_per_char(self) -> float | None:
        """Total bits over the text's characters (see the module docstring); a character model's
        bits per token when the characters are not known, else None."""
        if self.num_chars:
            return self.loss * self.num_tokens / self.num_chars / math.log(2)
        return self.bits_per_token if self.level == "char" else None

    @property
    def num_oov(self) -> int | None:
        """Tokens scored as <UNK> (outside the vocabulary), when known: ``--json``'s name."""
        return self.num_unknown

    @property
    def oov_rate(self) -> float | None:
        """The fraction of tokens outside the vocabulary, when known."""
        return None if self.num_unknown is None else self.num_unknown / max(self.num_tokens, 1)

    def to_dict(self) -> dict:
        """The JSON of ``mlxrnn eval --json``: loss, perplexity, num_tokens, bits_per_token, and
        bits_per_char (with num_chars) when the characters are known."""
        data = {"loss": self.loss, "perplexity": self.perplexity, "num_tokens": self.num_tokens,
                "bits_per_token": self.bits_per_token}
        if self.bits_per_char is not None:
            data["bits_per_char"] = self.bits_per_char
        if self.num_chars is not None:
            data["num_chars"] = self.num_chars
        data["level"] = self.level
        if self.tokenizer is not None:
            data["tokenizer"] = self.tokenizer
        if self.num_unknown is not None:
            data["num_oov"], data["oov_rate"] = self.num_unknown, self.oov_rate
        return data


def evaluate_windows(
    lm: LanguageNetwork,
    windows: Iterable[tuple[np.ndarray, np.ndarray]],
    dist: Any = None,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Mean NLL per token over consecutive ``(inputs, targets)`` windows, each (B, T) int32,
    row b of a window continuing row b of the previous one (the state is carried across).

    ``dist`` (a :class:`~mlxrnn.training.distributed.DataParallel`): each process evaluates its
    rows and the sums are added up over all. ``progress(tokens_done)`` is called after each window.
    """
    xp, state, total, count = lm.xp, None, 0.0, 0
    for inputs, targets in windows:
        logits, state, _ = lm.model.forward(inputs, initial_state=state, keep_cache=False)  # no gradient buffers
        loss, _ = softmax_cross_entropy(xp, logits, targets, reduction="sum", gradient=False)
        total += xp.item(loss)
        count += targets.size
        if progress is not None:
            progress(count)
    if dist is not None:
        total, count = dist.sum_values(total, count)
    if count == 0:
        raise DataError("nothing to evaluate: there are no tokens")
    return Evaluation(total / count, int(count), lm.level, lm.tokenizer.kind)


def _stream_windows(lm: LanguageNetwork, ids: np.ndarray, window: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One stream as (1, window) windows: targets ids[t], inputs ids[t-1] (the start token first)."""
    inputs_all = np.concatenate([[lm.start_id], ids[:-1]]).astype(np.int32)
    for start in range(0, ids.size, window):
        yield inputs_all[None, start : start + window], ids[None, start : start + window]


def evaluate_ids(
    lm: LanguageNetwork, ids: np.ndarray, window: int = 256, progress: Callable[[int, int], None] | None = None
) -> Evaluation:
    """Mean NLL of ids[t] given ids[<t] over a whole stream (the first token given the start token).

    ``progress(tokens_done, total_tokens)`` is called after each window of ``window`` tokens.
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError("must be a positive integer, got " + repr(window), field="window")
    ids = np.asarray(ids)
    if ids.size < 1:
        raise DataError("nothing to evaluate: the text has no tokens")
    if ids.dtype.kind not in "iu" or ids.ndim != 1:
        raise ShapeError(f"ids must be a 1-D sequence of integer token ids; got shape {ids.shape} dtype {ids.dtype}")
    if ids.min() < 0 or ids.max() >= len(lm.vocab):  # before the int32 cast, which could wrap
        bad = int(ids.max()) if ids.max() >= len(lm.vocab) else int(ids.min())
        raise ConfigError(f"token id {bad} is out of range for a vocabulary of {len(lm.vocab)}")
    ids = ids.astype(np.int32)
    report = None if progress is None else (lambda done: progress(done, int(ids.size)))
    return evaluate_windows(lm, _stream_windows(lm, ids, window), progress=report)


def evaluate_text(lm: LanguageNetwork, text: str, **kwargs: Any) -> Evaluation:
    """:func:`evaluate_ids` of ``text`` encoded with the model's tokenizer and vocabulary, with
    its out-of-vocabulary count and its characters (bits per character)."""
    if hasattr(lm.tokenizer, "encode_ids"):  # bpe: every byte is in the vocabulary, nothing is unknown
        result = evaluate_ids(lm, lm.tokenizer.encode_ids(text), **kwargs)
        result.num_unknown = 0
    else:
        tokens = lm.tokenizer.tokenize(text)
        result = evaluate_ids(lm, lm.vocab.encode(tokens), **kwargs)
        result.num_unknown = unknown_rate(tokens, lm.vocab)[0]
    result.num_chars = len(text)
    return result
