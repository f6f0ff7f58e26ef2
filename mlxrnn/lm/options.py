"""The settings of a language-model training run, each declared once.

Every :class:`TrainOptions` field is declared with :func:`setting`: its default, a help line,
its allowed choices, the check that validates it, whether it may change on resume, and (for
model settings) the name it has in the model's config. From that one declaration

* :meth:`TrainOptions.validate` checks it, naming the *field* in the error ("`val_frac` must be
  in (0, 1), got 0"; the CLI shows such names as its flags, see :mod:`mlxrnn.errors`);
* :meth:`TrainOptions.model_settings` passes it to the model under its config name
  (``hidden`` → ``hidden_size``);
* the CLI generates its flag (``--val-frac``) with the same default, type, choices and help;
* checkpoints store it under the field name (``options.json`` and the checkpoints' meta).

Adding an option is one more ``name: type = setting(...)`` line here (plus the code that uses it).
Help texts name other settings in backquotes (`embed`), as error messages do.
"""

from __future__ import annotations

import functools
import math
import numbers
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from mlxrnn.backend import BACKEND_NAMES
from mlxrnn.errors import ConfigError
from mlxrnn.lm.tokenizers import LEVELS
from mlxrnn.nn.cells import CELLS
from mlxrnn.nn.optim import OPTIMIZERS
from mlxrnn.nn.schedules import SCHEDULES

#: a check returns None when the value is fine, else what is wrong with it (after the field name)
Check = Callable[[Any], "str | None"]


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None,
    check: Check | None = None,
    model: str | None = None,
    resumable: bool = False,
    flag: bool = True,
    argument: bool = False,
) -> Any:
    """Declare one option (a dataclass field with its metadata).

    Args:
        default: the default value (a ``dict``/``list`` default is copied per instance).
        help: one line for ``--help``; other settings are named in backquotes.
        choices: the allowed values (or a function returning them, for registries that grow).
        check: validates a non-None value (see :data:`Check`).
        model: the name of this setting in the model config, if it is one.
        resumable: whether a resumed run may change it (the stopping criteria and the backend).
        flag: False when the CLI builds the value from other flags (the cell options).
        argument: the CLI takes it as a positional argument instead of a flag.
    """
    metadata = {
        "help": help,
        "choices": choices,
        "check": check,
        "model": model,
        "resumable": resumable,
        "flag": flag,
        "argument": argument,
    }
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- checks: each says what is wrong, the caller puts the field name in front -----------------
def at_least(minimum: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
            return f"must be an integer >= {minimum}, got {value!r}"
        return None

    return check


def within(condition: Callable[[float], bool], description: str) -> Check:
    """A number for which ``condition`` holds (NaN fails every comparison, so it is refused)."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and condition(float(value))
        return None if ok else f"{description}, got {value}"

    return check


def _budget(value: float) -> bool:
    return 0 < value <= 1e9  # also rejects NaN and inf


@dataclass
class TrainOptions:
    """Every setting of a training run (stored in its checkpoints). Defaults: the recommended
    character model (2 × 512 LSTM, embedding 128, batch 32, 128 steps, Adam 2e-3, clip 5)."""

    #: a UTF-8 text (its path saved absolute); None: the bundled tiny-shakespeare
    corpus: str | None = setting(None, "", argument=True)
    level: str = setting(
        "char", "Tokens are characters or words (word models add <EOS> at each line end).", choices=LEVELS
    )
    lowercase: bool = setting(False, "Word models: lowercase the text first (character models keep its case).")
    max_vocab: int | None = setting(
        None,
        "Keep only the most frequent tokens (characters or words, specials included); the rest become <UNK>.",
        check=within(lambda v: v >= 4, "must be at least 4 (the 3 special tokens and one word)"),
    )
    min_count: int = setting(1, "Drop tokens seen fewer times (→ <UNK>).", check=at_least(1))
    cell: str = setting("lstm", "Recurrent cell.", choices=lambda: tuple(CELLS), model="cell")
    cell_options: dict = setting({}, "The cell's own options (activation, variant, peephole).", model="cell_options",
                                 flag=False)
    layers: int = setting(2, "Stacked recurrent layers.", check=at_least(1), model="num_layers")
    hidden: int = setting(512, "Hidden units per layer.", check=at_least(1), model="hidden_size")
    embed: int = setting(128, "Embedding size (0: one-hot inputs).", check=at_least(0), model="embed_size")
    dropout: float = setting(
        0.2, "Dropout between layers.", check=within(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)"), model="dropout"
    )
    tie: bool = setting(False, "Tie input and output embeddings (needs `embed` = `hidden`).", model="tie_weights")
    seq_len: int = setting(128, "Steps of truncated BPTT per window.", check=at_least(1))
    batch_size: int = setting(32, "Parallel streams per step.", check=at_least(1))
    lr: float = setting(
        2e-3, "Learning rate.", check=within(lambda v: math.isfinite(v) and v > 0, "must be a positive number")
    )
    optimizer: str = setting("adam", "", choices=lambda: tuple(OPTIMIZERS))
    weight_decay: float = setting(
        0.0, "", check=within(lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
    )
    clip: float | None = setting(
        5.0,
        "Clip the global gradient norm (0: off).",
        check=within(lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0 (or 0 to disable)"),
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
        "Last fraction of the text kept for validation.",
        check=within(lambda v: 0.0 < v < 1.0, "must be in (0, 1)"),
    )
    eval_every: int = setting(200, "Validate (and checkpoint) every N steps.", check=at_least(1))
    log_every: int = setting(10, "Write a training record to metrics.jsonl every N steps.", check=at_least(1))
    schedule: str = setting(
        "plateau",
        "Learning-rate schedule: decay on validation plateau, cosine, or constant.",
        choices=lambda: tuple(SCHEDULES),
    )
    lr_decay: float = setting(
        0.5, "Plateau decay factor.", check=within(lambda v: 0.0 < v <= 1.0, "must be in (0, 1]")
    )
    patience: int | None = setting(None, "Early stopping: evaluations without improvement.", check=at_least(1))
    backend: str = setting("auto", "", choices=BACKEND_NAMES, resumable=True)
    seed: int = setting(0, "Seeds weights, dropout and sampling.", check=at_least(0), model="seed")
    encoding: str = setting("utf-8", "Text encoding of CORPUS.")
    encoding_errors: str = setting(
        "strict", "'replace' turns undecodable bytes into U+FFFD instead of failing.", choices=("strict", "replace")
    )

    def __post_init__(self) -> None:
        if self.clip == 0:  # 0 means "no clipping", as on the command line
            self.clip = None

    def validate(self) -> TrainOptions:
        """Check every setting against its declaration; raise ConfigError naming the field."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is None and option_optional(spec):
                continue  # an optional setting left unset
            message = option_problem(spec, value)
            if message is not None:
                raise ConfigError(message, field=spec.name)
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

    def resumed_with(self, new: TrainOptions) -> TrainOptions:
        """These (saved) options with the settings a resumed run may change taken from ``new``."""
        changes = {spec.name: getattr(new, spec.name) for spec in fields(self) if spec.metadata["resumable"]}
        return TrainOptions(**{**asdict(self), **changes})

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
        return cls(**saved)


def option_problem(spec: Field, value: Any) -> str | None:
    """What is wrong with ``value`` for the option ``spec`` (after its name), or None."""
    choices = option_choices(spec)
    if choices is not None and value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    check = spec.metadata["check"]
    return check(value) if check is not None else None


def option_choices(spec: Field) -> tuple[str, ...] | None:
    """The allowed values of an option (registries are read when asked), or None for any."""
    choices = spec.metadata["choices"]
    return tuple(choices()) if callable(choices) else choices


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


def option_default(spec: Field) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def option_fields() -> tuple[Field, ...]:
    """The declarations of every option, in order."""
    return fields(TrainOptions)
