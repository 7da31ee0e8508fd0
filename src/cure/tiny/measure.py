"""Measuring the tiny model's starting point: sampled programs and tests judged on held-out synthetic tasks.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

from cure import synthetic
from cure.config import ExecuteConfig
from cure.execute import execute_rollouts
from cure.prompts import PromptTemplates, code_prompt, extract_code, extract_test, test_prompt
from cure.tasks import Task
from cure.tiny.spec import TinySpec

log = logging.getLogger(__name__)


def sample(model: Any, tokenizer: Any, prompts: list[str], n: int, max_new_tokens: int = 128, seed: int = 0, batch: int = 64) -> list[list[str]]:
    """``n`` responses per prompt at temperature 1.0, top-p 1.0 (batched, left padding), stopping at eos."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    flat = [p for p in prompts for _ in range(n)]
    texts: list[str] = []
    for i in range(0, len(flat), batch):
        enc = tokenizer(flat[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
        texts += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def same_program(code: str, reference: str) -> bool:
    """True when ``code`` parses to the same AST as the reference: a sound, execution-free check of correctness
    (it can only under-count: a correct program written differently counts as wrong)."""
    try:
        return ast.dump(ast.parse(code)) == ast.dump(ast.parse(reference))
    except (SyntaxError, ValueError):
        return False


def judge_test(task: Task, test: dict[str, str] | None) -> tuple[bool, bool]:
    """(correct, discriminative) for a generated test: correct when the reference's output matches;
    discriminative when it is correct and at least one typical wrong program prints something else."""
    if test is None:
        return False, False
    expected = synthetic.expected_output(task, test["input"])
    if expected is None or not synthetic.outputs_match(test["output"], expected):
        return False, False
    fam, params = synthetic._task_params(task)
    for m in fam.mutants(params):
        try:
            wrong = fam.solve(m, test["input"])
        except (ValueError, TypeError, IndexError, OverflowError):
            return True, True
        if not synthetic.outputs_match(wrong, expected):
            return True, True
    return True, False


def measure(
    model_dir: str | Path, n_tasks: int = 64, k: int = 4, seed: int = 1, with_example: bool = False, sandbox: bool = True
) -> dict[str, Any]:
    """Starting competence of a built model on held-out synthetic tasks (see :func:`measure_model`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    torch.set_num_threads(TinySpec.threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    model.eval()
    templates = PromptTemplates.load(model_dir / "prompts")
    tasks = synthetic.generate_tasks(n_tasks, seed, "heldout")
    return measure_model(model, tok, templates, tasks, k, seed, with_example, sandbox=sandbox)


def measure_model(
    model: Any,
    tok: Any,
    templates: PromptTemplates,
    tasks: list[Task],
    k: int,
    seed: int,
    with_example: bool = False,
    batch: int = 64,
    sandbox: bool = False,
) -> dict[str, Any]:
    """Sample ``k`` programs and ``k`` tests per task (temperature 1.0) and score them without running model code.

    Code accuracy: share of sampled programs whose AST equals the reference's (a lower bound of the executed
    accuracy); with ``sandbox``, also the share passing every ground-truth test when run by the execute stage
    in gVisor (``code_acc_executed``). Unit-test accuracy: share of sampled tests whose output matches the reference's output on their
    input (tests are data; the reference semantics run in-process), and the share of those that are
    discriminative. Also the share of well-formed responses, and the sampled texts.
    """
    code_prompts = [code_prompt(t.question, tok, templates) for t in tasks]
    tprompts = [
        test_prompt(t.question, t.example_input if with_example else None, t.example_output if with_example else None, tok, templates)
        for t in tasks
    ]
    codes = sample(model, tok, code_prompts, k, seed=seed, batch=batch)
    tests = sample(model, tok, tprompts, k, seed=seed + 1, batch=batch)
    per_family: dict[str, list[float]] = {}
    n_code_ok = n_code_form = n_test_ok = n_test_disc = n_test_form = 0
    for task, cs, ts in zip(tasks, codes, tests):
        ref = synthetic.reference_solution(task)
        ok = 0
        for c in cs:
            code, _ = extract_code(c)
            n_code_form += code is not None
            ok += code is not None and same_program(code, ref)
        n_code_ok += ok
        per_family.setdefault(task.source, []).append(ok / k)
        for t in ts:
            test, _ = extract_test(t)
            n_test_form += test is not None
            correct, disc = judge_test(task, test)
            n_test_ok += correct
            n_test_disc += disc
    total = len(tasks) * k
    executed = _executed_code_acc(tasks, codes) if sandbox else None
    return {
        "tasks": len(tasks),
        "k": k,
        "code_acc": n_code_ok / total,
        "code_acc_executed": executed,
        "code_well_formed": n_code_form / total,
        "unit_test_acc": n_test_ok / total,
        "discriminative_share": n_test_disc / max(1, n_test_ok),
        "test_well_formed": n_test_form / total,
        "per_family_code_acc": {f: round(sum(v) / len(v), 3) for f, v in sorted(per_family.items())},
        "responses": {"code": codes, "test": tests},
    }


def _executed_code_acc(tasks: list[Task], responses: list[list[str]]) -> float:
    """Share of sampled programs passing all ground-truth tests, run only through the gVisor sandbox."""
    rollouts = [
        {
            "task_id": t.task_id,
            "codes": [extract_code(r)[0] for r in rs],
            "gt_tests": [{"input": i, "output": o} for i, o in zip(t.test_input, t.test_output)],
            "tests": [],
            "time_limit_s": t.test_time_limit,
        }
        for t, rs in zip(tasks, responses)
    ]
    tables = execute_rollouts(rollouts, ExecuteConfig(isolation="gvisor"), progress=False)
    rows = [all(row) for table in tables for row in table["passed"]]
    return sum(rows) / max(1, len(rows))
