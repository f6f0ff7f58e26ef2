"""The recurrent stack every model config embeds: :class:`RecurrentSpec`.

Each task model (sequence model, classifier, tagger, seq2seq, generator) reads its inputs one
way, runs them through a stack of recurrent layers, and reads the stack out another way. The
stack's settings are the same everywhere, so they live in one dataclass, validated once:

    RecurrentSpec(cell="gru", hidden_size=64, num_layers=2, bidirectional=True, merge="concat",
                  dropout=0.1, cell_options={"variant": "reset_after"})

A model config holds it as its ``recurrent`` field and writes it as a nested JSON object:
``{"input_size": 65, ..., "recurrent": {"cell": "gru", "hidden_size": 64, ...}, ...}``.

Compatibility: configs were written flat before (``{"cell": "gru", "hidden_size": 64, ...}``)
and are still built flat (``SequenceModelConfig(cell="gru", hidden_size=64)``). The decorator
:func:`with_recurrent_spec` lets a config take the flat names as keyword arguments (folded
into ``recurrent``), read and set them as attributes (``config.hidden_size``), and
:func:`config_from_dict` reads either form of a stored dict.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np

from mlxrnn.errors import ConfigError
from mlxrnn.nn.cells import cell_class, cell_option_names, make_cell
from mlxrnn.nn.layers import Recurrent, make_recurrent
from mlxrnn.nn.module import check_positive_int, check_probability

MERGES = ("concat", "sum")


@dataclass(frozen=True)
class RecurrentSpec:
    """A stack of recurrent layers: which cell, how wide, how deep, which directions.

    ``cell`` is a registered cell name (:data:`mlxrnn.nn.cells.CELLS`) and ``cell_options`` its
    constructor options, e.g. ``{"peephole": True}`` for an LSTM. ``hidden_size`` is H per
    direction; a bidirectional stack's outputs are (B, T, 2H) with ``merge="concat"`` and
    (B, T, H) with ``"sum"``; ``dropout`` applies between stacked layers in training, one mask
    per step, or one per sequence shared by its steps with ``locked_dropout``.
    Frozen: change one with :func:`dataclasses.replace` (or through the owning config).
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    merge: str = "concat"
    dropout: float = 0.0
    cell_options: dict | None = None
    locked_dropout: bool = False  #: one dropout mask per sequence, shared across time (variational)

    def validate(self) -> RecurrentSpec:
        """Check every field (ConfigError naming it); returns the spec."""
        cell_class(self.cell)  # a ConfigError naming the registered cells
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        if not isinstance(self.bidirectional, (bool, np.bool_)):
            raise ConfigError(f"bidirectional must be True or False, got {self.bidirectional!r}")
        if self.merge not in MERGES:
            raise ConfigError(f"merge must be 'concat' or 'sum', got {self.merge!r}")
        check_probability("dropout", self.dropout)
        if not isinstance(self.locked_dropout, (bool, np.bool_)):
            raise ConfigError(f"locked_dropout must be True or False, got {self.locked_dropout!r}")
        self.sample_cell()
        return self

    def sample_cell(self) -> Any:
        """A 1×1 cell with these options: cheap, and it checks the options and knows the gate count."""
        options = self.cell_options
        if options is None:
            options = {}
        elif not isinstance(options, Mapping):
            raise ConfigError(f"cell_options must be a dict such as {{'peephole': True}}, got {options!r}")
        valid = cell_option_names(self.cell)
        unknown = sorted(str(k) for k in options if k not in valid)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for cell {self.cell!r}; valid: {', '.join(valid) or 'none'}"
            )
        try:
            return make_cell(self.cell, 1, 1, **options)
        except (TypeError, ValueError) as error:  # e.g. cell_options={"forget_bias": "high"}
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"invalid cell_options {options!r} for cell {self.cell!r}: {error}") from None

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional stack, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """H_out, the width of the stack's per-step outputs (2H for a bidirectional concat)."""
        return self.hidden_size * (2 if self.bidirectional and self.merge == "concat" else 1)

    @property
    def final_size(self) -> int:
        """D·H, the width of the top layer's final hidden states side by side."""
        return self.hidden_size * self.num_directions

    def num_gates(self) -> int:
        """The cell's fused gate blocks (1 RNN, 3 GRU, 4 LSTM)."""
        return self.sample_cell().num_gates

    def build(self, input_size: int, seed: int, backend: Any) -> Recurrent:
        """The layers: ``input_size`` features in, parameters drawn from ``seed``."""
        return make_recurrent(
            self.cell, input_size, self.hidden_size, num_layers=self.num_layers, bidirectional=self.bidirectional,
            merge=self.merge, dropout=self.dropout, locked_dropout=bool(self.locked_dropout), seed=seed,
            backend=backend, **(self.cell_options or {}),
        )

    def to_dict(self) -> dict:
        """The spec as JSON-ready fields (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> RecurrentSpec:
        """A spec from its stored dict; unknown keys are ignored (written by a newer version)."""
        if isinstance(data, RecurrentSpec):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"recurrent must be a dict of recurrent settings, got {data!r}")
        return cls(**{k: v for k, v in data.items() if k in SPEC_FIELDS})


SPEC_FIELDS = tuple(f.name for f in fields(RecurrentSpec))
Config = TypeVar("Config")


def with_recurrent_spec(aliases: Mapping[str, str] | None = None) -> Callable[[type[Config]], type[Config]]:
    """Decorate a config dataclass with a ``recurrent: RecurrentSpec`` field to accept flat names.

    The config then takes every spec field (and each alias, e.g. Seq2Seq's
    ``bidirectional_encoder`` for ``bidirectional``) as a keyword argument, folded into
    ``recurrent`` on top of the given or default spec, and reads/sets them as attributes.
    Apply it above ``@dataclass``.
    """
    aliases = dict(aliases or {})

    def decorate(cls: type[Config]) -> type[Config]:
        flat_names = {**{name: name for name in SPEC_FIELDS}, **aliases}
        default_spec = cls.__dataclass_fields__["recurrent"].default_factory
        generated_init = cls.__init__

        @functools.wraps(generated_init)
        def __init__(self, *args: Any, recurrent: Any = None, **kwargs: Any) -> None:
            flat = {flat_names[k]: kwargs.pop(k) for k in list(kwargs) if k in flat_names}
            spec = default_spec() if recurrent is None else RecurrentSpec.from_dict(recurrent)
            generated_init(self, *args, recurrent=replace(spec, **flat) if flat else spec, **kwargs)

        cls.__init__ = __init__
        cls.flat_recurrent_names = tuple(flat_names)
        __init__.__signature__ = _config_signature(generated_init, default_spec(), flat_names)
        for flat_name, spec_name in flat_names.items():
            setattr(cls, flat_name, _spec_property(spec_name))
        return cls

    return decorate


def _config_signature(generated_init: Callable, spec: RecurrentSpec,
                      flat_names: Mapping[str, str]) -> inspect.Signature:
    """The dataclass's fields, then the flat recurrent names as keywords (defaults: the default spec's),
    so ``help()`` and editors that read signatures show every name the config takes."""
    generated = inspect.signature(generated_init)
    flat = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=getattr(spec, spec_name))
            for name, spec_name in flat_names.items()]
    return generated.replace(parameters=[*generated.parameters.values(), *flat])


def _spec_property(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self.recurrent, name)

    def set_(self: Any, value: Any) -> None:
        self.recurrent = replace(self.recurrent, **{name: value})

    return property(get, set_, doc=f"``recurrent.{name}`` (the flat name configs had before RecurrentSpec)")


def config_from_dict(cls: type[Config], data: Any) -> Config:
    """Rebuild a config from its stored dict, nested (``"recurrent": {...}``) or flat; validated.

    Unknown keys are ignored (written by a newer version). A dict giving a recurrent setting both
    at the top level and under "recurrent" is refused: which one was meant is unknowable.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__name__} must be stored as a dict, got {type(data).__name__}")
    flat = {k: v for k, v in data.items() if k in cls.flat_recurrent_names}
    if flat and "recurrent" in data:
        raise ConfigError(
            f"the config gives {', '.join(sorted(flat))} both at the top level and under 'recurrent'; keep one"
        )
    known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
    if "recurrent" in known:  # stored: a dict, never null (None would quietly mean the defaults)
        known["recurrent"] = RecurrentSpec.from_dict(known["recurrent"])
    return cls(**known, **flat).validate()


def config_from_settings(cls: type[Config], config: Any, settings: Mapping[str, Any]) -> Config:
    """The config a model's constructor was given: ``config`` itself (or its stored dict), or one
    built from keyword settings (``SequenceClassifier(input_size=43, hidden_size=48)``)."""
    if settings:
        if config is not None:
            raise ConfigError(f"give a {cls.__name__} or its settings as keywords ({', '.join(settings)}), not both")
        valid = setting_names(cls)
        unknown = [name for name in settings if name not in valid]
        if unknown:
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {unknown[0]!r}{hint} for a {cls.__name__}; valid: {', '.join(valid)}")
        return cls(**settings)
    if config is None:
        return cls()
    if isinstance(config, Mapping):
        return cls.from_dict(config)
    if not isinstance(config, cls):
        raise ConfigError(f"config must be a {cls.__name__} (or its settings as keywords), got {type(config).__name__}")
    return config


def setting_names(cls: type) -> tuple[str, ...]:
    """Every keyword a config takes: its fields and the flat recurrent names."""
    return tuple(dict.fromkeys([*cls.__dataclass_fields__, *getattr(cls, "flat_recurrent_names", ())]))


def takes_settings(model_cls: type) -> type:
    """Decorate a model class whose ``__init__(self, config=None, backend=None, dtype=..., **settings)``
    builds its ``config_class`` from keywords: its signature then lists every setting."""
    init = model_cls.__init__
    own = [p for p in inspect.signature(init).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                for p in inspect.signature(model_cls.config_class).parameters.values()]
    init.__signature__ = inspect.Signature([*own, *settings])
    return model_cls


__all__ = ["MERGES", "RecurrentSpec", "config_from_dict", "config_from_settings", "setting_names", "takes_settings",
           "with_recurrent_spec"]
