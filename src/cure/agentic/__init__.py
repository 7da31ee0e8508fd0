"""Agentic coding frameworks at evaluation (``eval.framework``): MPSC, AlphaCodium and S*, with the coder and the
tester as separate roles (the same model unless a pairing gives another coder).

Each framework is pure protocol logic over ports (:mod:`cure.agentic.common`): sample from the coder, sample from
the tester, run programs in the sandbox. :func:`run_framework` wires the real ones (:mod:`cure.agentic.live`) and
scores what each framework ends with: the pass rate of its pick on the ground-truth tests (``{name}_code_acc``) and
the unit-test accuracy of its final tests (``{name}_unit_test_acc``, :func:`cure.metrics.summarize`'s definition),
with tokens and executions per task. The per-task trace (every prompt, response and execution) goes into the
records returned, one per task.
"""

from __future__ import annotations

import logging
from typing import Any

from cure.agentic import alphacodium, mpsc, sstar
from cure.agentic.common import Outcome, Ports, Session, aggregate, roles_only, score
from cure.agentic.live import LivePorts
from cure.config import CureConfig
from cure.prompts import PromptTemplates
from cure.tasks import Task

log = logging.getLogger(__name__)

FRAMEWORKS = ("mpsc", "alphacodium", "sstar")


def run_one(name: str, session: Session, templates: Any, cfg: CureConfig) -> Outcome:
    """One framework on one task, with the evaluation's k_code, k_test and ``eval.framework_iterations``."""
    e, ext, roles = cfg.eval, cfg.rollout.extraction, roles_only(cfg.rollout.prompt_dir)
    if name == "mpsc":
        return mpsc.run(session, templates, e.k_code, e.k_test, e.k_test, ext, roles=roles)
    if name == "alphacodium":
        return alphacodium.run(session, templates, e.k_code, e.k_test, e.framework_iterations, ext, roles=roles)
    if name == "sstar":
        return sstar.run(session, templates, e.k_code, e.framework_iterations, ext, roles=roles, k_test=e.k_test)
    raise ValueError(f"unknown agentic framework {name!r}: choose one of {', '.join(FRAMEWORKS)}")


def run_tasks(name: str, tasks: list[Task], ports: Ports, templates: Any, cfg: CureConfig,
              time_limits: list[float]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Run a framework on every task through ``ports``; returns (metrics, one record per task)."""
    scored, traces, records = [], [], []
    for task, limit in zip(tasks, time_limits):
        session = Session(ports, task, limit)
        outcome = run_one(name, session, templates, cfg)
        s = score(outcome, task, ports, session.time_limit, cfg.eval.max_test)
        scored.append(s)
        traces.append(outcome.trace)
        records.append({"task_id": task.task_id, "framework": name, "pick": outcome.pick, "pick_pass": s["pick_pass"],
                        "final_tests": outcome.tests, "detail": outcome.detail, "costs": outcome.trace.costs(),
                        "fallbacks": outcome.trace.fallbacks, "steps": outcome.trace.steps})
    metrics = aggregate(name, scored, traces)
    log.info("%s: code_acc %.3f unit_test_acc %.3f", name, metrics[f"{name}_code_acc"], metrics[f"{name}_unit_test_acc"])
    return metrics, records


def run_framework(name: str, tasks: list[Task], coder: Any, tester: Any, cfg: CureConfig, tokenizer: Any,
                  time_limits: list[float]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A framework with the real engines and the sandbox; ``cfg`` is the evaluation's sampling config
    (:func:`cure.evaluate.eval_config`)."""
    templates = PromptTemplates.load(cfg.rollout.prompt_dir)
    with LivePorts(coder, tester, cfg, tokenizer, templates) as ports:
        return run_tasks(name, tasks, ports, templates, cfg, time_limits)
