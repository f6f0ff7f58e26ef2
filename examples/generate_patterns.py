"""One-to-many: a SequenceGenerator writes a "melodic" pattern of the class it is given.

The task (examples/tasks.py): six patterns over 12 pitch classes a–l — rising steps, falling
steps, a major arpeggio (+4 +3 +5), a trill, a repeated note, rising fifths — each 4–8 notes
from any start note. The model gets only the class id as its first input and feeds every
note it generates back in, until it emits <EOS>. A quarter of the (class, start, length)
combinations are held out of training.

    python examples/generate_patterns.py
    python examples/generate_patterns.py --temperature 0.7 --top-k 3    # the LM's sampling controls

Prints, for samples drawn at the given temperature: how many are valid instances of the
requested pattern (before and after training), how many of the valid ones are held-out
combinations the model never saw, the held-out per-note log-loss against the uniform
baseline, and the run time.
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
from tasks import NOTES, PATTERN_NAMES, is_valid_pattern, pattern_data  # noqa: E402

import mlxrnn  # noqa: E402
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.nn.sequences import SPECIAL_TOKENS
from mlxrnn.text.vocabulary import Vocabulary


def sample_quality(model, vocab, options, per_class: int, seed: int, train_set: set, held_out_set: set) -> dict:
    classes = np.repeat(np.arange(len(PATTERN_NAMES)), per_class)
    samples = model.generate(classes, max_length=12, options=options, seed=seed)
    texts = ["".join(vocab.decode(ids)) for ids in samples]
    valid = [(int(k), t) for k, t in zip(classes, texts) if is_valid_pattern(int(k), t)]
    return {
        "valid": len(valid) / len(texts),
        "novel_of_valid": sum(item in held_out_set for item in valid) / max(len(valid), 1),
        "held_out_covered": len(set(valid) & held_out_set) / len(held_out_set),
        "examples": {PATTERN_NAMES[k]: t for k, t in zip(classes[::per_class], texts[::per_class])},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="gru", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", type=int, default=48)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--samples-per-class", type=int, default=200)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "mlx", "auto"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started, cpu_started = time.perf_counter(), time.process_time()

    split = pattern_data(seed=args.seed)
    vocab = Vocabulary(list(SPECIAL_TOKENS) + list(NOTES), level="char")
    train_set, held_out_set = set(split.train), set(split.held_out)
    config = mlxrnn.SequenceGeneratorConfig(condition_kind="class", condition_size=len(PATTERN_NAMES),
                                            vocab_size=len(vocab), embed_size=16, cell=args.cell,
                                            hidden_size=args.hidden, seed=args.seed)
    model = mlxrnn.SequenceGenerator(config, backend=args.backend)
    options = SamplingOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    before = sample_quality(model, vocab, options, args.samples_per_class, args.seed, train_set, held_out_set)

    def batch_of(items):
        return mlxrnn.generator_batch([k for k, _ in items], [vocab.encode(notes) for _, notes in items])

    trainer = mlxrnn.Trainer(model, mlxrnn.Adam(lr=0.01), clip_norm=1.0)
    rng = np.random.default_rng(args.seed)
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, len(split.train), size=args.batch_size)
        result = trainer.step(batch_of([split.train[i] for i in idx]))
        if step % 100 == 0:
            print(f"step {step:4d}  loss {result.loss:.4f}", flush=True)

    held_out = batch_of(split.held_out)
    nats_per_note = float(-model.log_prob(held_out).sum() / held_out["lengths"].sum())
    uniform = float(np.log(len(NOTES) + 1))  # 12 notes and <EOS>
    after = sample_quality(model, vocab, options, args.samples_per_class, args.seed, train_set, held_out_set)
    elapsed = time.perf_counter() - started
    for name, text in after["examples"].items():
        print(f"  {name:9s} → {text}")
    n = args.samples_per_class * len(PATTERN_NAMES)
    controls = f"temperature {args.temperature}" + (f", top-k {args.top_k}" if args.top_k else "") + (
        f", top-p {args.top_p}" if args.top_p else "")
    print(f"model: {args.cell.upper()} H={args.hidden}, {args.steps} steps of {args.batch_size}, "
          f"backend {model.xp.name}; sampling at {controls}")
    print(f"valid samples of the requested pattern: {after['valid']:.3f} of {n} "
          f"(untrained model: {before['valid']:.3f}); of the valid ones, {after['novel_of_valid']:.3f} are held-out "
          f"combinations ({after['held_out_covered']:.3f} of all {len(held_out_set)} held-out combinations produced)")
    print(f"held-out log-loss {nats_per_note:.3f} nats per note (uniform guess: {uniform:.3f})")
    print(f"run time {elapsed:.1f} s (CPU {time.process_time() - cpu_started:.1f} s)")
    return {"valid": after["valid"], "valid_before": before["valid"], "novel_of_valid": after["novel_of_valid"],
            "held_out_nats": nats_per_note, "seconds": elapsed}


if __name__ == "__main__":
    main()
