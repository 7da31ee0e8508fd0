"""Pairing: the trained tester picks among another coder's programs (Best-of-N for any coder, API models included).

``cure evaluate --model TESTER --coder-model CODER [--coder-engine hf|vllm|openai]``. Per task:

* the coder samples ``eval.k_code`` programs (it may be an OpenAI-compatible API model: ``--coder-engine openai``,
  key from ``rollout.api_key_env``);
* the evaluated model (the tester) samples ``eval.k_test`` unit tests;
* as the baseline, the coder also samples ``eval.k_test`` unit tests of its own (its self-generated BoN);
* every program runs on the ground-truth tests, the tester's tests and the coder's tests, once, in the sandbox
  (table columns: ground truth | tester | coder).

Sampling and scoring follow the evaluation's rules (:mod:`cure.eval_rules`): prompts in ``rollout.prompt_layout``,
the evaluation's coder wording and per-task time limits, ``eval.exec_namespace``, and with
``eval.unextracted_tests=drop`` each test source's unextracted tests left out (a task left with none from a source
is skipped by that source's metrics).

Reported per (programs, tests) scale of ``eval.scales``: the coder's one-shot accuracy, BoN with the paired tester,
BoN with the coder's own tests, and the difference; also each test set's unit-test accuracy, and tokens spent per
role (all counted with the tester's tokenizer, as the rollout stage counts response lengths; prompt tokens once
per prompt, as APIs bill ``n`` choices of one request). The coder's API bill for BoN is its programs plus, in the baseline, its tests;
with the paired tester only the programs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cure.agentic import run_framework
from cure.backends import run_programs
from cure.config import CureConfig
from cure.eval_rules import drop_untested, eval_config, eval_tables
from cure.metrics import summarize
from cure.prompts import PromptTemplates, extract_test
from cure.quick_exit import on_success
from cure.rollout.engine import SamplingParams
from cure.rollout.registry import make_engine
from cure.rollout.stage import _render_for, policy_tokenizer, rollout_tasks, test_render
from cure.tasks import Task, load_tasks, write_jsonl

log = logging.getLogger(__name__)


def sample_tests(
    tasks: list[Task], engine: Any, cfg: CureConfig, templates: Any, give_example: bool, tokenizer: Any
) -> tuple[list[list[dict[str, str] | None]], list[list[str]], list[list[int]]]:
    """``cfg.rollout.k_test`` unit tests per task from ``engine``: (extracted tests, responses, token counts with
    ``tokenizer``, as the rollout stage counts). The prompt is the rollout stage's tester prompt, in
    ``rollout.prompt_layout`` (a chat template is the engine's own, else ``tokenizer``'s)."""
    rc = cfg.rollout
    prompts = [_render_for(engine, test_render(t, give_example, templates, rc), tokenizer) for t in tasks]
    out = engine.generate(prompts, SamplingParams.from_config(rc, rc.k_test))
    tests = [[extract_test(c.text, rc.extraction)[0] for c in comps] for comps in out]
    lengths = [[len(tokenizer.encode(c.text, add_special_tokens=False)) for c in comps] for comps in out]
    return tests, [[c.text for c in comps] for comps in out], lengths


def _prompt_tokens(tokenizer: Any, prompts: list[str]) -> int:
    return int(sum(len(tokenizer.encode(p, add_special_tokens=False)) for p in prompts))


def pair_tasks(
    tasks: list[Task], coder: Any, tester: Any, cfg: CureConfig, tokenizer: Any, seed: int = 0, tester_model: str = ""
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Sample, execute and score one pairing; returns (report, rollouts, executions). Both roles use the tester
    model folder's prompt templates when it ships them (``tester_model``), else the built-in ones."""
    c = eval_config(cfg, seed, tester_model)
    templates = PromptTemplates.load(c.rollout.prompt_dir)
    give = not cfg.eval.no_example
    rollouts = rollout_tasks(tasks, coder, tester, c, tokenizer, templates, give_example=give, evaluation=True)
    own_tests, own_resp, own_len = sample_tests(tasks, coder, c, templates, give, tokenizer)
    k = c.rollout.k_test
    for rec, tests, resp, lens in zip(rollouts, own_tests, own_resp, own_len):
        rec["paired_tests"] = len(rec["tests"])
        rec["tests"] = rec["tests"] + tests
        rec["coder_test_responses"] = resp
        rec["coder_test_lengths"] = lens
    executions = run_programs(rollouts, c)
    paired, own = [], []
    drop = cfg.eval.unextracted_tests == "drop"
    for rec, (gt, gen) in zip(rollouts, eval_tables(rollouts, executions, cfg)):
        kt = rec["paired_tests"]
        if drop:  # eval_tables left out the unextracted tests: the tester's are the first kept columns
            kt = sum(x is not None for x in rec["tests"][:kt])
        paired.append((gt, gen[:, :kt]))
        own.append((gt, gen[:, kt:]))
    skip = drop_untested(cfg)
    m_paired = summarize(paired, cfg.eval.scales, skip_untested=skip)
    m_own = summarize(own, cfg.eval.scales, skip_untested=skip)
    scales = []
    for n, m in cfg.eval.scales:
        key = f"bon_{n}x{m}"
        scales.append({"programs": n, "tests": m, "bon_paired": m_paired[key], "bon_own": m_own[key],
                       "gain": m_paired[key] - m_own[key]})
    tokens = {
        "coder_programs": int(sum(sum(r["code_lengths"]) for r in rollouts)),
        "tester_tests": int(sum(sum(r["test_lengths"]) for r in rollouts)),
        "coder_tests": int(sum(sum(r["coder_test_lengths"]) for r in rollouts)),
        "coder_prompts": _prompt_tokens(tokenizer, [r["code_prompt"] for r in rollouts]),
        "test_prompts": _prompt_tokens(tokenizer, [r["test_prompt"] for r in rollouts]),
    }
    agentic: dict[str, float] = {}
    if cfg.eval.framework != "none":  # the framework with this coder and this tester (cure.agentic)

        agentic, records = run_framework(cfg.eval.framework, tasks, coder, tester, c, tokenizer,
                                         [r["time_limit_s"] for r in rollouts])
        for rec, found in zip(rollouts, records):
            rec["agentic"] = found
    report = {
        "agentic": agentic,
        "seed": seed,
        "num_tasks": m_paired["num_tasks"],
        "k_code": c.rollout.k_code,
        "k_test": k,
        "code_acc": m_paired["code_acc"],
        "scales": scales,
        "tester_unit_test_acc": m_paired["unit_test_acc"],
        "coder_unit_test_acc": m_own["unit_test_acc"],
        "tester_p01": m_paired["p01"],
        "coder_p01": m_own["p01"],
        "tokens": tokens,
        "coder_api_tokens": {  # what the coder generates for BoN, by test source
            "paired": tokens["coder_programs"],
            "own": tokens["coder_programs"] + tokens["coder_tests"],
        },
    }
    return report, rollouts, executions


def to_markdown(name: str, report: dict[str, Any], coder: str, tester: str) -> str:
    """The pairing table of one benchmark."""
    lines = [
        f"### Pairing on `{name}`: coder `{coder}`, tester `{tester}`",
        "",
        f"{int(report['num_tasks'])} tasks, {report['k_code']} programs and {report['k_test']} tests per task and "
        f"source, seed {report['seed']}. Coder one-shot accuracy: **{report['code_acc']:.3f}**.",
        "",
        "| programs x tests | BoN, paired tester | BoN, coder's own tests | gain |",
        "|---|---|---|---|",
    ]
    for s in report["scales"]:
        lines.append(f"| {s['programs']} x {s['tests']} | {s['bon_paired']:.3f} | {s['bon_own']:.3f} | {s['gain']:+.3f} |")
    t = report["tokens"]
    lines += [
        "",
        f"Unit-test accuracy: tester {report['tester_unit_test_acc']:.3f}, coder {report['coder_unit_test_acc']:.3f}.",
        "",
        "| tokens generated | coder (programs) | coder (own tests) | tester (tests) |",
        "|---|---|---|---|",
        f"| completion | {t['coder_programs']} | {t['coder_tests']} | {t['tester_tests']} |",
        "",
        f"Coder tokens for BoN: {report['coder_api_tokens']['paired']} with the paired tester, "
        f"{report['coder_api_tokens']['own']} with its own tests (prompt tokens: {t['coder_prompts']} coder, "
        f"{t['test_prompts']} test prompt per source).",
    ]
    if report.get("agentic"):
        lines += ["", "| agentic framework metric | value |", "|---|---|"] + \
            [f"| {k} | {v:.3f} |" for k, v in report["agentic"].items()]
    return "\n".join(lines) + "\n"


def seed_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scale, over the seeds' reports: mean and spread (max - min) of both BoN variants and of the gain, so a
    gain can be read against the evaluation noise."""
    out = []
    for k, s in enumerate(runs[0]["scales"]):
        row: dict[str, Any] = {"programs": s["programs"], "tests": s["tests"], "seeds": len(runs)}
        for key in ("bon_paired", "bon_own", "gain"):
            xs = [r["scales"][k][key] for r in runs]
            row[key] = {"mean": sum(xs) / len(xs), "spread": max(xs) - min(xs)}
        out.append(row)
    return out


def make_coder(cfg: CureConfig, coder_model: str, coder_engine: str | None) -> Any:
    """The coder's engine; ``openai`` takes the base URL and key variable from the rollout section."""
    return make_engine(coder_engine or cfg.rollout.engine, coder_model, cfg.rollout)


def evaluate_pairing(
    tester_model: str,
    coder_model: str,
    benchmarks: dict[str, list[Task]],
    cfg: CureConfig,
    seeds: list[int],
    out_dir: str | Path,
    coder_engine: str | None = None,
) -> dict[str, Any]:
    """Evaluate the pairing on every benchmark and seed; writes ``pairing.json``, ``pairing.md`` and the artifacts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    c0 = eval_config(cfg, seeds[0], tester_model)
    tester = make_engine(c0.rollout.engine, tester_model, c0.rollout)
    coder = make_coder(c0, coder_model, coder_engine)
    tokenizer = policy_tokenizer(tester, tester_model)
    result: dict[str, Any] = {"tester_model": tester_model, "coder_model": coder_model,
                              "coder_engine": coder_engine or cfg.rollout.engine, "benchmarks": {}}
    md = []
    try:
        for name, tasks in benchmarks.items():
            runs = []
            for seed in seeds:
                report, rollouts, executions = pair_tasks(tasks, coder, tester, cfg, tokenizer, seed, tester_model)
                runs.append(report)
                if seed == seeds[0]:
                    write_jsonl(out / f"{name}.pairing.rollouts.jsonl", rollouts)
                    write_jsonl(out / f"{name}.pairing.executions.jsonl", executions)
                    md.append(to_markdown(name, report, coder_model, tester_model))
                log.info("%s seed %d: code_acc %.3f, %s", name, seed, report["code_acc"],
                         ", ".join(f"bon {s['programs']}x{s['tests']} paired {s['bon_paired']:.3f} own {s['bon_own']:.3f}"
                                   for s in report["scales"]))
            result["benchmarks"][name] = runs
            result.setdefault("over_seeds", {})[name] = seed_summary(runs)
            if len(runs) > 1:
                md.append("Over seeds " + ", ".join(map(str, seeds)) + ": " + "; ".join(
                    f"{r['programs']} x {r['tests']} gain {r['gain']['mean']:+.3f} (spread {r['gain']['spread']:.3f}, "
                    f"BoN spreads {r['bon_paired']['spread']:.3f} / {r['bon_own']['spread']:.3f})"
                    for r in result["over_seeds"][name]) + "\n")
    finally:
        coder.close()
        tester.close()
    (out / "pairing.json").write_text(json.dumps(result, indent=2))
    (out / "pairing.md").write_text("\n".join(md))
    return result


@on_success
def pairing_step(
    tester_dir: str, benchmark_paths: dict[str, str], cfg: CureConfig, seeds: list[int], coder_model: str,
    coder_engine: str, out_dir: str,
) -> dict[str, float]:
    """The pipeline's pairing step: evaluate, write the report into ``out_dir``, return the primary benchmark's
    numbers (first seed) for the Metrics artifact."""
    benchmarks = {name: load_tasks(p)[0] for name, p in benchmark_paths.items()}
    result = evaluate_pairing(tester_dir, coder_model, benchmarks, cfg, seeds, out_dir, coder_engine or None)
    first = result["benchmarks"][next(iter(benchmarks))][0]
    out = {"code_acc": first["code_acc"], "tester_unit_test_acc": first["tester_unit_test_acc"],
           "coder_unit_test_acc": first["coder_unit_test_acc"]}
    for s in first["scales"]:
        out[f"bon_{s['programs']}x{s['tests']}_paired"] = s["bon_paired"]
        out[f"bon_{s['programs']}x{s['tests']}_own"] = s["bon_own"]
    out.update({f"tokens_{k}": float(v) for k, v in first["tokens"].items()})
    out.update(first["agentic"])
    return out
