"""The evaluation's rules, shared by evaluation, refinement and pairing: how it samples and how it scores.

:func:`eval_config` is the config evaluation samples with (the ``eval`` section's k, sampler and test count, the
model's own prompt templates); :func:`eval_tables` and :func:`drop_untested` apply ``eval.unextracted_tests`` to the
pass tables before :func:`cure.metrics.summarize` scores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cure.config import CureConfig
from cure.metrics import tables_from_executions
from cure.rollout.stage import default_prompt_dir


def eval_config(cfg: CureConfig, seed: int, model: str) -> CureConfig:
    """The config used for sampling at evaluation: the eval section's k, sampler (temperature, top-p, top-k) and
    test count, and the model's own prompt templates when it ships them."""
    c = cfg.model_copy(deep=True)
    c.rollout.prompt_dir = c.rollout.prompt_dir or default_prompt_dir(model)
    c.rollout.k_code = cfg.eval.k_code
    c.rollout.k_test = cfg.eval.k_test
    c.rollout.temperature = cfg.eval.temperature
    c.rollout.top_p = cfg.eval.top_p
    c.rollout.top_k = cfg.eval.top_k
    c.rollout.seed = seed
    c.data.max_gt_tests = cfg.eval.max_test
    return c


def drop_untested(cfg: CureConfig) -> bool:
    """Whether tasks left with no generated test are skipped (reference eval.py; not in code-only evaluation)."""
    return cfg.eval.unextracted_tests == "drop" and cfg.eval.k_test > 0


def eval_tables(rollouts: list[dict[str, Any]], executions: list[dict[str, Any]], cfg: CureConfig) -> list[Any]:
    """The (ground truth, generated) pass tables; with ``eval.unextracted_tests=drop`` the columns of tests that
    could not be extracted are left out, as the reference's evaluation never adds them."""
    tables = tables_from_executions(executions)
    if cfg.eval.unextracted_tests != "drop":
        return tables
    return [(gt, gen[:, np.asarray([t is not None for t in r["tests"]], dtype=bool)]) for (gt, gen), r in zip(tables, rollouts)]
