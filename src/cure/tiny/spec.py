"""The tiny model's sizes and warm-start settings (:class:`TinySpec`), and where its templates and the shipped model live.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


TEMPLATES_DIR = Path(__file__).parents[1] / "templates" / "tiny"


# The model this project ships: `tiny:0` (seed 0, the default steps), built once and checked in as package data, so
# every machine starts the demo from the same weights (a build is deterministic only on one kind of CPU).
SHIPPED_DIR = Path(__file__).parents[1] / "models" / "tiny"


DTYPE_ENV = "CURE_TINY_DTYPE"


# How the model wants to be prompted (written to DIR/cure.json, read by cure.model_settings): it is trained on its
# chat template, and its tester prompts never show the public example.
MODEL_SETTINGS = {"rollout": {"prompt_layout": "chat_template", "p_give_example": 0.0}}


@dataclass(frozen=True)
class TinySpec:
    """Sizes and warm-start settings (build times: README, "Time split")."""

    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 512
    warm_tasks: int = 6000  # synthetic train-split tasks used for the warm start
    steps: int = 2400  # optimizer steps of the warm start
    tests_per_task: int = 2  # tester examples per warm-start task (computing a test's output is the harder skill)
    code_share: float = 1.0  # share of warm-start tasks with a coder example (1.0: all)
    wrong_code_share: float = 0.35  # share of coder examples that show a typical wrong program instead
    wrong_test_share: float = 0.35  # share of tester examples whose output is a typical wrong program's
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    p_example: float = 0.0  # share of tester prompts showing the public example (the demo never shows it)
    threads: int = 1  # fixed so the result does not depend on the machine's core count; one thread: two crawled on a loaded 2-core box (1.7 s a step at load 11)
    dtype: str = "auto"  # warm-start compute precision (see compute_dtype); the saved weights are float32
