"""Flags generated from the config: a flag that sets one config field takes its type, choices, default and help
text from :class:`cure.config.CureConfig`, where each field is documented once."""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from cure.config import CureConfig


def _field(key: str) -> Any:
    section, _, name = key.partition(".")
    fields = CureConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    return fields[name]


def config_flag(parser: argparse.ArgumentParser, key: str, flag: str | None = None, **kwargs: Any) -> None:
    """Add ``--FIELD`` (or ``flag``) for the config field ``key`` (``section.field``); unset, it stays None and the
    config decides. ``kwargs`` override what the field gives (e.g. ``choices`` for an int with a few values)."""
    info = _field(key)
    annotation = info.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    text = f"{info.description} Sets {key} (default {info.default})."
    options: dict[str, Any] = {"default": None, "help": text.replace("%", "%%")}  # argparse formats help with %
    if typing.get_origin(annotation) is typing.Literal:
        options["choices"] = list(typing.get_args(annotation))
    elif annotation in (int, float):
        options["type"] = annotation
    options.update(kwargs)
    parser.add_argument(flag or "--" + key.partition(".")[2].replace("_", "-"), **options)


def apply_config_flags(args: argparse.Namespace, cfg: CureConfig, keys: tuple[str, ...]) -> None:
    """Set each config field ``key`` whose flag was given (``args.<field>`` not None)."""
    for key in keys:
        section, _, name = key.partition(".")
        value = getattr(args, name, None)
        if value is not None:
            setattr(getattr(cfg, section), name, value)
