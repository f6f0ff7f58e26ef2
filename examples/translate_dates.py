"""Encoder–decoder: a Seq2Seq translates human-written dates into ISO format, character by character.

    "25th of March 2024" → "2024-03-25"     (also "March 25, 2024", "25 March 2024",
                                             "Mar 25 2024", "25/03/2024")

Pairs are generated (examples/tasks.py) from dates between 1950 and 2049; the held-out
dates never occur in training, in any format. The encoder reads the source characters; its
final state is the decoder's initial state; the decoder is trained with teacher forcing and
decodes greedily or with beam search until it emits <EOS>. No attention: everything the
decoder knows about the source passes through that one state.

    python examples/translate_dates.py                   # greedy decoding
    python examples/translate_dates.py --beam-size 4     # beam search, length-normalised

Prints held-out exact-match accuracy (whole output string equal to the ISO date) and the run time.
"""

from __future__ import annotations

import os

# One BLAS thread: the matrices here are small. On a 2-core machine two OpenBLAS threads were
# ~10% faster when idle but up to 10x slower when other work shared the cores (they spin-wait).
# Set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

from tasks import date_pairs  # noqa: E402

import mlxrnn  # noqa: E402
from mlxrnn.text.vocabulary import Vocabulary


def build(pairs, source_vocab: Vocabulary, target_vocab: Vocabulary) -> dict:
    return mlxrnn.seq2seq_batch([source_vocab.encode(s) for s, _ in pairs],
                                [target_vocab.encode(t) for _, t in pairs])


def exact_match(model: mlxrnn.Seq2Seq, pairs, source_vocab, target_vocab, beam_size: int, batch: int = 500):
    right, shown = 0, []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        data = build(chunk, source_vocab, target_vocab)
        outputs = model.translate(data["source"], data["source_lengths"], beam_size=beam_size, max_length=12)
        for (source, target), ids in zip(chunk, outputs):
            text = "".join(target_vocab.decode(ids))
            right += text == target
            if len(shown) < 5:
                shown.append(f"{source!r:24} → {text!r}  ({'ok' if text == target else 'want ' + target})")
    return right / len(pairs), shown


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--bidirectional-encoder", action="store_true")
    parser.add_argument("--scheduled-sampling", type=float, default=0.0, help="probability of feeding predictions")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "mlx", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started, cpu_started = time.perf_counter(), time.process_time()

    train, test = date_pairs(args.train_size, args.test_size, seed=args.seed)
    source_vocab = Vocabulary.build((c for s, _ in train for c in s), level="char")
    target_vocab = Vocabulary.build((c for _, t in train for c in t), level="char")
    model = mlxrnn.Seq2Seq(
        source_vocab_size=len(source_vocab), target_vocab_size=len(target_vocab), embed_size=24, cell=args.cell,
        hidden_size=args.hidden, bidirectional_encoder=args.bidirectional_encoder,
        scheduled_sampling=args.scheduled_sampling, seed=args.seed, backend=args.backend,
    )
    decay_over_the_last_half = mlxrnn.LearningRateSchedule(lambda done: min(1.0, 2.0 * (1.0 - done) + 0.05))
    history = model.fit(build(train, source_vocab, target_vocab), epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, clip_norm=1.0, seed=args.seed, callbacks=[decay_over_the_last_half])
    print(f"training loss per epoch: {' '.join(f'{loss:.4f}' for loss in history['loss'])}")

    train_seconds = time.perf_counter() - started
    accuracy, shown = exact_match(model, test, source_vocab, target_vocab, args.beam_size)
    elapsed = time.perf_counter() - started
    print("\n".join(shown))
    decoding = "greedy" if args.beam_size == 1 else f"beam search (k={args.beam_size})"
    print(f"model: {'bidirectional ' if args.bidirectional_encoder else ''}{args.cell.upper()} encoder–decoder, "
          f"H={args.hidden}, {model.num_parameters()} parameters, {args.epochs} epochs in batches of {args.batch_size} "
          f"(training {train_seconds:.1f} s), backend {model.xp.name}")
    print(f"held-out exact match {accuracy:.4f} on {len(test)} unseen dates, {decoding}")
    print(f"run time {elapsed:.1f} s (CPU {time.process_time() - cpu_started:.1f} s)")
    return {"exact_match": accuracy, "seconds": elapsed}


if __name__ == "__main__":
    main()
