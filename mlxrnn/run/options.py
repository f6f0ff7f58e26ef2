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
from dataclasses import MISSING, Field, asdict, dataclass, fields
from typing import Any, ClassVar

from mlxrnn.backend import BACKEND_NAMES
from mlxrnn.errors import ConfigError
from mlxrnn.nn.cell_options import cell_options_problem
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.optim import OPTIMIZERS
from mlxrnn.nn.schedules import SCHEDULES
from mlxrnn.run.option_declarations import (
    EPOCH,
    at_least,
    budget,
    count_or_word,
    describe_changes,
    full_cell_options,
    given_settings,
    merged_cell_options,
    one_word,
    option_problem,
    probability,
    setting,
    unresolved,
    within,
)
from mlxrnn.text.tokenizers import DEFAULT_KIND, DEFAULT_UNK_TOKEN, LEVELS, TOKENIZERS

#: dropout between layers when `dropout` is not given (and none at the two ends)
DEFAULT_DROPOUT = 0.2


@dataclass
class TrainOptions:
    """Every setting of a training run (stored in its checkpoints). Defaults: the recommended
    character model (2 × 512 LSTM, embedding 128, batch 32, 128 steps, Adam 2e-3, clip 5)."""

    #: the settings whose default is resolved from the others (in this order) by ``__post_init__``
    DERIVED: ClassVar[tuple[str, ...]] = ("level", "tokenizer", "dropout", "embed_dropout", "output_dropout", "min_lr")

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
        check=one_word,
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
        check=probability,
        model="dropout",
    )
    embed_dropout: float | None = setting(
        None, "Dropout on the embedding output (default: `dropout` if given, else 0).", check=probability,
        model="embed_dropout", legacy=0.0,
    )
    output_dropout: float | None = setting(
        None, "Dropout before the output layer (default: `dropout` if given, else 0).", check=probability,
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
        check=within(budget, "must be a number in (0, 1e9]"),
        resumable=True,
    )
    steps: int | None = setting(None, "Stop after this many steps.", check=at_least(1), resumable=True)
    minutes: float | None = setting(
        None,
        "Stop after this much wall-clock time.",
        check=within(budget, "must be a number in (0, 1e9]"),
        resumable=True,
    )
    val_frac: float = setting(
        0.1,
        "Last fraction of the text kept for validation (unless `valid` names a file).",
        check=within(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
    )
    valid: str | None = setting(None, "Validation text file, used instead of the last `val_frac` of CORPUS.",
                                resumable=True)
    test: str | None = setting(None, "Test text file, evaluated with the best checkpoint when training ends "
                               "(summary and metrics).", resumable=True)
    eval_every: int | str = setting(
        200, "Validate (and checkpoint) every N steps, or at the end of every epoch ('epoch').",
        check=count_or_word(EPOCH), resumable=True,
    )
    log_every: int = setting(
        10, "Write a training record to metrics.jsonl every N steps.", check=at_least(1), resumable=True
    )
    tensorboard: bool = setting(False, "Also write TensorBoard event files to RUN/tensorboard (needs: pip install "
                                "'mlxrnn[tensorboard]').", resumable=True)
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
        problem = cell_options_problem(self.cell_options)
        if problem is not None:
            raise ConfigError(problem, field="cell_options")
        if TOKENIZERS[self.tokenizer] != self.level:
            raise ConfigError(
                f"`tokenizer` {self.tokenizer} makes {TOKENIZERS[self.tokenizer]}-level tokens, not {self.level}; "
                f"drop `level` or choose `level` {TOKENIZERS[self.tokenizer]}"
            )
        if self.tie and self.embed != self.hidden:  # said in the settings' names, not the model config's
            raise ConfigError(f"`tie` shares the embedding with the output layer, so it needs `embed` = `hidden` "
                              f"(`embed` {self.embed} vs `hidden` {self.hidden}); set both to one size")
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

    def eval_interval(self, steps_per_epoch: int) -> int:
        """Steps between evaluations: `eval_every`, or ``steps_per_epoch`` for "epoch"."""
        return steps_per_epoch if self.eval_every == EPOCH else self.eval_every

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
        """``options`` (default: all defaults) with the fields in ``settings`` replaced: the one
        place where given settings become a run's options, for ``mlxrnn train`` and
        :func:`~mlxrnn.run.loop.train_language_model` alike (an unknown name is a ConfigError
        that suggests the closest field). The :data:`DERIVED` settings ``options`` did not set
        are resolved again beside the new ones: ``{"dropout": 0.5}`` drops out at all three
        places and ``{"tokenizer": "whitespace"}`` makes a word model, as the flags do."""
        known = [spec.name for spec in fields(cls)]
        for name in settings:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown training setting {name!r}{hint}; valid: {', '.join(known)}")
        base = {} if options is None else unresolved(options)
        return cls(**{**base, **settings})

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


DERIVED = TrainOptions.DERIVED  #: settings whose default is resolved from the others


def _spec(name: str) -> Field:
    return next(spec for spec in fields(TrainOptions) if spec.name == name)


@functools.cache
def type_hints() -> dict[str, Any]:
    """The type of every option, read from the annotations of :class:`TrainOptions`."""
    return typing.get_type_hints(TrainOptions)


def option_optional(spec: Field) -> bool:
    """Whether the option may be None (its type says ``| None``)."""
    return type(None) in typing.get_args(type_hints()[spec.name])
