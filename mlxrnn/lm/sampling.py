"""Sampling novel sequences and scoring sentences (evaluating a file: :mod:`mlxrnn.lm.evaluation`).

Sampling (the notes' "sampling novel sequences"): feed the start token (or a prime text), turn
the predicted distribution ŷ⟨t⟩ into a draw y⟨t⟩, feed y⟨t⟩ back as x⟨t+1⟩, until <EOS> or a
length. Controls, applied in this order to the logits z:
    temperature τ:  p ∝ exp(z / τ)            (τ → 0 is greedy; τ > 1 flattens)
    top-k:          keep the k most probable tokens
    top-p:          keep the smallest set whose probability reaches p (nucleus sampling)
<PAD> is never drawn, and <UNK> only when ``allow_unk``: the notes reject and redraw an
<UNK>; zeroing its probability and renormalising draws from exactly that distribution.

Scoring uses the chain rule: log p(y1 … yn) = Σ_t log p(y_t | y_<t), with the start token as
the context of y1.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.lm.compiled_sampling import CompiledSampler
from mlxrnn.lm.evaluation import perplexity
from mlxrnn.lm.network import LanguageNetwork
from mlxrnn.models.decoding import MAX_BATCH_PROBABILITIES, SamplingOptions, draw_tokens, next_token_distribution
from mlxrnn.nn.sequences import UNK
from mlxrnn.text.tokenizers import make_tokenizer

#: the most tokens :func:`sample` keeps to return (about 0.5 GB of ids and text at this size)
MAX_KEPT_TOKENS = 10_000_000


def banned_ids(lm: LanguageNetwork, allow_unk: bool) -> list[int]:
    banned = [lm.vocab.pad_id]
    if not allow_unk:
        banned.append(lm.vocab.unk_id)
    if lm.level != "word":  # <EOS> never occurs in a character or bpe stream: it would end a sample at random
        banned.append(lm.vocab.eos_id)
    return banned


def encode_prime(lm: LanguageNetwork, prime: str) -> np.ndarray:
    """Prime text → ids, refusing tokens the vocabulary does not know (they would read as <UNK>)."""
    tokens = lm.tokenizer.tokenize(prime)
    if lm.level == "word" and tokens and tokens[-1] == "<EOS>" and not prime.endswith("\n"):
        tokens = tokens[:-1]  # a prime is a beginning, not a finished line
    unknown = sorted({t for t in tokens if t not in lm.vocab})
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:5])
        raise DataError(
            f"the prime text has {len(unknown)} token(s) outside the model's vocabulary: {shown}; "
            "remove them or pass `allow_unk` to map them to <UNK>"
        )
    return lm.vocab.encode(tokens)


@dataclass
class Samples:
    ids: list[list[int]]  #: generated ids per sample (prime excluded, <EOS> included if drawn)
    texts: list[str] = field(default_factory=list)  #: the generated text per sample (prime excluded)
    prime: str = ""  #: the text the samples continue
    level: str = "char"  #: the tokenizer's level, which decides how the prime and a text join

    def with_prime(self) -> list[str]:
        """Each sample as ``mlxrnn sample`` prints it: the prime, then the generated text (a word
        model puts a space between them where its tokenizer would)."""
        if self.level != "word":  # characters and bpe pieces carry their own spacing
            return [self.prime + text for text in self.texts]
        join = make_tokenizer(self.level).continue_text
        return [join(self.prime, text) for text in self.texts]

    def to_dict(self) -> dict:
        """The JSON of ``mlxrnn sample --json``: ``{"prime": ..., "samples": [texts without the prime]}``."""
        return {"prime": self.prime, "samples": list(self.texts)}


def sample(
    lm: LanguageNetwork,
    length: int = 200,
    num_samples: int = 1,
    prime: str = "",
    options: SamplingOptions | None = None,
    seed: int | None = None,
    stop_at_eos: bool = True,
    on_token: Callable[[int, str], None] | None = None,
    allow_unknown_prime: bool = False,
    sentences: int | None = None,
    keep: bool = True,
) -> Samples:
    """Generate ``num_samples`` sequences of up to ``length`` tokens as one batch.

    A word model's sample ends at its first <EOS> (``stop_at_eos``); with ``sentences`` = n it
    goes on past each <EOS> (the model read its corpus as one stream, sentence after sentence)
    and ends after the n-th. For a character model ``sentences`` counts lines ("\n"). Either
    way ``length`` bounds the tokens drawn.
    ``on_token(sample_index, text)`` is called for every new token as it is drawn (streaming).
    ``seed`` makes the draws reproducible. On MLX the draws are made on the device from an MLX
    key (see :mod:`mlxrnn.lm.mlx_sampling`): reproducible too, but not NumPy's texts. With
    ``keep=False`` the returned Samples are empty and memory stays constant whatever the length
    (only ``on_token`` sees the tokens); kept samples are limited to :data:`MAX_KEPT_TOKENS`
    tokens in all.
    """
    options = (options or SamplingOptions()).validate()
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ConfigError(f"must be a positive integer, got {length!r}", field="length")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"must be a positive integer, got {num_samples!r}", field="num_samples")
    if num_samples * len(lm.vocab) > MAX_BATCH_PROBABILITIES:
        raise ConfigError(
            f"{num_samples} samples × {len(lm.vocab)} vocabulary entries is too large to draw as one batch "
            f"(limit {MAX_BATCH_PROBABILITIES:,} probabilities); lower `num_samples`"
        )
    if keep and length * num_samples > MAX_KEPT_TOKENS:
        raise ConfigError(
            f"`length` × `num_samples` = {length * num_samples:,} tokens would be held in memory until the end "
            f"(at most {MAX_KEPT_TOKENS:,}); lower them, or draw one sample, which is printed as it is drawn"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"must be a non-negative integer, got {seed!r}", field="seed")
    if sentences is not None and (isinstance(sentences, bool) or not isinstance(sentences, int) or sentences < 1):
        raise ConfigError(f"must be a positive integer, got {sentences!r}", field="sentences")
    if not isinstance(prime, str):
        raise ConfigError(f"the prime must be a string, got {type(prime).__name__}")
    prime_ids = lm.vocab.encode(lm.tokenizer.tokenize(prime)) if allow_unknown_prime else encode_prime(lm, prime)
    context = np.tile(np.concatenate([[lm.start_id], prime_ids]).astype(np.int32), (num_samples, 1))
    banned = banned_ids(lm, options.allow_unk)
    if lm.xp.name == "mlx":  # the per-token path on the device, one id per sample back per token
        from mlxrnn.lm.mlx_sampling import TokenSampler

        stream = TokenSampler(lm.model, options, banned).stream(context, seed)
    else:
        stream = _numpy_stream(lm, context, options, banned, np.random.default_rng(seed))
    generated: list[list[int]] = [[] for _ in range(num_samples)]
    finished = np.zeros(num_samples, dtype=bool)
    if sentences is None and stop_at_eos and lm.level == "word":
        sentences = 1
    # The token that ends a sentence: <EOS> for word models, a newline for character (and bpe) models.
    newline = getattr(lm.tokenizer, "start_token", "\n")
    end_id = lm.vocab.eos_id if lm.level == "word" else lm.vocab.token_to_id(newline) if newline in lm.vocab else None
    text_of = _token_texts(lm, num_samples)
    ended = np.zeros(num_samples, dtype=np.int64)
    for _, tokens in zip(range(length), stream):
        for i, token in enumerate(tokens):
            if finished[i]:
                continue
            if keep:
                generated[i].append(int(token))
            if on_token is not None:
                on_token(i, text_of(i, int(token)))
            if sentences is not None and token == end_id:
                ended[i] += 1
                finished[i] = ended[i] >= sentences
        if finished.all():
            break
    if not keep:
        return Samples([], [], prime, lm.level)
    texts = [lm.decode(ids) for ids in generated]
    return Samples(generated, texts, prime, lm.level)


def _numpy_stream(lm: LanguageNetwork, context: np.ndarray, options: SamplingOptions, banned: list[int],
                  rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Feed ``context`` (B, T), then yield the drawn ids (B,) of every step; the host path, drawn
    from ``rng`` (the next step runs only when the caller asks for the next ids; one sample on the
    numba kernels runs :class:`~mlxrnn.lm.compiled_sampling.CompiledSampler`, a chunk of steps ahead)."""
    logits, state = lm.next_token_logits(context)
    compiled = CompiledSampler.for_model(lm.model) if context.shape[0] == 1 else None
    if compiled is not None:  # one sample on numba: step, controls and draw in one compiled loop
        yield from compiled.stream(logits, state, banned, rng, options.temperature, options.top_k, options.top_p,
                                   options.greedy)
        return
    step = lm.token_stepper()  # the cache-free per-token path after the context
    while True:
        tokens = draw_tokens(next_token_distribution(logits, options, banned), rng, options.greedy)
        yield tokens
        logits, state = step(tokens, state)


def _token_texts(lm: LanguageNetwork, num_samples: int) -> Callable[[int, int], str]:
    """``text_of(sample, token_id)``: the text a drawn token adds to its sample, as it is drawn.
    A bpe token may hold part of a character: its bytes wait in the sample's UTF-8 decoder."""
    if hasattr(lm.tokenizer, "token_bytes"):
        decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(num_samples)]
        return lambda i, token_id: decoders[i].decode(lm.tokenizer.token_bytes(lm.vocab.id_to_token(token_id)))

    def text_of(i: int, token_id: int) -> str:
        token = lm.vocab.id_to_token(token_id)
        if lm.level == "char":
            return token
        return "\n" if token == "<EOS>" else token + " "

    return text_of


@dataclass
class SentenceScore:
    text: str
    tokens: list[str]  #: the text's tokens as its tokenizer made them
    log_probs: list[float]  #: natural-log p(token | previous tokens), one per token
    unknown: list[bool] = field(default_factory=list)  #: per token: outside the vocabulary, scored as <UNK>
    index: int = 0  #: its position among the texts scored together (the input order)

    @property
    def num_oov(self) -> int:
        """Tokens scored as <UNK>: ``--json``'s name for :attr:`num_unknown`."""
        return self.num_unknown

    @property
    def oov_rate(self) -> float:
        """The fraction of tokens outside the vocabulary."""
        return self.num_unknown / max(len(self.tokens), 1)

    @property
    def num_unknown(self) -> int:
        """Tokens outside the vocabulary, scored as <UNK>."""
        return sum(self.unknown)

    # The properties carry the names of the CLI's JSON keys (see to_dict); ``total`` and ``mean``
    # are their older names.
    @property
    def log_prob(self) -> float:
        """log p(text), natural log: the sum of :attr:`log_probs`."""
        return float(sum(self.log_probs))

    @property
    def mean_log_prob(self) -> float:
        """log p per token: :attr:`log_prob` / :attr:`num_tokens`."""
        return self.log_prob / max(len(self.log_probs), 1)

    @property
    def num_tokens(self) -> int:
        """Tokens scored (a word model's <EOS> included)."""
        return len(self.tokens)

    total = log_prob
    mean = mean_log_prob

    @property
    def perplexity(self) -> float:
        """exp(−:attr:`mean_log_prob`): the per-token perplexity of this text."""
        return perplexity(-self.mean_log_prob)

    @property
    def bits_per_char(self) -> float:
        """−log₂ p(text) over its characters: comparable across tokenizers (see lm.evaluation)."""
        return -self.log_prob / max(len(self.text), 1) / math.log(2)

    def to_dict(self) -> dict:
        """The record of ``mlxrnn score --json``: index, text, log p and its per-token forms, OOV, tokens."""
        return {
            "index": self.index,
            "text": self.text,
            "log_prob": self.log_prob,
            "mean_log_prob": self.mean_log_prob,
            "perplexity": self.perplexity,
            "bits_per_char": self.bits_per_char,
            "num_tokens": self.num_tokens,
            "num_oov": self.num_oov,
            "oov_rate": self.oov_rate,
            "tokens": [
                {"token": t, "log_prob": lp, "unk": t == UNK or oov}
                for t, lp, oov in zip(self.tokens, self.log_probs, self.unknown or [False] * len(self.tokens))
            ],
        }


def score(lm: LanguageNetwork, texts: Sequence[str]) -> list[SentenceScore]:
    """log p(text) by the chain rule for each text; unknown words score as <UNK> (and are
    flagged in :attr:`SentenceScore.unknown`, since p(<UNK>) is not the word's probability).

    A word-level text ends with <EOS> (the tokenizer adds it), so its probability includes
    the probability of the sentence ending there, as in the notes.
    """
    if isinstance(texts, str):
        raise ConfigError("score takes a list of texts, not one string; wrap it: score(lm, [text])")
    results = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"texts to score must be strings, got {type(text).__name__} {text!r:.60}")
        tokens = lm.tokenizer.tokenize(text)
        if not tokens:
            raise DataError(f"cannot score {text!r}: it has no tokens")
        ids = lm.vocab.encode(tokens)
        inputs = np.concatenate([[lm.start_id], ids[:-1]]).astype(np.int32)[None, :]
        log_probs, _ = lm.log_probs(inputs)
        picked = log_probs[0, np.arange(len(ids)), ids]
        unknown = [token not in lm.vocab for token in tokens]
        results.append(SentenceScore(text, list(tokens), [float(v) for v in picked], unknown, index))
    return results
