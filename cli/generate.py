"""``mlxrnn sample``, ``score`` and ``eval``: use a trained language model."""

from __future__ import annotations

import io
import json
import os
import stat
import sys

import click

from mlxrnn.errors import ConfigError, DataError, spell_fields
from mlxrnn.lm.evaluation import evaluate_text, unknown_scoring_note
from mlxrnn.lm.model import load_language_model
from mlxrnn.lm.sampling import MAX_KEPT_TOKENS, encode_prime, sample, score
from mlxrnn.models.decoding import SamplingOptions
from mlxrnn.text.corpus import check_codec, decode_text, read_text

from .common import check_backend, echo_json, handle_errors, inference_threads
from .options import encoding_errors_option, flag_name

checkpoint_option = click.option(
    "--checkpoint",
    "tag",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Which checkpoint of a run directory to use.",
)
backend_option = click.option(
    "--backend", type=click.Choice(["auto", "numpy", "mlx"]), default="auto", show_default=True
)


@click.command("sample")
@click.argument("run", type=click.Path(path_type=str))
@click.option("--length", type=int, default=500, show_default=True,
              help="Tokens to generate per sample (one sample is printed as drawn, at any length; several are "
                   f"held until the end, up to {MAX_KEPT_TOKENS:,} tokens in all).")
@click.option("--num-samples", "-n", type=int, default=1, show_default=True, help="Samples drawn as one batch.")
@click.option("--prime", default="", help="Text to start from.")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="< 1 is safer, > 1 wilder.")
@click.option("--top-k", type=int, default=None, help="Draw only from the k most likely tokens.")
@click.option("--top-p", type=float, default=None, help="Draw from the smallest set with this much probability.")
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--allow-unk", is_flag=True, help="Allow <UNK> in samples and unknown tokens in --prime.")
@click.option("--seed", type=int, default=None, help="Make the sample reproducible.")
@click.option(
    "--sentences",
    type=int,
    default=None,
    help="Word models: go on past <EOS> and stop after this many sentences (default 1); character models: "
    "stop after this many lines. --length still bounds the tokens.",
)
@checkpoint_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print the samples as JSON.")
@handle_errors
def sample_command(
    run, length, num_samples, prime, temperature, top_k, top_p, greedy, allow_unk, seed, sentences, tag, backend,
    as_json,
):
    """Generate text from a trained model (RUN is a run directory or a checkpoint).

    \b
    Examples:
      mlxrnn sample runs/shakespeare --prime "ROMEO:" --temperature 0.8 --seed 1
      mlxrnn sample runs/shakespeare -n 3 --length 200 --top-p 0.9
      mlxrnn sample runs/words --sentences 5 --length 300
    """
    check_backend(backend)
    # Bad flags are reported before the checkpoint is loaded (and before --prime is echoed).
    options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, allow_unk=allow_unk)
    options.validate()
    for flag, value, minimum in (
        ("--length", length, 1), ("--num-samples", num_samples, 1), ("--seed", seed, 0), ("--sentences", sentences, 1)
    ):
        if value is not None and value < minimum:
            raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value}")
    lm, _ = load_language_model(run, backend=backend, tag=tag)
    inference_threads(lm, num_samples)
    settings = dict(length=length, num_samples=num_samples, prime=prime, options=options, seed=seed,
                    allow_unknown_prime=allow_unk, sentences=sentences)
    if num_samples == 1:  # printed as drawn and never held, so any --length runs in constant memory
        if not allow_unk:
            encode_prime(lm, prime)  # a --prime outside the vocabulary fails before anything is printed
        if as_json:  # the document echo_json would print, written token by token
            click.echo('{\n  "prime": ' + json.dumps(prime) + ',\n  "samples": [\n    "', nl=False)
            sample(lm, **settings, on_token=lambda i, text: click.echo(json.dumps(text)[1:-1], nl=False), keep=False)
            click.echo('"\n  ]\n}')
        else:  # streamed word tokens carry their space after them: the prime needs one before them
            click.echo(prime + (" " if lm.level == "word" and prime and not prime[-1].isspace() else ""), nl=False)
            sample(lm, **settings, on_token=lambda i, text: click.echo(text, nl=False), keep=False)
            click.echo()
        return
    result = sample(lm, **settings)
    if as_json:
        echo_json(result.to_dict())
    else:
        for i, text in enumerate(result.with_prime()):
            click.echo(f"--- sample {i + 1} ---\n{text}")


@click.command("score")
@click.argument("run", type=click.Path(path_type=str))
@click.argument("sentences", nargs=-1, metavar="SENTENCES...")
@click.option(
    "--file",
    "-f",
    "sentence_file",
    type=click.Path(path_type=str, allow_dash=True),
    default=None,
    help="Also score the lines of this file, one sentence per line ('-': standard input).",
)
@click.option("--per-token", is_flag=True, help="Also show every token's log-probability (<UNK> marked).")
@click.option("--sort", "rank", is_flag=True, help="Rank the sentences, most probable first (default: input order).")
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of --file.")
@encoding_errors_option
@checkpoint_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print scores as JSON.")
@handle_errors
def score_command(run, sentences, sentence_file, per_token, rank, encoding, encoding_errors, tag, backend, as_json):
    """Score SENTENCES (and/or the lines of --file) by the chain rule, in input order (--sort:
    most probable first). Words outside the vocabulary are scored as <UNK>: the
    out-of-vocabulary rate is reported, and --per-token marks them. With --json each record
    has its "index" in the input (and "line", its line number in --file).

    \b
    Examples (the notes' speech-recognition choice):
      mlxrnn score runs/words "the apple and pear salad" "the apple and pair salad"
      mlxrnn score runs/words --file candidates.txt --per-token --sort
      echo "the apple and pear salad" | mlxrnn score runs/words -f -
    """
    check_backend(backend)
    texts = list(sentences)
    lines: list[int | None] = [None] * len(texts)  # line numbers in --file, for --json
    if sentence_file is not None:  # a bad file fails before the model is loaded
        numbered = read_numbered_sentences(sentence_file, encoding, encoding_errors)
        texts += [text for _, text in numbered]
        lines += [number for number, _ in numbered]
    if not texts:
        context = click.get_current_context()
        argument = next(param for param in context.command.params if param.name == "sentences")
        raise click.MissingParameter(ctx=context, param=argument)
    lm, checkpoint = load_language_model(run, backend=backend, tag=tag)
    inference_threads(lm, 1)  # one text at a time
    scores = score(lm, texts)
    ranked = sorted(scores, key=lambda s: s.log_prob, reverse=True) if rank else scores
    if as_json:
        echo_json([{**s.to_dict(), **({"line": lines[s.index]} if lines[s.index] else {})} for s in ranked])
        return
    for position, s in enumerate(ranked, start=1):
        unknown = f"  [{s.num_unknown} of {len(s.tokens)} tokens scored as <UNK>]" if s.num_unknown else ""
        click.echo(f"{position}. log p = {s.log_prob:9.3f}  ({s.mean_log_prob:.3f}/token, "
                   f"perplexity {s.perplexity:.2f})  "
                   f"{s.text!r}{unknown}")
        if per_token:
            for token, lp, oov in zip(s.tokens, s.log_probs, s.unknown):
                mark = "  <UNK>: not in the vocabulary" if oov else ""
                click.echo(f"     {lp:8.3f}  {token!r}{mark}")
    total = sum(len(s.tokens) for s in ranked)
    unknown = sum(s.num_unknown for s in ranked)
    click.echo(
        f"out of vocabulary: {unknown} of {total} tokens ({unknown / max(total, 1):.1%}, {lm.tokenizer.kind} "
        "tokenizer), " + unknown_note(checkpoint.meta, unknown)
    )


def unknown_note(meta: dict, count: int) -> str:
    """How the ``count`` out-of-vocabulary tokens were scored (whether training taught <UNK>), in flags."""
    if not count:
        return "scored as <UNK>"
    return spell_fields(unknown_scoring_note(meta), {name: flag_name(name) for name in ("min_count", "max_vocab")})


#: standard input longer than this is not read (sentences to score, not a corpus)
MAX_STDIN_BYTES = 1 << 28


def _standard_input() -> bytes | str:
    """The bytes of standard input (its text where it has no bytes, as in some embeddings);
    refused in one line when it is closed, a device other than a terminal, or too long."""
    stdin = sys.stdin
    if stdin is None:
        raise DataError("standard input is closed; pipe the sentences in (... | mlxrnn score RUN -f -) or pass a file")
    try:
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        mode = None
    if mode is not None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not stdin.isatty():
        raise DataError("standard input is a device, not text; pipe the sentences in or pass a file")
    source = getattr(stdin, "buffer", stdin)
    try:
        data = source.read(MAX_STDIN_BYTES + 1)
    except (OSError, ValueError) as error:  # ValueError: a closed file object
        raise DataError(f"cannot read standard input: {getattr(error, 'strerror', None) or error}") from None
    if len(data) > MAX_STDIN_BYTES:
        raise DataError(f"standard input has more than {MAX_STDIN_BYTES:,} bytes; score a file with --file instead")
    return data


def read_numbered_sentences(path: str, encoding: str, errors: str) -> list[tuple[int, str]]:
    """(line number from 1, sentence) of the non-blank lines of ``path`` ('-': standard input,
    read in ``encoding``)."""
    if path == "-":
        check_codec(encoding, errors)  # a bad --encoding fails before waiting for input
        data = _standard_input()
        if not data.strip():
            raise DataError("standard input has no sentences (one per line)")
        text = data if isinstance(data, str) else decode_text(data, "standard input", encoding, errors)
    else:
        text = read_text(path, encoding=encoding, errors=errors)
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    sentences = [(number, line) for number, line in enumerate(lines, start=1) if line]
    if not sentences:
        raise DataError(f"{'standard input' if path == '-' else path} has no sentences (one per line)")
    return sentences


@click.command("eval")
@click.argument("run", type=click.Path(path_type=str))
@click.argument("file", type=click.Path(path_type=str))
@click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of FILE.")
@encoding_errors_option
@checkpoint_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def eval_command(run, file, encoding, encoding_errors, tag, backend, as_json):
    """Perplexity (and bits per character) of a whole FILE under the model, per token of the
    model's tokenizer (word models count each <EOS>), with the out-of-vocabulary rate.

    \b
    Example:
      mlxrnn eval runs/shakespeare held_out.txt --json
    """
    check_backend(backend)
    text = read_text(file, encoding=encoding, errors=encoding_errors)  # a bad FILE fails before loading
    lm, checkpoint = load_language_model(run, backend=backend, tag=tag)
    inference_threads(lm, 1)  # one stream, windows of batch 1
    result = evaluate_text(lm, text)
    data = result.to_dict()
    if as_json:
        echo_json(data)
        return
    line = (
        f"{data['num_tokens']:,} tokens ({result.tokenizer} tokenizer): loss {data['loss']:.4f} nats/token, "
        f"perplexity {data['perplexity']:.3f} per token"
    )
    if "bits_per_char" in data:
        line += f", {data['bits_per_char']:.4f} bits/char"
    click.echo(line)
    click.echo(f"out of vocabulary: {result.num_unknown:,} tokens ({result.oov_rate:.2%}), "
               + unknown_note(checkpoint.meta, result.num_unknown))
