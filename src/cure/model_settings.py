"""Settings a model folder asks for: ``DIR/cure.json``.

A model trained on particular prompts says so in its folder, next to its weights. The offline tiny model is trained
on its chat template with tester prompts that never show the public example, so its folder holds::

    {"config": {"rollout": {"prompt_layout": "chat_template", "p_give_example": 0.0}}}

Every command given a model folder (``--model DIR``, or ``model.path``) applies these settings to each config field
the user did not set (in ``--config`` or with ``--set``): the user's settings win, then the model's, then the
paper's defaults. The pipelines take every field as an explicit parameter, so there the presets set them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cure.config import CureConfig

SETTINGS_FILE = "cure.json"


def read_model_settings(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{section: {field: value}}`` from ``model_dir/cure.json`` ({} when the folder has none).

    Raises ValueError naming the file and the key for anything that is not a known config field with a valid value.
    """
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    settings = data.get("config") if isinstance(data, dict) else None
    if not isinstance(settings, dict) or set(data) - {"config"}:
        raise ValueError(f"{path}: expected {{\"config\": {{SECTION: {{FIELD: VALUE}}}}}}, got keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    probe = CureConfig()
    for section, fields in settings.items():
        if section not in CureConfig.model_fields or not isinstance(fields, dict):
            raise ValueError(f"{path}: config.{section}: not a config section holding fields "
                             f"(sections: {', '.join(CureConfig.model_fields)})")
        target = getattr(probe, section)
        for name, value in fields.items():
            if name not in type(target).model_fields:
                raise ValueError(f"{path}: config.{section}.{name}: no such field")
            try:
                setattr(target, name, value)
            except ValidationError as e:
                raise ValueError(f"{path}: config.{section}.{name}: {e.errors()[0]['msg']}, got {value!r}") from None
    return settings


def apply_model_settings(cfg: CureConfig, model_dir: str | Path | None) -> list[str]:
    """Apply ``model_dir``'s settings to every field of ``cfg`` the user did not set; returns what was applied
    (``section.field=value``). A model that is not a local folder (a hub or API name) has no settings."""
    if not model_dir or not Path(model_dir).is_dir():
        return []
    applied = []
    for section, fields in read_model_settings(model_dir).items():
        target = getattr(cfg, section)
        for name, value in fields.items():
            if name in target.model_fields_set:  # the user's
                continue
            setattr(target, name, value)
            applied.append(f"{section}.{name}={value}")
    return applied

