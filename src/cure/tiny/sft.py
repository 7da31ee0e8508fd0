"""The warm start's supervised data: coder prompt -> reference (or typical wrong) program, tester prompt -> test.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import logging
import random
from typing import Any

from cure import synthetic
from cure.prompts import PromptTemplates, code_prompt, test_prompt
from cure.tasks import Task

log = logging.getLogger(__name__)


def sft_pairs(
    tasks: list[Task],
    tokenizer: Any,
    templates: PromptTemplates,
    rng: random.Random,
    p_example: float,
    tests_per_task: int = 1,
    code_share: float = 1.0,
    wrong_code_share: float = 0.0,
    wrong_test_share: float = 0.0,
) -> list[tuple[str, str]]:
    """(prompt, response) pairs from reference programs/tests: a coder example for the first ``code_share`` of
    the tasks (tasks cycle through the families, so every family gets its share) and ``tests_per_task`` tester
    examples for every task (each draws its own test and whether the prompt shows the public example).

    ``wrong_code_share`` of the coder examples show one of the task's typical wrong programs instead, and
    ``wrong_test_share`` of the tester examples a wrong program's output (:func:`cure.synthetic.wrong_test`)."""
    pairs = []
    n_code = round(code_share * len(tasks))
    for i, task in enumerate(tasks):
        if i < n_code:
            program = synthetic.reference_solution(task)
            if wrong_code_share and rng.random() < wrong_code_share:
                program = rng.choice(synthetic.wrong_solutions(task))
            pairs.append((code_prompt(task.question, tokenizer, templates), f"```python\n{program}\n```"))
        for _ in range(tests_per_task):
            if wrong_test_share and rng.random() < wrong_test_share:
                test = synthetic.wrong_test(task, rng)
            else:
                test = synthetic.reference_test(task, rng)
            show = rng.random() < p_example
            prompt = test_prompt(
                task.question,
                task.example_input if show else None,
                task.example_output if show else None,
                tokenizer,
                templates,
            )
            pairs.append((prompt, format_test(test["input"], test["output"])))
    return pairs


def format_test(test_input: str, test_output: str) -> str:
    """A tester response in the layout :func:`cure.prompts.extract_test` reads."""
    return f"**Test Input:**\n```\n{test_input}```\n\n**Test Output:**\n```\n{test_output}```"


def _encode_pairs(pairs: list[tuple[str, str]], tokenizer: Any) -> list[tuple[list[int], int]]:
    """Token ids of prompt + response + <|im_end|>, and where the response starts (loss only after it)."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if not pairs:
        return []
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]  # one batched call each
    responses = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
    return [(p + r + [end], len(p)) for p, r in zip(prompts, responses)]
