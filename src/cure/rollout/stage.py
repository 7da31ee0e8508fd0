"""The rollout stage: per task, ``k_code`` programs and ``k_test`` unit tests -> rollouts.jsonl.

This is CURE's ``sample.py`` as a library function plus the ``cure rollout`` command. Per task:

- the coder prompt asks for a program; ``k_code`` responses are sampled, and the last fenced ```` ```python ````
  block of each is extracted (``None`` when there is none; ``rollout.extraction`` says whether a ``<think>``
  block's drafts count, :mod:`cure.reasoning`);
- the tester prompt asks for one unit test; with probability ``p_give_example`` (a Bernoulli draw per task, as
  the reference, seeded by the seed and task id; 0 when ``reward.post_stage``, as the reference) it shows the first
  ``max_input_examples`` public examples, otherwise none;
  ``k_test`` responses are sampled and their ``**Test Input:**``/``**Test Output:**`` blocks extracted;
- the first ``data.max_gt_tests`` ground-truth tests are attached for the execute stage.

Every response is recorded with its token length, counted with the *policy's* tokenizer (the one passed in,
as the reference counts ``len(tokenizer.encode(text, add_special_tokens=False))``), and whether it was cut by
the token limit (``code_truncated``/``test_truncated``: the reward stage appends the end-of-sequence token only
to responses that were not truncated, as the reference does).

Prompts are laid out as ``rollout.prompt_layout`` says (:mod:`cure.prompts`): by default the reference's literal
strings, the same for every engine and tokenizer. The record's ``code_prompt``/``test_prompt`` are the text the
engine received; an engine that takes chat messages (a chat API with ``rollout.api_request=full``) gets (system,
user) messages, and its record holds the prompt as the policy's tokenizer renders it in the configured layout (what
training sees). A chat API with the reference's request (the default) takes the text like any engine.

``evaluation=True`` gives the reference evaluation's variant: the coder prompt with its extra sentence, each
task's own time limit, and (``eval.exec_namespace``) ``List``/``Tuple``/``Optional`` predefined for the programs.
Training executions use a fixed 1 s limit by default (``data.time_limit``), as the reference's ``execute.py``.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cure.config import CureConfig, RolloutConfig
from cure.prompts import PromptTemplates, code_prompt, extract_code, extract_test, test_prompt
from cure.rollout.engine import Engine, SamplingParams
from cure.tasks import Task

log = logging.getLogger(__name__)


class _MessageRecorder:
    """Stands in for a tokenizer so that :mod:`cure.prompts` returns the chat messages instead of a string."""

    chat_template = "messages"

    @staticmethod
    def apply_chat_template(messages: list[dict[str, str]], **_: Any) -> list[dict[str, str]]:
        return messages


def _render_for(engine: Engine, render: Any, policy_tokenizer: Any) -> Any:
    """The prompt in the form ``engine`` takes: chat messages for chat APIs, else text in the configured layout
    (a chat template is the engine's own, or the policy's when the engine holds no tokenizer)."""
    if engine.chat:
        return render(_MessageRecorder(), "chat_template")
    return render(engine.tokenizer or policy_tokenizer, None)


def _examples(task: Task, give: bool, max_examples: int) -> tuple[list[str], list[str]]:
    if not give:
        return [], []
    k = min(max_examples, len(task.example_input))
    return task.example_input[:k], task.example_output[:k]


def _draw_example(seed: int, task_id: str, p: float) -> bool:
    """The reference's Bernoulli(p_give_example) per task, seeded by (seed, task id) so that sharding the tasks
    across pods does not change any task's draw."""
    return random.Random(f"{seed}/{task_id}").random() < p


def test_render(task: Task, give: bool, templates: PromptTemplates, rc: RolloutConfig) -> Any:
    """The tester prompt of ``task`` as a render function of (tokenizer, layout), for :func:`_render_for`: the
    first ``rc.max_input_examples`` public examples when ``give``, in ``rc.prompt_layout`` unless told otherwise."""
    ex_in, ex_out = _examples(task, give, rc.max_input_examples)
    return lambda tok, layout: test_prompt(task.question, ex_in, ex_out, tok, templates, layout or rc.prompt_layout)


test_render.__test__ = False  # not a pytest test despite the name


def _time_limit(task: Task, cfg: CureConfig, per_task: bool) -> float:
    if per_task and "test_time_limit" in task.model_fields_set:
        return float(task.test_time_limit)
    return cfg.data.default_time_limit_s


def rollout_tasks(
    tasks: list[Task],
    coder: Engine,
    tester: Engine,
    cfg: CureConfig,
    tokenizer: Any,
    templates: PromptTemplates | None = None,
    give_example: bool | None = None,
    evaluation: bool = False,
) -> list[dict[str, Any]]:
    """Sample and extract programs and unit tests for ``tasks``; one rollout record per task (ARCHITECTURE.md).

    ``tokenizer`` is the policy's: it counts response lengths and renders the recorded prompts of chat engines.
    ``give_example`` forces the tester prompt's public examples on or off; None draws them per task with
    probability ``cfg.rollout.p_give_example`` (seeded by ``cfg.rollout.seed`` and the task id; 0 when
    ``cfg.reward.post_stage``). ``evaluation`` selects the reference evaluation's variant (module docstring).
    """
    rc = cfg.rollout
    templates = templates or PromptTemplates.load(rc.prompt_dir)
    p_example = 0.0 if cfg.reward.post_stage else rc.p_give_example
    gives = [give_example if give_example is not None else _draw_example(rc.seed, t.task_id, p_example) for t in tasks]
    wording = "evaluation" if evaluation else "training"
    per_task_limit = evaluation or cfg.data.time_limit == "per_task"

    def code_render(task: Task):
        return lambda tok, layout: code_prompt(task.question, tok, templates, layout or rc.prompt_layout, wording)

    code_renders = [code_render(t) for t in tasks]
    test_renders = [test_render(t, g, templates, rc) for t, g in zip(tasks, gives)]
    code_prompts = [_render_for(coder, r, tokenizer) for r in code_renders]
    test_prompts = [_render_for(tester, r, tokenizer) for r in test_renders]

    def recorded(engine: Engine, sent: list[Any], renders: list[Any]) -> list[str]:
        return [r(tokenizer, None) for r in renders] if engine.chat else sent

    t0 = time.monotonic()
    code_out = coder.generate(code_prompts, SamplingParams.from_config(rc, rc.k_code))
    if rc.k_test > 0:
        test_out = tester.generate(test_prompts, SamplingParams.from_config(rc, rc.k_test))
    else:
        test_out = [[] for _ in tasks]
    log.info("rollout: %d tasks x (%d programs + %d tests) sampled in %.1f s",
             len(tasks), rc.k_code, rc.k_test, time.monotonic() - t0)

    records = []
    typing_names = evaluation and cfg.eval.exec_namespace == "reference"
    rows = zip(tasks, gives, recorded(coder, code_prompts, code_renders), recorded(tester, test_prompts, test_renders),
               code_out, test_out)
    for task, give, cprompt, tprompt, codes, tests in rows:
        code_resp = [c.text for c in codes]
        test_resp = [c.text for c in tests]
        code_ex = [extract_code(r, rc.extraction) for r in code_resp]
        test_ex = [extract_test(r, rc.extraction) for r in test_resp]
        code_reasons = Counter(why for _, why in code_ex if why)
        test_reasons = Counter(why for _, why in test_ex if why)
        k = min(cfg.data.max_gt_tests, len(task.test_input))
        records.append({
            "task_id": task.task_id,
            "code_prompt": cprompt,
            "test_prompt": tprompt,
            "code_responses": code_resp,
            "code_lengths": [len(tokenizer.encode(r, add_special_tokens=False)) for r in code_resp],
            "codes": [code for code, _ in code_ex],
            "code_truncated": [c.finish_reason == "length" for c in codes],
            "test_responses": test_resp,
            "test_lengths": [len(tokenizer.encode(r, add_special_tokens=False)) for r in test_resp],
            "tests": [test for test, _ in test_ex],
            "test_truncated": [c.finish_reason == "length" for c in tests],
            "gt_tests": [{"input": i, "output": o} for i, o in zip(task.test_input[:k], task.test_output[:k])],
            "time_limit_s": _time_limit(task, cfg, per_task_limit),
            "typing_names": typing_names,
            "give_example": give,
            "extract_failures": {"code": sum(code_reasons.values()), "test": sum(test_reasons.values())},
            "extract_failure_reasons": {"code": dict(code_reasons), "test": dict(test_reasons)},
        })
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts for the log line: responses, extraction failures, truncations, mean lengths."""
    def mean(xs: list[int]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    code_lengths = [n for r in records for n in r["code_lengths"]]
    test_lengths = [n for r in records for n in r["test_lengths"]]
    return {
        "tasks": len(records),
        "programs": len(code_lengths),
        "tests": len(test_lengths),
        "programs_extracted": sum(c is not None for r in records for c in r["codes"]),
        "tests_extracted": sum(t is not None for r in records for t in r["tests"]),
        "programs_truncated": sum(sum(r["code_truncated"]) for r in records),
        "tests_truncated": sum(sum(r["test_truncated"]) for r in records),
        "mean_code_length": round(mean(code_lengths), 1),
        "mean_test_length": round(mean(test_lengths), 1),
    }


def default_prompt_dir(*models: str) -> str | None:
    """The first model folder's ``prompts/`` templates (the tiny model ships its own), or None."""
    for m in models:
        if (Path(m) / "prompts").is_dir():
            return str(Path(m) / "prompts")
    return None


def policy_tokenizer(engine: Engine, model: str) -> Any:
    """The policy's tokenizer: the engine's own when it holds the model, else loaded from ``model``."""
    if engine.tokenizer is not None:
        return engine.tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def shard(items: list[Any], spec: str) -> list[Any]:
    """The K-th of N contiguous, near-equal slices (``spec`` = "K/N"), as the reference splits prompts."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected K/N with integers, e.g. 0/4") from None
    if not 0 <= k < n:
        raise ValueError(f"--shard {spec!r}: need 0 <= K < N")
    size, extra = divmod(len(items), n)
    start = k * size + min(k, extra)
    return items[start : start + size + (1 if k < extra else 0)]
