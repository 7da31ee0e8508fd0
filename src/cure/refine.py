"""Agentic refinement at evaluation (``eval.refine_rounds`` K), in the S* / AlphaCodium style.

Start: the one-shot programs and generated unit tests of an evaluation, with their execution records. Each round:

1. **Probe.** Every program runs on every generated test in the sandbox, keeping what it printed
   (:class:`cure.sandbox.pool.Job` ``want_output``).
2. **Test refinement** (agentic unit-test generation). A test that disagrees with the majority of programs (fewer
   than half of the extracted programs pass it) is regenerated: the tester gets its prompt again, with that test
   and the output most programs print for its input, and writes a new test in the same format.
3. **Code refinement.** A program that fails a generated test gets a refinement prompt carrying one failing test:
   the one most programs pass (the most trusted), with its input, expected output and the program's actual output
   (or how it failed: error, timeout, ...). The coder writes a new program, which replaces the old one (a response
   with no program keeps the old one).
4. **Score.** The refined programs and tests run against the ground truth, and CURE's metrics are computed with
   the evaluation's rules (:func:`cure.eval_rules.eval_tables`: ``eval.unextracted_tests``).

Refinement prompts are laid out as the rollout stage's (``rollout.prompt_layout``, the reference layout by default)
and the coder's carries the evaluation's wording (:data:`cure.prompts.EVAL_SPECIAL_REQUIREMENTS`).

Both refinements of a round read the same probe (the state at the start of the round), so they are independent.
Reported per round (round 0 = the one-shot sample): code accuracy (the refined accuracy; round 0 = one-shot),
Best-of-N on ``eval.scales`` with the current tests, and unit-test accuracy (before test refinement = previous row,
after = this row), with the number of programs and tests refined.

The probe reads program outputs from the execution backend's pool (:mod:`cure.backends`); the Kubernetes backend
has none, so there the feedback says how the program failed but not what it printed.
"""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial
from typing import Any

import numpy as np

from cure.backends import execution_backend, run_programs
from cure.config import CureConfig
from cure.eval_rules import drop_untested, eval_tables
from cure.metrics import summarize
from cure.prompts import (
    EVAL_SPECIAL_REQUIREMENTS,
    FAILURE_TEXT,
    Layout,
    PromptTemplates,
    _compiled,
    _render,
    extract_code,
    extract_test,
)
from cure.rollout.engine import SamplingParams
from cure.rollout.stage import _render_for
from cure.sandbox.pool import Job
from cure.tasks import Task

log = logging.getLogger(__name__)

def _block(text: str) -> str:
    return "```\n" + (text if text.endswith("\n") else text + "\n") + "```"


def code_refine_prompt(task: Task, code: str, test: dict[str, str], status: str, actual: str | None,
                       templates: PromptTemplates, tokenizer: Any, layout: Layout | None = "reference") -> Any:
    """The coder's refinement prompt: the problem, its program, and one failing test with what went wrong; the
    evaluation's coder wording, in ``layout`` (as :func:`cure.prompts.code_prompt`)."""
    if status == "fail" and actual is not None:
        outcome = "Your program printed:\n" + _block(actual)
    else:
        outcome = FAILURE_TEXT.get(status, f"It failed ({status}).")
    user = (
        f"{task.question}\n\nHere is a program written for this problem:\n```python\n{code}\n```\n"
        f"It fails this unit test.\nInput:\n{_block(test['input'])}\nExpected output:\n{_block(test['output'])}\n"
        f"{outcome}\n\nFind the mistake and write the corrected program. {EVAL_SPECIAL_REQUIREMENTS} "
        "Put the complete program in one ```python block."
    )
    return _render_with_system(templates.coder_system, user, tokenizer, layout)


def test_refine_prompt(task: Task, test: dict[str, str], majority_output: str | None, templates: PromptTemplates,
                       tokenizer: Any, layout: Layout | None = "reference") -> Any:
    """The tester's refinement prompt: its usual prompt plus the doubtful test and what most programs print, in
    ``layout`` (as :func:`cure.prompts.test_prompt`)."""
    intro = _compiled(templates.tester_user).render(problem=task.question, example_intro=" ")
    seen = ("Most programs written for this problem print instead:\n" + _block(majority_output)) if majority_output \
        is not None else "Most programs written for this problem disagree with it."
    user = (
        f"{intro}\n\nA previous test for this problem was:\n**Test Input:**\n{_block(test['input'])}\n"
        f"**Test Output:**\n{_block(test['output'])}\n{seen}\nCheck the expected output step by step. Then write a "
        "correct test in the format above."
    )
    return _render_with_system(templates.tester_system, user, tokenizer, layout)


test_refine_prompt.__test__ = False  # not a pytest test despite the name


def _render_with_system(system_template: str, user: str, tokenizer: Any, layout: Layout | None) -> Any:
    return _render(_compiled(system_template).render(), user, tokenizer, layout)


def probe(rollouts: list[dict[str, Any]], cfg: CureConfig) -> list[tuple[list[list[str]], list[list[str | None]]]]:
    """Per task: (status, output) tables, programs x generated tests, with what each program printed; programs
    run in the namespace their rollout record asks for (``typing_names``), as at scoring."""
    out: list[tuple[list[list[str]], list[list[str | None]]]] = []
    jobs: list[Any] = []
    for t, r in enumerate(rollouts):
        tests = r["tests"]
        status = [["no_test" if x is None else "no_code" for x in tests] for _ in r["codes"]]
        outputs: list[list[str | None]] = [[None] * len(tests) for _ in r["codes"]]
        out.append((status, outputs))
        live = [j for j, x in enumerate(tests) if x is not None]
        for i, code in enumerate(r["codes"]):
            if code is not None and live:
                jobs.append(Job(code, [(tests[j]["input"], tests[j]["output"]) for j in live],
                                float(r.get("time_limit_s", 1.0)), key=(t, i, live), want_output=True,
                                typing_names=bool(r.get("typing_names"))))
    if not jobs:
        return out
    backend = execution_backend(cfg)
    if not backend.prints_output:  # statuses only
        gen_only = [dict(r, gt_tests=[]) for r in rollouts]
        for t, ex in enumerate(backend.execute(gen_only)):
            out[t] = (ex["status"], out[t][1])
        return out
    with backend.pool() as pool:
        pool.run(jobs)
    for job in jobs:
        t, i, live = job.key
        for k, j in enumerate(live):
            out[t][0][i][j] = job.status[k]
            out[t][1][i][j] = job.outputs[k] if k < len(job.outputs) else None
    return out


def _sample_one(engine: Any, prompts: list[Any], cfg: CureConfig) -> list[str]:
    if not prompts:
        return []
    params = SamplingParams.from_config(cfg.rollout, 1)
    return [c[0].text for c in engine.generate(prompts, params)]


def refine_round(
    tasks: list[Task], rollouts: list[dict[str, Any]], coder: Any, tester: Any, cfg: CureConfig,
    templates: PromptTemplates, tokenizer: Any = None,
) -> tuple[list[dict[str, Any]], dict[str, int], list[dict[str, Any]]]:
    """One round of test then code refinement; returns (new rollouts, counts, the prompts sent, for the record).

    Prompts are laid out as the rollout stage lays them out (``rollout.prompt_layout``; chat engines get messages,
    a chat template is the engine's own or ``tokenizer``'s, the policy's); the record holds them as ``tokenizer``
    renders them."""
    def as_render(prompt: Any) -> Any:
        return lambda tok, layout: prompt(tok, layout or cfg.rollout.prompt_layout)

    tables = probe(rollouts, cfg)
    by_id = {t.task_id: t for t in tasks}
    new = [dict(r, codes=list(r["codes"]), tests=list(r["tests"])) for r in rollouts]
    test_jobs: list[tuple[int, int, Any]] = []
    code_jobs: list[tuple[int, int, Any]] = []
    log_rows: list[dict[str, Any]] = []
    for t, (r, (status, outputs)) in enumerate(zip(rollouts, tables)):
        task = by_id[r["task_id"]]
        ran = [i for i, c in enumerate(r["codes"]) if c is not None]
        if not ran:
            continue
        passed = np.array([[s == "pass" for s in status[i]] for i in ran], dtype=bool).reshape(len(ran), -1)
        share = passed.mean(axis=0) if passed.size else np.zeros(len(r["tests"]))
        for j, test in enumerate(r["tests"]):
            if test is None or share[j] >= 0.5:
                continue
            printed = [outputs[i][j] for i in ran if outputs[i][j] is not None]
            majority = Counter(printed).most_common(1)[0][0] if printed else None
            prompt = as_render(partial(test_refine_prompt, task, test, majority, templates))
            test_jobs.append((t, j, prompt))
            log_rows.append({"task_id": task.task_id, "role": "tester", "test": j, "prompt": prompt(tokenizer, None)})
        for row, i in enumerate(ran):
            failing = [j for j, test in enumerate(r["tests"]) if test is not None and not passed[row, j]]
            if not failing:
                continue
            j = max(failing, key=lambda j: (share[j], -j))  # the most trusted test it fails
            prompt = as_render(partial(code_refine_prompt, task, r["codes"][i], r["tests"][j], status[i][j],
                                       outputs[i][j], templates))
            code_jobs.append((t, i, prompt))
            log_rows.append({"task_id": task.task_id, "role": "coder", "program": i, "test": j,
                             "prompt": prompt(tokenizer, None)})
    counts = {"tests_regenerated": 0, "programs_refined": 0}
    for (t, j, _), text in zip(test_jobs, _sample_one(tester, [_render_for(tester, p, tokenizer) for _, _, p in test_jobs], cfg)):
        test, _ = extract_test(text, cfg.rollout.extraction)
        if test is not None:
            new[t]["tests"][j] = test
            counts["tests_regenerated"] += 1
    for (t, i, _), text in zip(code_jobs, _sample_one(coder, [_render_for(coder, p, tokenizer) for _, _, p in code_jobs], cfg)):
        code, _ = extract_code(text, cfg.rollout.extraction)
        if code is not None:
            new[t]["codes"][i] = code
            counts["programs_refined"] += 1
    counts["test_prompts"], counts["code_prompts"] = len(test_jobs), len(code_jobs)
    return new, counts, log_rows


def refine(
    tasks: list[Task], rollouts: list[dict[str, Any]], executions: list[dict[str, Any]], coder: Any, tester: Any,
    cfg: CureConfig, rounds: int, tokenizer: Any = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``rounds`` refinement rounds; returns (one row per round, 0 = one-shot; final rollouts; prompts sent).
    ``tokenizer`` is the policy's, as for :func:`cure.rollout.stage.rollout_tasks`."""
    templates = PromptTemplates.load(cfg.rollout.prompt_dir)

    def row(r: int, rolls: list[dict[str, Any]], execs: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
        m = summarize(eval_tables(rolls, execs, cfg), cfg.eval.scales, skip_untested=drop_untested(cfg))
        keep = {k: v for k, v in m.items() if k in ("code_acc", "unit_test_acc", "p01") or
                (k.startswith("bon_") and not k.endswith("_accumulate"))}
        return {"round": r, **keep, **counts}

    rows = [row(0, rollouts, executions, {"tests_regenerated": 0, "programs_refined": 0})]
    prompts: list[dict[str, Any]] = []
    current = rollouts
    for r in range(1, rounds + 1):
        current, counts, sent = refine_round(tasks, current, coder, tester, cfg, templates, tokenizer)
        for s in sent:
            s["round"] = r
        prompts += sent
        execs = run_programs(current, cfg)
        rows.append(row(r, current, execs, counts))
        log.info("refinement round %d: code_acc %.3f unit_test_acc %.3f (%d programs, %d tests refined)", r,
                 rows[-1]["code_acc"], rows[-1]["unit_test_acc"], counts["programs_refined"], counts["tests_regenerated"])
    return rows, current, prompts


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """The refinement table: one row per round."""
    bons = [k for k in rows[0] if k.startswith("bon_")]
    head = "| round | code acc. | " + " | ".join(f"BoN {k[4:]}" for k in bons) + \
        " | unit-test acc. | programs refined | tests regenerated |"
    lines = [head, "|" + "---|" * (5 + len(bons))]
    for r in rows:
        label = "0 (one-shot)" if r["round"] == 0 else str(r["round"])
        lines.append(f"| {label} | {r['code_acc']:.3f} | " + " | ".join(f"{r[k]:.3f}" for k in bons) +
                     f" | {r['unit_test_acc']:.3f} | {r['programs_refined']} | {r['tests_regenerated']} |")
    return "\n".join(lines) + "\n"


def flatten(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Rows as flat metrics (``refine{r}_{metric}``), so evaluation histories keep numbers only."""
    return {f"refine{r['round']}_{k}": float(v) for r in rows for k, v in r.items() if k != "round"}


def rows_from_metrics(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Inverse of :func:`flatten`."""
    rows: dict[int, dict[str, Any]] = {}
    for key, v in metrics.items():
        if key.startswith("refine") and "_" in key and key[6:].split("_", 1)[0].isdigit():
            r, name = key[6:].split("_", 1)
            rows.setdefault(int(r), {"round": int(r)})[name] = int(v) if name.endswith(("refined", "regenerated", "prompts")) else v
    return [rows[r] for r in sorted(rows)]


def write_tables(entry: dict[str, Any], path: Any) -> None:
    """``refine.md``: the refinement table of every benchmark of an evaluation entry."""
    from pathlib import Path

    parts = []
    for name, m in entry["benchmarks"].items():
        rows = rows_from_metrics(m)
        if rows:
            parts.append(f"### Refinement on `{name}` (seed {entry['seeds'][0]})\n\n" + to_markdown(rows))
    Path(path).write_text("\n".join(parts))
