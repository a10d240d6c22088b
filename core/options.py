"""Command-line options derived from pydantic configs: one source of truth for names, types, defaults and help.

>>> parser = argparse.ArgumentParser()
>>> add_options(parser, TrainConfig, exclude={"progress"})
>>> args = parser.parse_args(["--batch-size", "4", "--no-lora"])
>>> options_from_args(args, TrainConfig)
{'batch_size': 4, 'lora': False}

Every field becomes ``--field-name`` (underscores become dashes) with the field's ``description`` as its help text
and its default shown. What the annotation says decides how the value is read:

- ``bool`` -> ``--flag`` / ``--no-flag``;
- ``Literal[...]`` -> a choice among the literals;
- ``int``, ``float``, ``str``, ``Path`` (also inside ``X | None``) -> that type;
- ``list[X]`` -> repeatable (``--item a --item b``);
- anything else (dicts, unions of several types) -> JSON where it parses, else text (``--mix '{"pt": 2}'``),
  validated by the model.

Options the user does not give stay out of the namespace (``argparse.SUPPRESS``), so :func:`options_from_args`
returns only what was typed and the model's own defaults apply to the rest.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from core.errors import ConfigError

_SCALARS = (int, float, str, Path)


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _json(text: str) -> Any:
    """A value read as JSON where it parses (``1200``, ``true``, ``{"pt": 2}``), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


_METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH"}


def _default_text(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value = info.default
    elif info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        return "required"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def argument_spec(name: str, info: FieldInfo) -> dict[str, Any]:
    """The ``add_argument`` keywords of one field (without its flag)."""
    annotation = _strip_optional(info.annotation)
    origin = typing.get_origin(annotation)
    help_text = (info.description or name.replace("_", " ")).rstrip(".")
    help_text = f"{help_text} (default: {_default_text(info)})".replace("%", "%%")
    spec: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if annotation is bool:
        spec["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        choices = typing.get_args(annotation)
        spec.update(choices=choices, type=type(choices[0]), metavar="{" + ",".join(map(str, choices)) + "}")
    elif annotation in _SCALARS:
        spec.update(type=annotation, metavar=_METAVARS[annotation])
    elif origin is list and typing.get_args(annotation) and typing.get_args(annotation)[0] in _SCALARS:
        spec.update(action="append", type=typing.get_args(annotation)[0], metavar="VALUE")
        spec["help"] = help_text.replace(" (default:", "; repeatable (default:")
    else:
        spec.update(type=_json, metavar="JSON")
    return spec


def add_options(
    parser: argparse.ArgumentParser | Any,
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    renames: dict[str, str] | None = None,
) -> None:
    """Add one option per field of ``model`` to ``parser`` (or an argument group), but those in ``exclude``.

    ``renames`` maps a field to another flag (``{"max_steps": "--steps"}``); the destination stays the field name.
    """
    skip, renames = set(exclude), renames or {}
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        parser.add_argument(renames.get(name, flag(name)), **argument_spec(name, info))


def options_from_args(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model`` the user gave on the command line (``add_options`` leaves the others out)."""
    given = vars(args)
    return {name: given[name] for name in model.model_fields if name in given}


def build(
    model: type[BaseModel], options: dict[str, Any], *, what: str | None = None, renames: dict[str, str] | None = None
) -> Any:
    """``model(**options)``, an invalid value reported as a :class:`ConfigError` naming its option as the user
    typed it (``renames``: the same field -> flag map :func:`add_options` took)."""
    try:
        return model(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        where = (renames or {}).get(field, flag(field)) if field else (what or model.__name__)
        raise ConfigError(f"{where}: {first['msg']}") from None
