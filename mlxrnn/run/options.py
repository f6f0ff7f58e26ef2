"""The settings of a language-model training run, each declared once.

Every :class:`TrainOptions` field is declared with :func:`setting`: its default, a help line,
its allowed choices, the check that validates it, whether it may change on resume, and (for
model settings) the name it has in the model's config. From that one declaration

* :meth:`TrainOptions.validate` checks it, naming the *field* in the error ("`val_frac` must be
  in (0, 1), got 0"; the CLI shows such names as its flags, see :mod:`mlxrnn.errors`);
* :meth:`TrainOptions.model_settings` passes it to the model under its config name
  (``hidden`` → ``hidden_size``);
* the CLI generates its flag (``--val-frac``) with the same default, type, choices and help;
* checkpoints store it under the field name (``options.json`` and the checkpoints' meta);
* a resumed run applies a changed ``resumable`` setting and refuses any other change
  (:meth:`TrainOptions.resumed_with`); a run started from another's weights takes its
  ``architecture`` settings (:meth:`TrainOptions.initialized_from`).

Adding an option is one more ``name: type = setting(...)`` line here (plus the code that uses it).
Help texts name other settings in backquotes (`embed`), as error messages do.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import typing
from collections.abc import Collection
from dataclasses import MISSING, Field, asdict, dataclass, fields, replace
from typing import Any

from mlxrnn.backend import BACKEND_NAMES
from mlxrnn.errors import ConfigError
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.optim import OPTIMIZERS
from mlxrnn.nn.schedules import SCHEDULES
from mlxrnn.run.option_declarations import (
    at_least,
    describe_changes,
    full_cell_options,
    merged_cell_options,
    option_default,
    option_problem,
    setting,
    within,
)
from mlxrnn.text.tokenizers import DEFAULT_KIND, DEFAULT_UNK_TOKEN, LEVELS, TOKENIZERS


def _budget(value: float) -> bool:
    return 0 < value <= 1e9  # also rejects NaN and inf


_probability = within(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
#: dropout between layers when `dropout` is not given (and none at the two ends)
DEFAULT_DROPOUT = 0.2


def _unk_token_ok(value: Any) -> bool:
    return isinstance(value, str) and not any(c.isspace() for c in value)


@dataclass
class TrainOptions:
    """Every setting of a training run (stored in its checkpoints). Defaults: the recommended
    character model (2 × 512 LSTM, embedding 128, batch 32, 128 steps, Adam 2e-3, clip 5)."""

    #: a UTF-8 text or a prepared corpus (`mlxrnn prepare`; its path saved absolute); None: the bundled
    #: tiny-shakespeare. A resumed run may find it at a new path, but its text must be the one it started on.
    corpus: str | None = setting(None, "", argument=True, resumable=True)
    level: str | None = setting(
        None,
        "Tokens are characters, words (word models add <EOS> at each line end) or subwords; default: the level of "
        "`tokenizer`, else char.",
        choices=LEVELS,
        architecture=True,
    )
    tokenizer: str | None = setting(
        None,
        "How text becomes tokens: whitespace (pre-tokenized corpora), words (a regex split of raw text), chars, or "
        "bpe (byte-level subwords learned from the text, `vocab_size`; needs mlxrnn[bpe]); default: words for "
        "`level` word, chars otherwise. Perplexity is per token of this tokenizer; bits per character compare them.",
        choices=tuple(TOKENIZERS),
        architecture=True,
    )
    unk_token: str = setting(
        DEFAULT_UNK_TOKEN,
        "Word models: this literal in the text is the unknown word <UNK> ('' for none).",
        check=lambda v: None if _unk_token_ok(v) else f"must be one word without spaces or '', got {v!r}",
        legacy="",
        architecture=True,
    )
    lowercase: bool = setting(False, "Word models: lowercase the text first.", architecture=True)
    max_vocab: int | None = setting(
        None,
        "Keep only the most frequent tokens (characters or words, specials included); the rest become <UNK>.",
        check=within(lambda v: v >= 4, "must be at least 4 (the 3 special tokens and one word)"),
    )
    min_count: int = setting(1, "Drop tokens seen fewer times (→ <UNK>).", check=at_least(1))
    vocab_size: int | None = setting(None, "`tokenizer` bpe: the vocabulary learned from the training text, specials "
                                     "included (default 4096).", check=at_least(260))
    cell: str = setting("lstm", "Recurrent cell.", choices=lambda: tuple(CELLS), model="cell", architecture=True)
    cell_options: dict = setting({}, "The cell's own options (activation, variant, peephole).", model="cell_options",
                                 flag=False, architecture=True)
    layers: int = setting(2, "Stacked recurrent layers.", check=at_least(1), model="num_layers",
                          architecture=True)
    hidden: int = setting(512, "Hidden units per layer.", check=at_least(1), model="hidden_size",
                          architecture=True)
    embed: int = setting(128, "Embedding size (0: one-hot inputs).", check=at_least(0), model="embed_size",
                         architecture=True)
    dropout: float | None = setting(
        None,
        "Dropout on the embedding output, between layers and before the output layer (`embed_dropout` and "
        "`output_dropout` set the two ends apart); default: 0.2 between layers only.",
        check=_probability,
        model="dropout",
    )
    embed_dropout: float | None = setting(
        None, "Dropout on the embedding output (default: `dropout` if given, else 0).", check=_probability,
        model="embed_dropout", legacy=0.0,
    )
    output_dropout: float | None = setting(
        None, "Dropout before the output layer (default: `dropout` if given, else 0).", check=_probability,
        model="output_dropout", legacy=0.0,
    )
    locked_dropout: bool = setting(
        False,
        "Variational (locked) dropout: one mask per sequence and window, shared by all its time steps.",
        model="locked_dropout",
    )
    tie: bool = setting(False, "Tie input and output embeddings (needs `embed` = `hidden`).", model="tie_weights",
                        architecture=True)
    seq_len: int = setting(128, "Steps of truncated BPTT per window.", check=at_least(1))
    batch_size: int = setting(32, "Parallel streams per step.", check=at_least(1))
    lr: float = setting(
        2e-3,
        "Learning rate.",
        check=within(lambda v: math.isfinite(v) and v > 0, "must be a positive number"),
        resumable=True,
    )
    optimizer: str = setting("adam", "", choices=lambda: tuple(OPTIMIZERS))
    weight_decay: float = setting(
        0.0, "", check=within(lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"), resumable=True
    )
    clip: float | None = setting(
        5.0,
        "Clip the global gradient norm (0: off).",
        check=within(lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0 (or 0 to disable)"),
        resumable=True,
    )
    epochs: float | None = setting(
        None,
        "Stop after this many epochs (default 1 if no limit given).",
        check=within(_budget, "must be a number in (0, 1e9]"),
        resumable=True,
    )
    steps: int | None = setting(None, "Stop after this many steps.", check=at_least(1), resumable=True)
    minutes: float | None = setting(
        None,
        "Stop after this much wall-clock time.",
        check=within(_budget, "must be a number in (0, 1e9]"),
        resumable=True,
    )
    val_frac: float = setting(
        0.1,
        "Last fraction of the text kept for validation (unless `valid` names a file).",
        check=within(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
    )
    valid: str | None = setting(None, "Validation text file, used instead of the last `val_frac` of CORPUS.")
    test: str | None = setting(
        None, "Test text file, evaluated with the best checkpoint when training ends (summary and metrics)."
    )
    eval_every: int = setting(200, "Validate (and checkpoint) every N steps.", check=at_least(1), resumable=True)
    log_every: int = setting(
        10, "Write a training record to metrics.jsonl every N steps.", check=at_least(1), resumable=True
    )
    schedule: str = setting(
        "plateau",
        "Learning-rate schedule: decay on validation plateau, cosine, or constant.",
        choices=lambda: tuple(SCHEDULES),
        resumable=True,
    )
    lr_decay: float = setting(
        0.5, "Plateau decay factor.", check=within(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]"), resumable=True
    )
    patience: int | None = setting(
        None, "Early stopping: evaluations without improvement.", check=at_least(1), resumable=True
    )
    decay_patience: int = setting(
        2, "Plateau: decay after this many evaluations in a row without improvement.", check=at_least(1), legacy=1,
        resumable=True,
    )
    min_lr: float | None = setting(
        None,
        "The floor: no schedule sets the learning rate below it (default: `lr` / 100; 0: none).",
        check=within(lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0"),
        legacy=0.0,
        resumable=True,
    )
    at_min_lr: str = setting(
        "stop",
        "Plateau: when validation stalls `decay_patience` more evaluations at `min_lr`, stop the run or continue.",
        choices=("stop", "continue"),
        legacy="continue",
        resumable=True,
    )
    warmup: float = setting(
        0.0,
        "Cosine: fraction of the run over which the learning rate first rises linearly from `min_lr` to `lr`.",
        check=within(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"),
        resumable=True,
    )
    backend: str = setting("auto", "", choices=BACKEND_NAMES, resumable=True)
    compile: bool = setting(
        True, "MLX: train through the compiled step (--no-compile: the eager one, for debugging).", resumable=True
    )
    seed: int = setting(0, "Seeds weights, dropout and sampling.", check=at_least(0), model="seed")
    encoding: str = setting("utf-8", "Text encoding of CORPUS.")
    encoding_errors: str = setting(
        "strict", "'replace' turns undecodable bytes into U+FFFD instead of failing.", choices=("strict", "replace")
    )

    def __post_init__(self) -> None:
        if self.clip == 0:  # 0 means "no clipping", as on the command line
            self.clip = None
        # Settings that default to others are resolved here, so options.json holds what was used.
        if self.level is None:
            self.level = TOKENIZERS.get(self.tokenizer, "char")
        if self.tokenizer is None:
            self.tokenizer = DEFAULT_KIND.get(self.level, "chars")
        # No `dropout` given: the character model's 0.2 between layers only (what it measured best
        # in short runs: dropout at the two ends slowed its first minutes); given, it is everywhere.
        ends = 0.0 if self.dropout is None else self.dropout
        if self.dropout is None:
            self.dropout = DEFAULT_DROPOUT
        if self.embed_dropout is None:
            self.embed_dropout = ends
        if self.output_dropout is None:
            self.output_dropout = ends
        if self.min_lr is None and isinstance(self.lr, numbers.Real) and not isinstance(self.lr, bool):
            self.min_lr = self.lr / 100

    def validate(self) -> TrainOptions:
        """Check every setting against its declaration; raise ConfigError naming the field."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None and option_optional(spec):
                continue  # an optional setting left unset
            message = option_problem(spec, value)
            if message is not None:
                raise ConfigError(message, field=spec.name)
        if TOKENIZERS[self.tokenizer] != self.level:
            raise ConfigError(
                f"`tokenizer` {self.tokenizer} makes {TOKENIZERS[self.tokenizer]}-level tokens, not {self.level}; "
                f"drop `level` or choose `level` {TOKENIZERS[self.tokenizer]}"
            )
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(f"`min_lr` ({self.min_lr:g}) must not exceed `lr` ({self.lr:g})")
        if self.lowercase and self.level == "char":  # refused rather than silently ignored
            raise ConfigError("applies to word models (`level` word); a character model keeps the case of its text",
                              field="lowercase")
        return self

    def stopping(self) -> dict:
        """The stop criteria; with none given, one epoch."""
        if self.epochs is None and self.steps is None and self.minutes is None:
            return {"epochs": 1.0, "steps": None, "minutes": None}
        return {"epochs": self.epochs, "steps": self.steps, "minutes": self.minutes}

    def model_settings(self) -> dict[str, Any]:
        """The settings the model config takes, under its names (``hidden`` → ``hidden_size``)."""
        return {spec.metadata["model"]: getattr(self, spec.name) for spec in fields(self) if spec.metadata["model"]}

    def resumed_with(self, new: TrainOptions, given: Collection[str] | None = None) -> TrainOptions:
        """These (saved) options continued with the settings of ``new`` named in ``given``.

        The rule: a given ``resumable`` setting replaces the saved one (the caller applies and
        logs it); a given setting that is not resumable must equal the saved one, else a
        ConfigError names every such change; settings not given keep their saved values. The
        budget (`epochs`, `steps`, `minutes`) is replaced as a whole when any of it is given.
        ``cell_options`` in ``new`` may name just the cell options given; they are compared with
        the saved ones. ``given`` None: the settings of ``new`` that differ from their defaults.
        """
        given = given_settings(new) if given is None else set(given)
        updates = {spec.name: getattr(new, spec.name) for spec in fields(self) if spec.name in given}
        updates.pop("cell_options", None)
        if given & set(BUDGET):  # "--steps 500" means "train to step 500", not "and the old time limit"
            updates.update({name: getattr(new, name) for name in BUDGET})
        if "cell_options" in given:
            cell = updates.get("cell", self.cell)
            updates["cell_options"] = merged_cell_options(cell, self.cell_options, new.cell_options)
            if full_cell_options(cell, updates["cell_options"]) == full_cell_options(cell, self.cell_options):
                del updates["cell_options"]  # the same cell, spelled with or without its defaults
        updates = {name: value for name, value in updates.items() if value != getattr(self, name)}
        refused = [name for name in updates if not _spec(name).metadata["resumable"]]
        if refused:
            raise ConfigError(
                f"a resumed run keeps its model and data, but {describe_changes(self, updates, refused)} would change; "
                "leave those out to continue the run as it was, or start a new run from its weights with `init_from`"
            )
        return TrainOptions(**{**asdict(self), **updates})

    def initialized_from(self, architecture: dict[str, Any], given: Collection[str] | None = None) -> TrainOptions:
        """These options (of a new run) with the ``architecture`` settings of the run whose weights
        it starts from. A given architecture setting that differs from the source's is refused
        (ConfigError naming each); ``given`` as in :meth:`resumed_with`."""
        given = given_settings(self) if given is None else set(given)
        mine = {name: getattr(self, name) for name in architecture if name in given and name != "cell_options"}
        if "cell_options" in given:
            cell = mine.get("cell", architecture["cell"])
            merged = merged_cell_options(cell, architecture["cell_options"], self.cell_options)
            if full_cell_options(cell, merged) != full_cell_options(cell, architecture["cell_options"]):
                mine["cell_options"] = merged
        refused = [name for name, value in mine.items() if value != architecture[name]]
        if refused:
            source = TrainOptions(**{**asdict(self), **architecture})
            raise ConfigError(
                "a run started from another's weights keeps its architecture, but "
                f"{describe_changes(source, mine, refused)} "
                "would change it; leave those out (`init_from` takes them from the source run)"
            )
        return TrainOptions(**{**asdict(self), **architecture})

    @classmethod
    def with_settings(cls, options: TrainOptions | None, settings: dict[str, Any]) -> TrainOptions:
        """``options`` (default: all defaults) with the fields in ``settings`` replaced; an unknown
        name is a ConfigError that suggests the closest field."""
        known = [spec.name for spec in fields(cls)]
        for name in settings:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown training setting {name!r}{hint}; valid: {', '.join(known)}")
        return replace(options if options is not None else cls(), **settings)

    @classmethod
    def from_saved(cls, saved: dict) -> TrainOptions:
        """Options as a checkpoint stored them (by field name); unknown names are refused."""
        known = {spec.name for spec in fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown:
            raise ConfigError(
                f"the saved options name settings this mlxrnn does not know ({', '.join(unknown)}); "
                "resume the run with the mlxrnn version that started it"
            )
        # A run saved before an option existed did what the option's legacy value does.
        missing = {
            spec.name: spec.metadata["legacy"]
            for spec in fields(cls)
            if spec.name not in saved and spec.metadata["legacy"] is not MISSING
        }
        return cls(**saved, **missing)


#: the stopping criteria: given together, replaced together
BUDGET = ("epochs", "steps", "minutes")


#: settings whose default is resolved from the others in ``TrainOptions.__post_init__``
DERIVED = ("level", "tokenizer", "dropout", "embed_dropout", "output_dropout", "min_lr")


def given_settings(options: TrainOptions) -> set[str]:
    """The settings of ``options`` that differ from their defaults: what a caller that passes
    whole options (rather than naming the ones it sets) is taken to have given. A derived
    setting counts as given when it differs from what its default resolves to beside the others
    (``min_lr`` = ``lr`` / 100 is not given; 0.2 between layers alone is the default dropout)."""
    plain = {spec.name: getattr(options, spec.name) for spec in fields(options) if spec.name not in DERIVED}
    resolved = TrainOptions(**plain)  # the derived settings as their defaults resolve beside these
    given = {spec.name for spec in fields(options)
             if spec.name not in DERIVED and getattr(options, spec.name) != option_default(spec)}
    return given | {name for name in DERIVED if getattr(options, name) != getattr(resolved, name)}


def _spec(name: str) -> Field:
    return next(spec for spec in fields(TrainOptions) if spec.name == name)


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainOptions)


def option_optional(spec: Field) -> bool:
    """Whether the option may be None (its type says ``| None``)."""
    return type(None) in typing.get_args(_type_hints()[spec.name])


def option_type(spec: Field) -> type:
    """The value type of an option, without its ``| None`` (``int | None`` → ``int``)."""
    hint = _type_hints()[spec.name]
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    return typing.get_origin(options[0]) or options[0]


def option_fields() -> tuple[Field, ...]:
    """The declarations of every option, in order."""
    return fields(TrainOptions)
