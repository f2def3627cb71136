"""``bci serve``'s settings from a rig file, ``BCI_*`` variables and flags, all three generated
from :class:`service.settings.Settings`, so a key, a variable and a flag always mean the same.

Every field ``some_name`` is the flag ``--some-name``, the variable ``BCI_SOME_NAME`` and the
key ``some_name`` of a ``--config`` TOML file. Flags are typed from the field: a bool is
``--x`` / ``--no-x``, a ``Literal`` a choice, a list takes one or more values; every value is
checked by the field's own validator at parse time (a usage error naming the flag).

Precedence (decision): the file, then ``BCI_*`` variables, then flags; later wins, key by key.
A relative path in the file is read relative to the file's folder, so a rig folder can be
moved as a whole. A file key that is not a field, or a value the field refuses, is one line
naming the key and the file (:class:`~service.cli_checks.UsageError`, exit status 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from difflib import get_close_matches
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource, SettingsError

from service.cli_checks import UsageError
from service.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["add_settings_flags", "env_names", "read_config", "settings_from"]

_FIELDS: dict[str, FieldInfo] = Settings.model_fields


def _flag(name: str) -> str:
    """The flag of field ``name``: ``source_id`` -> ``--source-id``."""
    return "--" + name.replace("_", "-")


def _env_name(name: str) -> str:
    """The environment variable of field ``name``: ``source_id`` -> ``BCI_SOURCE_ID``."""
    return f"BCI_{name.upper()}"


def env_names() -> list[str]:
    """Every ``BCI_*`` variable ``bci serve`` reads, in field order."""
    return [_env_name(name) for name in _FIELDS]


def _base(annotation: Any) -> Any:
    """``annotation`` without ``| None``."""
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation


def _adapter(name: str) -> TypeAdapter:
    field = _FIELDS[name]
    return TypeAdapter(Annotated[field.annotation, field])


def _problem(error: ValidationError) -> str:
    """The first complaint of ``error`` as a phrase (``input should be ...``)."""
    message = error.errors()[0]["msg"].removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _checker(name: str, item: Any | None = None) -> Any:
    """An argparse ``type=`` that validates with field ``name`` (or its list items)."""
    adapter = TypeAdapter(item) if item is not None else _adapter(name)

    def check(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as error:
            raise argparse.ArgumentTypeError(f"{_problem(error)}, got {text!r}") from None

    return check


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def add_settings_flags(
    parser: argparse.ArgumentParser, groups: dict[str, Any] | None = None
) -> None:
    """Add one flag per :class:`Settings` field to ``parser`` (or to ``groups[name]``, e.g. a
    mutually exclusive group). Every flag defaults to None: not given."""
    for name, field in _FIELDS.items():
        base = _base(field.annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": None}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(base) is Literal:
            kwargs["choices"] = get_args(base)
        elif get_origin(base) is list:
            kwargs.update(nargs="+", type=_checker(name, get_args(base)[0]))
        else:
            kwargs["type"] = _checker(name)
        text = f"{field.description} (default {_default(field)}; {_env_name(name)})"
        kwargs["help"] = text.replace("%", "%%")  # argparse %-formats help
        (groups or {}).get(name, parser).add_argument(_flag(name), **kwargs)


def read_config(path: Path) -> dict[str, Any]:
    """The settings in the TOML file ``path``, validated key by key; relative paths are
    made relative to the file's folder. :class:`UsageError` names the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror}; give a TOML rig file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path} is not valid TOML: {error}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            close = get_close_matches(key.replace("-", "_").lower(), _FIELDS, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"{path}: unknown key {key!r}{hint}; the keys are the serve settings: "
                + ", ".join(_FIELDS)
            )
        try:
            checked = _adapter(key).validate_python(value)
        except ValidationError as error:
            raise UsageError(f"{path}: key {key!r}: {_problem(error)}, got {value!r}") from None
        if isinstance(checked, Path):  # relative to the file's folder, ".." resolved
            checked = Path(os.path.abspath(path.parent / checked.expanduser()))
        values[key] = checked
    return values


def settings_from(args: argparse.Namespace, token: str | None = None) -> Settings:
    """:class:`Settings` from ``args.config`` (if given), then ``BCI_*``, then the flags in
    ``args`` (then ``token``, e.g. read from ``--token-file``)."""
    config = Path(args.config) if args.config is not None else None
    layers: dict[str, dict[str, Any]] = {"file": read_config(config) if config else {}}
    try:
        layers["env"] = EnvSettingsSource(Settings)()
    except SettingsError as error:
        raise UsageError(
            f"a BCI_* variable cannot be read: {error}; list values are JSON, e.g. "
            "BCI_ALLOWED_HOSTS='[\"localhost\"]'"
        ) from None
    layers["flags"] = {n: getattr(args, n) for n in _FIELDS if getattr(args, n) is not None}
    if token is not None:
        layers["flags"]["token"] = token
    values = {**layers["file"], **layers["env"], **layers["flags"]}
    try:
        return Settings(**values)
    except ValidationError as error:
        complaint = error.errors()[0]
        name = str(complaint["loc"][0]) if complaint["loc"] else ""
        where = {"file": f"key {name!r} in {config}", "env": _env_name(name), "flags": _flag(name)}
        layer = next((k for k in ("flags", "env", "file") if name in layers[k]), None)
        if layer is None:  # a check across fields: its message names them
            raise UsageError(_problem(error)) from None
        got = layers[layer][name]
        raise UsageError(f"{where[layer]}: {_problem(error)}, got {got!r}") from None
