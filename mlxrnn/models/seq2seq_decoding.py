"""Decoding a trained :class:`~mlxrnn.models.seq2seq.Seq2Seq`: greedy and beam search.

Beam search keeps the ``beam_size`` best partial outputs by log p; a finished hypothesis (it
emitted <EOS>) is ranked by ``log p / length^α`` (``length_penalty`` α; GNMT's normalisation
without its constant). A mixin of Seq2Seq, which supplies ``encode``, ``step`` and ``xp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlxrnn.errors import ConfigError, ShapeError
from mlxrnn.nn.module import check_positive_int


@dataclass
class Hypothesis:
    """A decoded output: ids without <EOS>, their log p (the <EOS> included if finished) and score."""

    tokens: list[int]
    log_prob: float
    score: float  #: log_prob / length^α, length = len(tokens) + finished
    finished: bool  #: ended with <EOS> (False: cut at max_length)


def as_ids(xp: Any, value: Any, label: str) -> np.ndarray:
    ids = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else xp.to_numpy(value)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ShapeError(f"{label} must be integer token ids of shape (batch, time); got {ids.dtype} {ids.shape}")
    return ids


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class Seq2SeqDecoding:
    """:meth:`greedy_decode` and :meth:`beam_search` of a Seq2Seq."""

    def greedy_decode(self, source: Any, source_lengths: Any = None, max_length: int = 100) -> list[list[int]]:
        """Greedy decoding: per source sequence, the output ids (without <EOS>)."""
        max_length = check_positive_int("max_length", max_length)
        c = self.config
        state = self.encode(source, source_lengths)
        B = int(as_ids(self.xp, source, "source").shape[0])
        tokens = np.full(B, c.start_id, dtype=np.int32)
        outputs: list[list[int]] = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for _ in range(max_length):
            log_probs, state = self.step(tokens, state)
            log_probs[:, self.banned_ids] = -np.inf
            tokens = log_probs.argmax(axis=1).astype(np.int32)
            for i in np.flatnonzero(~done):
                if tokens[i] == c.eos_id:
                    done[i] = True
                else:
                    outputs[i].append(int(tokens[i]))
            if done.all():
                break
        return outputs

    def beam_search(self, source: Any, source_lengths: Any = None, beam_size: int = 4, max_length: int = 100,
                    length_penalty: float = 1.0) -> list[Hypothesis]:
        """Beam search (see the module docstring): the best :class:`Hypothesis` per source sequence."""
        k = check_positive_int("beam_size", beam_size)
        max_length = check_positive_int("max_length", max_length)
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
            raise ConfigError(f"length_penalty must be a number >= 0, got {length_penalty!r}")
        xp, c = self.xp, self.config
        B = int(as_ids(xp, source, "source").shape[0])
        V = c.target_vocab_size

        def hypothesis(tokens: list[int], log_prob: float, finished: bool) -> Hypothesis:
            length = len(tokens) + int(finished)
            return Hypothesis(tokens, float(log_prob), float(log_prob) / max(length, 1) ** length_penalty, finished)

        state = self._reorder(self.encode(source, source_lengths), np.repeat(np.arange(B), k))  # (·, B·k, H)
        scores = np.full((B, k), -np.inf)
        scores[:, 0] = 0.0  # one live prefix per sequence at first, so the beams do not start as copies
        prefixes: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(B)]
        tokens = np.full(B * k, c.start_id, dtype=np.int32)
        finished: list[list[Hypothesis]] = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for _ in range(max_length):
            log_probs, state = self.step(tokens, state)
            log_probs[:, self.banned_ids] = -np.inf
            candidates = (scores[:, :, None] + log_probs.reshape(B, k, V)).reshape(B, k * V)
            order = np.argsort(-candidates, axis=1, kind="stable")[:, : min(2 * k, k * V)]
            new_scores = np.full((B, k), -np.inf)
            new_tokens = np.full((B, k), c.start_id, dtype=np.int32)
            parents = np.zeros((B, k), dtype=np.intp)
            new_prefixes: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(B)]
            for b in np.flatnonzero(~done):
                filled = 0
                for rank, flat in enumerate(order[b]):
                    score = candidates[b, flat]
                    if not np.isfinite(score):
                        break
                    parent, token = divmod(int(flat), V)
                    if token == c.eos_id:
                        if rank < k:  # only an <EOS> that would have made the beam finishes
                            finished[b].append(hypothesis(prefixes[b][parent], score, True))
                    elif filled < k:
                        new_scores[b, filled], new_tokens[b, filled], parents[b, filled] = score, token, parent
                        new_prefixes[b][filled] = prefixes[b][parent] + [token]
                        filled += 1
                if len(finished[b]) >= k or filled == 0:
                    done[b] = True
                    new_scores[b] = -np.inf
            if done.all():
                break
            scores, prefixes, tokens = new_scores, new_prefixes, new_tokens.reshape(-1)
            state = self._reorder(state, (np.arange(B)[:, None] * k + parents).reshape(-1))
        for b in np.flatnonzero(~done):  # cut at max_length: unfinished prefixes compete too
            finished[b].extend(hypothesis(prefixes[b][i], scores[b, i], False)
                               for i in range(k) if np.isfinite(scores[b, i]))
        return [max(hyps, key=lambda h: h.score) for hyps in finished]

    def _reorder(self, state: Any, index: np.ndarray) -> Any:
        """Select batch rows of a decoder state (L, B, H) — or (h, c) — by ``index``."""
        idx = self.xp.from_numpy(index.astype(np.int32))
        if isinstance(state, tuple):
            return tuple(self.xp.take(part, idx, axis=1) for part in state)
        return self.xp.take(state, idx, axis=1)
