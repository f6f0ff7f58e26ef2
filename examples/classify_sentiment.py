"""Many-to-one: a SequenceClassifier on the synthetic sentiment-style task of examples/tasks.py.

Sentences are random strings over a 43-word vocabulary and the label is the sign of a sum
of word polarities with "very" (×2) and "not"/"never" (×−1) — a counting task with negation
scope, not real sentiment. Held-out sentences are freshly generated with another seed.

    python examples/classify_sentiment.py                        # binary: sigmoid head, last-state pooling
    python examples/classify_sentiment.py --ratings              # ratings 1–5: softmax head
    python examples/classify_sentiment.py --pooling mean --bidirectional

Prints held-out accuracy beside the majority-class baseline, and the run time.
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
from tasks import sentiment_data  # noqa: E402

import mlxrnn  # noqa: E402
from mlxrnn.nn.sequences import pad_sequences
from mlxrnn.text.vocabulary import Vocabulary


def encode(vocab: Vocabulary, sentences: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    return pad_sequences([vocab.encode(s) for s in sentences])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", action="store_true", help="five ratings (softmax) instead of binary (sigmoid)")
    parser.add_argument("--pooling", default="last", choices=["last", "mean", "max"])
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "mlx", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started, cpu_started = time.perf_counter(), time.process_time()

    train_x, train_y = sentiment_data(args.train_size, seed=args.seed, ratings=args.ratings)
    test_x, test_y = sentiment_data(2000, seed=args.seed + 10_000, ratings=args.ratings)
    vocab = Vocabulary.build((w for s in train_x for w in s), level="word")
    train_ids, train_len = encode(vocab, train_x)
    test_ids, test_len = encode(vocab, test_x)

    num_classes = 5 if args.ratings else 2
    model = mlxrnn.SequenceClassifier(
        input_size=len(vocab), embed_size=32, cell=args.cell, hidden_size=args.hidden,
        bidirectional=args.bidirectional, pooling=args.pooling, num_classes=num_classes, seed=args.seed,
        backend=args.backend,
    )
    # Each batch is cut to its longest sentence by fit; a progress bar shows on a terminal.
    history = model.fit({"inputs": train_ids, "targets": train_y, "lengths": train_len}, epochs=args.epochs,
                        batch_size=args.batch_size, lr=0.005, clip_norm=1.0, seed=args.seed)
    print(f"training loss per epoch: {' '.join(f'{loss:.4f}' for loss in history['loss'])}")

    predictions = model.predict({"inputs": test_ids, "lengths": test_len})
    accuracy = float(np.mean(predictions == test_y))
    majority = float(np.max(np.bincount(test_y, minlength=num_classes)) / len(test_y))
    elapsed = time.perf_counter() - started
    head = model.config.head_kind
    print(f"task: {'ratings 1-5' if args.ratings else 'binary'} sentiment-style ({head} head, "
          f"{args.pooling} pooling, {'bi' if args.bidirectional else 'uni'}directional {args.cell.upper()} "
          f"H={args.hidden}), {args.epochs} epochs in batches of {args.batch_size}, backend {model.xp.name}")
    print(f"held-out accuracy {accuracy:.3f} on {len(test_y)} new sentences (majority class: {majority:.3f})")
    print(f"run time {elapsed:.1f} s (CPU {time.process_time() - cpu_started:.1f} s)")
    return {"accuracy": accuracy, "majority": majority, "seconds": elapsed}


if __name__ == "__main__":
    main()
