"""``mlxrnn sample``, ``score`` and ``eval``: use a trained language model."""

from __future__ import annotations

import json

import click

from mlxrnn.errors import ConfigError
from mlxrnn.lm.corpus import read_text
from mlxrnn.lm.evaluation import evaluate_text
from mlxrnn.lm.model import load_language_model
from mlxrnn.lm.sampling import MAX_KEPT_TOKENS, encode_prime, sample, score
from mlxrnn.models.decoding import SamplingOptions

from .common import check_backend, echo_json, handle_errors
from .options import encoding_errors_option

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
@checkpoint_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print the samples as JSON.")
@handle_errors
def sample_command(
    run, length, num_samples, prime, temperature, top_k, top_p, greedy, allow_unk, seed, tag, backend, as_json
):
    """Generate text from a trained model (RUN is a run directory or a checkpoint).

    \b
    Examples:
      mlxrnn sample runs/shakespeare --prime "ROMEO:" --temperature 0.8 --seed 1
      mlxrnn sample runs/shakespeare -n 3 --length 200 --top-p 0.9
    """
    check_backend(backend)
    # Bad flags are reported before the checkpoint is loaded (and before --prime is echoed).
    options = SamplingOptions(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, allow_unk=allow_unk)
    options.validate()
    for flag, value, minimum in (("--length", length, 1), ("--num-samples", num_samples, 1), ("--seed", seed, 0)):
        if value is not None and value < minimum:
            raise ConfigError(f"{flag} must be an integer >= {minimum}, got {value}")
    lm, _ = load_language_model(run, backend=backend, tag=tag)
    settings = dict(length=length, num_samples=num_samples, prime=prime, options=options, seed=seed,
                    allow_unknown_prime=allow_unk)
    if num_samples == 1:  # printed as drawn and never held, so any --length runs in constant memory
        if not allow_unk:
            encode_prime(lm, prime)  # a --prime outside the vocabulary fails before anything is printed
        if as_json:  # the document echo_json would print, written token by token
            click.echo('{\n  "prime": ' + json.dumps(prime) + ',\n  "samples": [\n    "', nl=False)
            sample(lm, **settings, on_token=lambda i, text: click.echo(json.dumps(text)[1:-1], nl=False), keep=False)
            click.echo('"\n  ]\n}')
        else:
            click.echo(prime, nl=False)
            sample(lm, **settings, on_token=lambda i, text: click.echo(text, nl=False), keep=False)
            click.echo()
        return
    result = sample(lm, **settings)
    if as_json:
        echo_json({"prime": prime, "samples": result.texts})
    else:
        for i, text in enumerate(result.texts):
            click.echo(f"--- sample {i + 1} ---\n{prime}{text}")


@click.command("score")
@click.argument("run", type=click.Path(path_type=str))
@click.argument("sentences", nargs=-1, required=True)
@click.option("--per-token", is_flag=True, help="Also show every token's log-probability.")
@checkpoint_option
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print scores as JSON.")
@handle_errors
def score_command(run, sentences, per_token, tag, backend, as_json):
    """Score SENTENCES by the chain rule and rank them, most probable first.

    \b
    Example (the notes' speech-recognition choice):
      mlxrnn score runs/words "the apple and pear salad" "the apple and pair salad"
    """
    check_backend(backend)
    lm, _ = load_language_model(run, backend=backend, tag=tag)
    ranked = sorted(score(lm, list(sentences)), key=lambda s: s.total, reverse=True)
    if as_json:
        echo_json([s.to_dict() for s in ranked])
        return
    for rank, s in enumerate(ranked, start=1):
        click.echo(f"{rank}. log p = {s.total:9.3f}  ({s.mean:.3f}/token, perplexity {s.perplexity:.2f})  {s.text!r}")
        if per_token:
            for token, lp in zip(s.tokens, s.log_probs):
                click.echo(f"     {lp:8.3f}  {token!r}")


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
    """Perplexity (and bits per character) of a whole FILE under the model.

    \b
    Example:
      mlxrnn eval runs/shakespeare held_out.txt --json
    """
    check_backend(backend)
    text = read_text(file, encoding=encoding, errors=encoding_errors)  # a bad FILE fails before loading
    lm, _ = load_language_model(run, backend=backend, tag=tag)
    result = evaluate_text(lm, text)
    data = result.to_dict()
    if as_json:
        echo_json(data)
        return
    line = f"{data['num_tokens']:,} tokens: loss {data['loss']:.4f} nats/token, perplexity {data['perplexity']:.3f}"
    if "bits_per_char" in data:
        line += f", {data['bits_per_char']:.4f} bits/char"
    click.echo(line)
