"""``mlxrnn prepare``: tokenize a corpus once into memory-mapped id files that ``mlxrnn train`` reads."""

from __future__ import annotations

import sys
import time

import click
import numpy as np

from mlxrnn.lm.model import load_language_model
from mlxrnn.run.options import TrainOptions
from mlxrnn.text.prepare import prepare_corpus
from mlxrnn.text.tokenizers import TOKENIZERS

from .common import echo_json, handle_errors
from .options import encoding_errors_option

_DEFAULTS = TrainOptions()


class PrepareProgress:
    """One line on stderr per pass: its stage, MB done of MB in all, and MB/s (redrawn on a terminal)."""

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.stage, self.started, self.last = None, 0.0, 0.0
        self.rates: dict[str, float] = {}  #: MB/s of each finished pass

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage != self.stage:
            self.stage, self.started, self.last = stage, now, now
        if stage in self.rates or (stage == self.stage and done == 0):
            return  # this pass was reported finished, or has only begun
        finished = done >= total
        rate = done / 1e6 / max(now - self.started, 1e-6)
        if finished and total > 1:
            self.rates[stage] = rate
        if not self.enabled or not (finished or (self.is_tty and now - self.last > 0.2) or now - self.last > 10.0):
            return
        self.last = now
        line = f"{stage}: {done / 1e6:,.1f} / {total / 1e6:,.1f} MB, {rate:,.1f} MB/s" if total > 1 else stage
        try:
            if self.is_tty:
                self.stream.write("\r\033[K" + line + ("\n" if finished else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: prepare on, unseen
            self.enabled = False


@click.command("prepare")
@click.argument("corpus", type=click.Path(path_type=str))
@click.option("--out", "out", type=click.Path(path_type=str), required=True, metavar="DATA",
              help="The prepared directory to write (train with `mlxrnn train DATA`).")
@click.option("--tokenizer", type=click.Choice(tuple(TOKENIZERS)), default="chars", show_default=True,
              help="How text becomes tokens, as for `mlxrnn train`.")
@click.option("--vocab-size", type=int, default=None, help="bpe: the vocabulary to learn (default 4096).")
@click.option("--max-vocab", type=int, default=None, help="Keep only the most frequent tokens (specials included).")
@click.option("--min-count", type=int, default=1, show_default=True, help="Drop tokens seen fewer times (→ <UNK>).")
@click.option("--lowercase", is_flag=True, help="Word tokenizers: lowercase the text first.")
@click.option("--unk-token", default=_DEFAULTS.unk_token, show_default=True,
              help="Word tokenizers: this literal is the unknown word <UNK> ('' for none).")
@click.option("--valid", type=click.Path(path_type=str), default=None, help="Validation text file.")
@click.option("--test", type=click.Path(path_type=str), default=None, help="Test text file.")
@click.option("--val-frac", type=float, default=_DEFAULTS.val_frac, show_default=True,
              help="Without --valid: the last fraction of the tokens validates.")
@click.option("--vocab-from", type=click.Path(path_type=str), default=None, metavar="RUN",
              help="Use the tokenizer and vocabulary of a trained run (to train with --init-from RUN).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the files.")
@encoding_errors_option
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes that tokenize words (default: the CPUs, at most 4); the files do not depend on it.")
@click.option("--force", is_flag=True, help="Replace an existing DATA directory.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@handle_errors
def prepare_command(corpus, out, tokenizer, vocab_size, max_vocab, min_count, lowercase, unk_token, valid, test,
                    val_frac, vocab_from, encoding, encoding_errors, workers, force, quiet, as_json):
    """Tokenize CORPUS once, streaming, into memory-mapped id files in DATA (--out): uint16 ids
    (uint32 past 65,536 tokens), the vocabulary and a manifest with the sources' sizes and sha256.
    `mlxrnn train DATA` then trains in memory that does not grow with the corpus, and --resume
    and --init-from work on it as on text. A truncated or modified DATA is refused.

    \b
    Examples:
      mlxrnn prepare big.txt --out data/big --tokenizer bpe --vocab-size 8192
      mlxrnn prepare train.txt --valid valid.txt --test test.txt --tokenizer whitespace --out data/ptb
      mlxrnn train data/big --out runs/big --minutes 60
    """
    vocabulary = None
    if vocab_from is not None:
        lm, _ = load_language_model(vocab_from, backend="numpy")
        vocabulary = (lm.tokenizer, lm.vocab)
    if not 0.0 < val_frac < 1.0:
        raise click.UsageError(f"--val-frac must be in (0, 1), got {val_frac}")
    progress = PrepareProgress(enabled=not quiet)
    started = time.perf_counter()
    prepared = prepare_corpus(
        corpus, out, tokenizer=tokenizer, lowercase=lowercase, unk_token=unk_token or None, max_vocab=max_vocab,
        min_count=min_count, vocab_size=vocab_size, valid=valid, test=test, val_frac=val_frac, encoding=encoding,
        encoding_errors=encoding_errors, vocabulary=vocabulary, force=force, progress=progress,
        workers=workers,
    )
    seconds = time.perf_counter() - started
    manifest = prepared.manifest
    if as_json:
        echo_json({**manifest, "seconds": seconds, "mb_per_second": progress.rates})
        return
    parts = ", ".join(f"{name} {entry['tokens']:,}" for name, entry in manifest["parts"].items())
    click.echo(f"prepared {out}: {len(prepared.vocab):,} {manifest['settings']['tokenizer']} tokens, "
               f"{np.dtype(manifest['dtype']).name} ids ({parts} tokens) in {seconds:.1f} s")
