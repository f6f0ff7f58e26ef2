"""Training settings from a file: a run's ``options.json``, or a user's JSON or TOML.

The keys are the :class:`~mlxrnn.run.options.TrainOptions` field names, as ``options.json``
stores them (``val_frac``; ``val-frac`` is accepted too). A cell's own options (``activation``,
``variant``, ``peephole``) may sit at the top level or in a ``cell_options`` table. A run's
``options.json`` (``{"options": {...}, "vocab_size": ...}``) gives its ``options``. Values are
checked for their type here and for their range by :meth:`TrainOptions.validate`; a relative
``corpus`` path is read from the working directory, as when the run was started.

TOML is read with the standard library's ``tomllib`` (Python 3.11+); on Python 3.10 it needs
the ``tomli`` package if installed, else only JSON is accepted (mlxrnn adds no dependency for it).
"""

from __future__ import annotations

import difflib
import json
import reprlib
from pathlib import Path
from typing import Any

from mlxrnn.errors import ConfigError, DataError
from mlxrnn.io.files import read_regular_file
from mlxrnn.nn.cell_options import cell_option_kinds
from mlxrnn.nn.cells import CELLS, cell_option_names
from mlxrnn.run.option_types import option_fields, option_type, option_value_types
from mlxrnn.run.options import option_optional

__all__ = ["read_options_file"]

_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}
#: a settings file larger than this is not read (a run's options.json has a few kilobytes)
MAX_SETTINGS_BYTES = 1 << 20
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 3, 40, 40


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10: tomli is the same parser, if the user has it
            try:
                import tomli as tomllib
            except ImportError:
                raise ConfigError(
                    f"{path}: reading TOML needs Python 3.11+ (or pip install tomli); write the settings as JSON"
                ) from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path} is not valid TOML ({error})") from None
        except RecursionError:
            raise _too_deep(path) from None
    try:
        return json.loads(text)
    except RecursionError:
        raise _too_deep(path) from None
    except ValueError as error:
        hint = " (a TOML file needs the .toml suffix)" if path.suffix.lower() != ".json" else ""
        raise ConfigError(f"{path} is not valid JSON ({error}){hint}") from None


def _too_deep(path: Path) -> ConfigError:
    return ConfigError(f"{path} is nested too deeply to be a settings file; write each setting as a plain value")


def _checked(path: Path, name: str, value: Any, kind: type, optional: bool) -> Any:
    """``value`` if it has the setting's type (ints accepted as floats), else a ConfigError."""
    if value is None and optional:
        return None
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{path}: `{name}` must be {_KINDS.get(kind, kind.__name__)}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """A short, safe rendering of a value from the file (however long or deeply nested)."""
    try:
        return _SHOWN.repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"


def _cell_option(path: Path, name: str, value: Any) -> Any:
    """A cell's option from the file, checked for the type its cells take (as the flag would be)."""
    kinds = cell_option_kinds()
    if name not in kinds:
        valid = ", ".join(sorted(kinds))
        raise ConfigError(f"{path}: `cell_options` {name!r} is not an option of any cell (they take {valid})")
    return _checked(path, name, value, kinds[name], optional=False)


def read_options_file(path: str | Path) -> dict[str, Any]:
    """The settings in ``path`` by field name (cell options under ``cell_options``).

    Raises DataError when the file cannot be read, ConfigError when it is not JSON/TOML, not a
    table of settings, names a setting ``mlxrnn train`` does not have, or gives one a value of
    the wrong type.
    """
    path = Path(path)
    try:
        raw = read_regular_file(path, lambda reason: DataError(f"the settings file {path} {reason}; pass a JSON or "
                                                               "TOML file"), max_bytes=MAX_SETTINGS_BYTES)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise DataError(f"cannot read the settings file {path}: {reason}") from None
    data = _parse(path, text)
    if isinstance(data, dict) and isinstance(data.get("options"), dict):
        data = data["options"]  # a run's options.json
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a table of settings by name, got {type(data).__name__}")
    specs = {spec.name: spec for spec in option_fields()}
    cell_names = {name for cell in CELLS for name in cell_option_names(cell)}
    settings: dict[str, Any] = {}
    cell_options: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "cell_options":
            nested = _checked(path, name, value, dict, optional=True) or {}
            cell_options.update({str(key): _cell_option(path, str(key), item) for key, item in nested.items()})
        elif name in cell_names:
            cell_options[name] = _cell_option(path, name, value)
        elif name in specs:
            spec = specs[name]
            kinds = option_value_types(spec)  # `eval_every`: a count or "epoch"
            kind = str if isinstance(value, str) and str in kinds else option_type(spec)
            settings[name] = _checked(path, name, value, kind, option_optional(spec))
        else:
            unknown.append(str(key))
    if unknown:
        known = [*specs, *cell_names]
        hints = [
            f"{key} (did you mean {close[0]}?)"
            if (close := difflib.get_close_matches(key.replace("-", "_"), known, n=1))
            else key
            for key in unknown
        ]
        raise ConfigError(f"{path} names settings mlxrnn train does not have: {', '.join(hints)}")
    if cell_options:
        settings["cell_options"] = cell_options
    return settings
