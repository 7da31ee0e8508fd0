"""The evaluation stage: sample, execute in the sandbox, and score with CURE's metrics (``cure evaluate``).

For each benchmark (a tasks file), the model samples ``eval.k_code`` programs and ``eval.k_test`` unit tests per
task (public examples hidden when ``eval.no_example``, as the reference's evaluation), every program runs on the
first ``eval.max_test`` ground-truth tests and on every generated test, and :func:`cure.metrics.summarize` scores the
tables: one-shot code accuracy, unit-test accuracy, p01/p00, Best-of-N on the ``eval.scales`` grid.

By default this is the reference's ``evaluation/eval.py``: its sampler (``eval.temperature`` 0.8, ``top_p`` 0.95,
``top_k`` 40), its coder prompt (one more sentence), each task's own time limit, ``List``/``Tuple``/``Optional``
predefined for the programs (``eval.exec_namespace``), and generated tests that could not be extracted left out,
a task with none left skipped by every metric (``eval.unextracted_tests``).

With ``eval.framework`` (``mpsc``, ``alphacodium``, ``sstar``) an agentic coding framework also runs on every task
(:mod:`cure.agentic`, docs/agentic.md); its metrics (``{framework}_code_acc``, ``{framework}_unit_test_acc``, tokens
and executions per task) sit next to the one-shot and Best-of-N ones.

Evaluation noise is measured by evaluating the same model with several seeds (``seeds``): the noise of a metric is
the sample standard deviation over the seeds, i.e. the standard error of one evaluation's value, so a change across
rounds can be compared with it (the difference of two evaluations has a standard error of about sqrt(2) times it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from cure.agentic import run_framework
from cure.backends import run_programs
from cure.config import CureConfig
from cure.eval_rules import drop_untested, eval_config, eval_tables
from cure.metrics import summarize
from cure.refine import flatten, refine
from cure.rollout.registry import make_engine
from cure.rollout.stage import policy_tokenizer, rollout_tasks
from cure.tasks import Task, require_labeled, write_jsonl

log = logging.getLogger(__name__)


def evaluate_tasks(
    model: str, tasks: list[Task], cfg: CureConfig, seed: int = 0, engine: Any = None, tokenizer: Any = None,
    coder: Any = None,
) -> tuple[dict[str, float], list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate one model on one benchmark; returns (metrics, rollouts, executions). With ``eval.framework`` the
    agentic framework runs too (:mod:`cure.agentic`) and its per-task trace lands in each rollout record's
    ``agentic`` field. ``coder``: another engine writes the programs (one-shot and framework), the model the tests
    (default: the model itself)."""
    require_labeled(tasks, "evaluation", "accuracy is measured with ground-truth tests")
    c = eval_config(cfg, seed, model)
    if engine is None:
        engine = make_engine(c.rollout.engine, model, c.rollout)
    if tokenizer is None:
        tokenizer = policy_tokenizer(engine, model)
    rollouts = rollout_tasks(tasks, coder or engine, engine, c, tokenizer, give_example=not cfg.eval.no_example, evaluation=True)
    executions = run_programs(rollouts, c)
    metrics = summarize(eval_tables(rollouts, executions, cfg), cfg.eval.scales, skip_untested=drop_untested(cfg))
    mean_len = lambda key: float(np.mean([x for r in rollouts for x in r[key]])) if rollouts else 0.0  # noqa: E731
    metrics["code_response_length"] = mean_len("code_lengths")
    metrics["test_response_length"] = mean_len("test_lengths") if cfg.eval.k_test else 0.0
    if cfg.eval.refine_rounds:
        rows, _, _ = refine(tasks, rollouts, executions, coder or engine, engine, c, cfg.eval.refine_rounds, tokenizer)
        metrics.update(flatten(rows))
    if cfg.eval.framework != "none":
        found, records = run_framework(cfg.eval.framework, tasks, coder or engine, engine, c, tokenizer,
                                       [r["time_limit_s"] for r in rollouts])
        metrics.update(found)
        for r, rec in zip(rollouts, records):
            r["agentic"] = rec
    return metrics, rollouts, executions


def noise_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Standard error of one evaluation, per metric: the sample standard deviation (ddof 1) over repeated
    evaluations of the same model with different seeds (at least three give a usable estimate)."""
    if len(runs) < 2:
        return {}
    return {k: float(np.std([r[k] for r in runs], ddof=1)) for k in runs[0]}


def evaluate_benchmarks(
    model: str,
    benchmarks: dict[str, list[Task]],
    cfg: CureConfig,
    round_: int,
    seeds: list[int],
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One history entry: ``round``, per-benchmark metrics (first seed), and the noise over the seeds.

    The first benchmark's metrics are also written at the top level, so ``history.json`` entries carry the keys of
    :func:`cure.metrics.summarize` for the primary benchmark directly.
    """
    empty = [name for name, tasks in benchmarks.items() if not tasks]
    if not benchmarks or empty:
        raise ValueError(f"no tasks to evaluate in benchmark(s) {empty or '(none given)'}: metrics of zero tasks "
                         "would read as 0.0 accuracy")

    c0 = eval_config(cfg, seeds[0], model)
    engine = make_engine(c0.rollout.engine, model, c0.rollout)
    tokenizer = policy_tokenizer(engine, model)
    entry: dict[str, Any] = {"round": round_, "benchmarks": {}, "noise": {}, "seeds": list(seeds)}
    t0 = time.monotonic()
    for name, tasks in benchmarks.items():
        runs = []
        for seed in seeds:
            metrics, rollouts, executions = evaluate_tasks(model, tasks, cfg, seed, engine, tokenizer)
            runs.append(metrics)
            log.info("round %d %s seed %d: code_acc %.3f unit_test_acc %.3f", round_, name, seed,
                     metrics["code_acc"], metrics["unit_test_acc"])
            if out_dir is not None and seed == seeds[0]:
                write_jsonl(Path(out_dir) / f"{name}.rollouts.jsonl", rollouts)
                write_jsonl(Path(out_dir) / f"{name}.executions.jsonl", executions)
        entry["benchmarks"][name] = runs[0]
        if len(runs) > 1:
            entry["noise"][name] = noise_of(runs)
            entry.setdefault("repeats", {})[name] = runs
    primary = next(iter(benchmarks))
    entry.update(entry["benchmarks"][primary])
    entry["primary_benchmark"] = primary
    entry["eval_seconds"] = round(time.monotonic() - t0, 1)
    return entry
