"""The initial values of a new language model's embedding table E (V, E), also its output layer when tied.

Word models start E ~ U(−r, r) with r = :data:`WORD_INIT_RANGE` = 0.25. Before issue 24 they
started E ~ N(0, 1), also when E is tied into the output layer, so the first logits h·E had a
standard deviation near √E·|h| (a fresh tied 2 × 200 model with V = 10k had loss 9.68 against
log V = 9.21) and SGD spent its first epochs shrinking E. The untied output layer keeps
W ~ U(±1/√H), b = 0 (PyTorch's nn.Linear; the example's U(±0.1) is the same scale at H = 200).
Character models keep E ~ N(0, 1): their defaults were measured with it, and the runs below say
nothing about a 65-symbol vocabulary.

Chosen by short runs (``benchmarks/word_lm_init.py``, 2026-12-07): a tied 2 × 200 LSTM, batch
20 × 35, dropout 0.5 at the embedding, between layers and before the output, constant rate,
seed 0, on word-level tiny-shakespeare (lowercased, 256,976 training tokens, vocabulary 11,829),
one thread; every candidate runs the same steps with the same dropout masks, so only E's start
differs. Validation perplexity after 100 / 200 / 300 (/ 400 / 500 / 600) steps (367 steps are an
epoch):

    SGD lr 20, clip 0.25 (the PyTorch example's recipe)
      N(0, 1)    (before)     351.2  269.3  240.2
      U(±0.5)                 340.3  241.5  195.7  179.9  171.8  165.7
      U(±0.25)   (chosen)     579.3  258.4  206.1  181.6  170.7  162.6
      U(±0.1)    (example)    546.5  305.1  195.5  186.8  171.7  160.6
      U(±0.05)                530.1  339.2  205.9
    Adam lr 2e-3, clip 5 (the character model's recipe)
      N(0, 1)    (before)     356.8  248.3  217.7
      U(±0.5)                 284.8  246.5  216.3
      U(±0.25)   (chosen)     303.2  249.6  212.8  205.0  197.7  189.8
      U(±0.1)    (example)    729.8  852.5  1376.6   (climbs: Adam's steps of about lr per
                                                      coordinate swamp a ±0.1 table that is
                                                      also the output layer)

Any uniform start beats N(0, 1) with SGD (by 19-33% at 300 steps); the example's U(±0.1) is best
with SGD at 600 steps but wrecks Adam, the default optimizer. U(±0.25) is within 1.3% of the best
at 600 steps with SGD and the best with Adam, so one value serves both. A run resumed, or a
model loaded, reads its weights from its checkpoint, so this decides only what a new run starts
from (and, with ``init_from``, the rows of tokens the source's vocabulary lacks).
"""

from __future__ import annotations

#: a new word model's embedding starts U(−WORD_INIT_RANGE, WORD_INIT_RANGE) (see the module doc)
WORD_INIT_RANGE = 0.25


def initial_range(level: str) -> float | None:
    """The ``embed_init_range`` of a new model of ``level``: word U(±0.25), char None (N(0, 1))."""
    return WORD_INIT_RANGE if level == "word" else None
