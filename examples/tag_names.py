"""Many-to-many, same length: a SequenceTagger marks person names in generated sentences.

The task (examples/tasks.py) is the notes' name tagging, "Harry Potter and Hermione Granger
invented a new spell" → 1 1 0 1 1 0 0 0 0, on template sentences. Eight first names (Rose,
Will, Mark, Grace, Hope, Jack, Teddy, Bill) also open sentences as ordinary words ("Teddy
bears sat on the shelf"), so at the first word only what comes *after* it decides the tag.
Held-out sentences pair first and last names in combinations training never saw.

    python examples/tag_names.py                  # bidirectional LSTM (the tagger's default), then a
                                                  # forward-only one as the baseline
    python examples/tag_names.py --no-baseline    # the bidirectional tagger only

Prints, per model, held-out name-span F1 (exact spans), accuracy on the ambiguous sentence
openings and the run time.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices here are small. On a 2-core machine two OpenBLAS threads were
# ~10% faster when idle but up to 10x slower when other work shared the cores (they spin-wait).
# Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from tasks import AMBIGUOUS_FIRST, name_spans, name_tagging_data  # noqa: E402

import mlxrnn  # noqa: E402
from mlxrnn.nn.sequences import pad_sequences
from mlxrnn.text.vocabulary import Vocabulary


def evaluate(model: mlxrnn.SequenceTagger, ids: np.ndarray, lengths: np.ndarray, sentences, tags) -> dict:
    predicted = model.predict({"inputs": ids, "lengths": lengths})
    true_spans = pred_spans = hits = 0
    ambiguous_right = ambiguous_total = 0
    for b, (words, gold) in enumerate(zip(sentences, tags)):
        guess = predicted[b, : len(words)]
        gold_set, guess_set = name_spans(gold), name_spans(guess)
        true_spans, pred_spans, hits = true_spans + len(gold_set), pred_spans + len(guess_set), \
            hits + len(gold_set & guess_set)
        if words[0] in AMBIGUOUS_FIRST:
            ambiguous_total += 1
            ambiguous_right += int(guess[0] == gold[0])
    precision, recall = hits / max(pred_spans, 1), hits / max(true_spans, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"f1": f1, "ambiguous_accuracy": ambiguous_right / max(ambiguous_total, 1)}


def train_tagger(args, bidirectional: bool, vocab, train_ids, train_len, train_tags) -> mlxrnn.SequenceTagger:
    model = mlxrnn.SequenceTagger(input_size=len(vocab), embed_size=32, cell="lstm", hidden_size=args.hidden,
                                  bidirectional=bidirectional, seed=args.seed, backend=args.backend)
    history = model.fit({"inputs": train_ids, "targets": train_tags, "lengths": train_len}, epochs=args.epochs,
                        batch_size=args.batch_size, lr=0.01, clip_norm=1.0, seed=args.seed)
    print(f"  training loss per epoch: {' '.join(f'{loss:.4f}' for loss in history['loss'])}")
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="skip the forward-only baseline")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "mlx", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train_x, train_t = name_tagging_data(5000, seed=args.seed)
    test_x, test_t = name_tagging_data(2000, seed=args.seed + 10_000, held_out=True)
    vocab = Vocabulary.build((w for s in train_x for w in s), level="word")
    train_ids, train_len = pad_sequences([vocab.encode(s) for s in train_x])
    train_tags, _ = pad_sequences(train_t, pad_id=-1)
    test_ids, test_len = pad_sequences([vocab.encode(s) for s in test_x])

    settings = [True] if args.no_baseline else [True, False]
    results = {}
    for bidirectional in settings:
        started, cpu_started = time.perf_counter(), time.process_time()
        name = "bidirectional" if bidirectional else "forward-only"
        print(f"training a {name} LSTM tagger (H={args.hidden}), {args.epochs} epochs in batches of {args.batch_size}")
        model = train_tagger(args, bidirectional, vocab, train_ids, train_len, train_tags)
        metrics = evaluate(model, test_ids, test_len, test_x, test_t)
        metrics["seconds"] = time.perf_counter() - started
        results[name] = metrics
        print(f"{name}: held-out name-span F1 {metrics['f1']:.3f}, ambiguous openings tagged right "
              f"{metrics['ambiguous_accuracy']:.3f} (2000 sentences, unseen name pairs; backend {model.xp.name}); "
              f"run time {metrics['seconds']:.1f} s (CPU {time.process_time() - cpu_started:.1f} s)")
    return results


if __name__ == "__main__":
    main()
