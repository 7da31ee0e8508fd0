"""Pipeline parameters generated from :class:`cure.config.CureConfig`: one parameter per config field.

A field ``section.field`` becomes the pipeline parameter ``section__field`` with the config's default and help text,
so a hyperparameter is documented once (in the config) and the Kubeflow UI shows every one of them. The number of
rounds is the training pipeline's ``total_rounds`` parameter instead (it is not a field of one run's config).
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from typing import Any, get_args, get_origin

from cure.config import CureConfig

COMPILE_TIME = {"pipeline.rounds"}


def _kfp_type(annotation: Any) -> type:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return type(get_args(annotation)[0])
    if origin in (list, tuple):
        return list
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _kfp_type(args[0])
    if annotation in (int, float, str, bool):
        return annotation
    return str


def config_parameters(cfg: CureConfig | None = None) -> list[tuple[str, str, str, type, Any, str]]:
    """(param name, section, field, KFP type, default, description) for every runtime config field."""
    cfg = cfg or CureConfig()
    out = []
    for section, _sec_info in CureConfig.model_fields.items():
        sec_obj = getattr(cfg, section)
        for field, info in type(sec_obj).model_fields.items():
            if f"{section}.{field}" in COMPILE_TIME:
                continue
            default = getattr(sec_obj, field)
            kfp_type = _kfp_type(info.annotation)
            if isinstance(default, tuple):
                default = list(default)
            if isinstance(default, list):
                default = [list(x) if isinstance(x, tuple) else x for x in default]
            if default is None:
                kfp_type, default = str, ""
            if kfp_type is list:
                # Lists travel as JSON text: KFP splices dict members into its executor JSON unescaped,
                # so a list of strings inside the config dict would break it.
                kfp_type, default = str, list_text(default)
            out.append((f"{section}__{field}", section, field, kfp_type, default, info.description or ""))
    return out


def list_text(value: list[Any]) -> str:
    """A list as flow-style YAML with single quotes (``['User:', 'Human:']``), which the config parses back.

    KFP splices the members of a dict parameter into its executor JSON without escaping them, so the text must
    hold no double quote or backslash.
    """
    text = json.dumps(value).replace('"', "'")
    if "\\" in text or any("'" in x for x in _strings(value)):
        raise ValueError(f"cannot pass {value!r} as a pipeline parameter: quotes and backslashes are not supported")
    return text


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def config_dict(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Nest ``section__field`` values back into the config's sections (empty strings mean "unset")."""
    nested: dict[str, dict[str, Any]] = {}
    for name, section, field, _, _, _ in config_parameters():
        if name in values:
            nested.setdefault(section, {})[field] = values[name]
    return nested


def with_config_signature(
    fn: Callable[..., Any], fixed: list[tuple[str, type, Any, str]], cfg: CureConfig | None = None, doc: str = ""
) -> Callable[..., Any]:
    """Give ``fn(**kwargs)`` a signature and a docstring: the ``fixed`` (name, type, default, help) parameters,
    then one per config field. KFP reads both to build the pipeline's inputs and their descriptions."""
    params, lines = [], [doc.strip(), "", "Args:"]
    entries = list(fixed) + [(n, t, d, h) for n, _, _, t, d, h in config_parameters(cfg)]
    for name, annotation, default, help_ in entries:
        params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation))
        lines.append(f"    {name}: {help_}")
    names = [p.name for p in params]

    def wrapper(*args: Any, **kwargs: Any) -> Any:  # KFP passes the inputs positionally, in signature order
        kwargs.update(zip(names, args))
        return fn(**kwargs)

    wrapper.__name__ = wrapper.__qualname__ = getattr(fn, "__name__", "pipeline")
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__doc__ = "\n".join(lines)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
