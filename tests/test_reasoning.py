"""Long chain-of-thought responses: extraction reads the whole response by default, as the reference, or the answer
after ``</think>`` (rollout.extraction=after_think); the long-CoT preset turns on the length-aware reward. All
responses here are handwritten."""

from __future__ import annotations

import numpy as np
import pytest

from cure.config import ConfigError, CureConfig, load_config
from cure.prompts import extract_code, extract_test
from cure.reasoning import split_reasoning
from cure.reward_stage import assemble

DRAFT_IN_THOUGHT = """<think>
First idea:
```python
print(int(input()) + 2)
```
No wait, the task says double it. Let me also try a test:
**Test Input:**
```3```
**Test Output:**
```5```
That is wrong for doubling.
</think>
Here is the final program.
```python
print(int(input()) * 2)
```
"""

TEST_AFTER_THOUGHT = """<think>
Input 3 -> maybe 5? No: doubling gives 6. Try 4 -> 8.
**Test Input:**
```3```
**Test Output:**
```5```
</think>
**Test Input:**
```4```

**Test Output:**
```8```

**Explanation:** 4 doubled is 8.
"""

UNFINISHED = """<think>
Let me write it:
```python
print(int(input()) * 2)
```
but I should double-check the edge cases, and then"""

TEMPLATE_OPENED = """The template opened the think block, so only the closing tag is in the response.
```python
print('draft')
```
</think>
```python
print(int(input()) * 2)
```"""


AFTER = "after_think"


def test_code_comes_from_the_answer_not_the_reasoning():
    assert extract_code(DRAFT_IN_THOUGHT, AFTER) == ("print(int(input()) * 2)", None)
    assert extract_code(TEMPLATE_OPENED, AFTER) == ("print(int(input()) * 2)", None)


def test_test_comes_from_the_answer_not_the_reasoning():
    test, why = extract_test(TEST_AFTER_THOUGHT, AFTER)
    assert why is None
    assert test == {"input": "4\n", "output": "8\n"}
    # The reasoning's draft test (3 -> 5) is never taken, even when the answer has no test at all.
    assert extract_test(DRAFT_IN_THOUGHT.replace("**Test", "Test"), AFTER) == (None, "no_test_input")
    no_test = TEST_AFTER_THOUGHT.split("</think>")[0] + "</think>\nI could not find a test."
    assert extract_test(no_test, AFTER) == (None, "no_test_input")


def test_an_unfinished_thought_has_no_answer():
    assert extract_code(UNFINISHED, AFTER) == (None, "unfinished_think")
    assert extract_test(UNFINISHED, AFTER) == (None, "unfinished_think")
    assert split_reasoning(UNFINISHED) == (None, "unfinished_think")


def test_reference_extraction_reads_the_whole_response_by_default():
    """The reference's extract_code / extract_test_cases know nothing of <think>: the last block anywhere wins,
    so the answer's block still beats a draft, but a draft is taken when the answer has none or the thought never
    closed."""
    assert CureConfig().rollout.extraction == "reference"
    assert extract_code(DRAFT_IN_THOUGHT) == ("print(int(input()) * 2)", None)
    assert extract_code(UNFINISHED) == ("print(int(input()) * 2)", None)
    assert extract_code(UNFINISHED) == extract_code(UNFINISHED, "reference")
    assert extract_test(TEST_AFTER_THOUGHT)[0] == {"input": "4\n", "output": "8\n"}
    no_test = TEST_AFTER_THOUGHT.split("</think>")[0] + "</think>\nI could not find a test."
    assert extract_test(no_test) == ({"input": "3\n", "output": "5\n"}, None)
    # the reference's own regular expression, restated: the last ```python block of the whole text
    import re

    for r in (DRAFT_IN_THOUGHT, UNFINISHED, TEMPLATE_OPENED):
        assert extract_code(r)[0] == re.findall(r"```python(.*?)```", r, re.DOTALL)[-1].strip()
    with pytest.raises(ValueError, match="unknown extraction 'nope'"):
        extract_code("x", "nope")  # type: ignore[arg-type]


def test_extraction_option_reaches_the_rollout_stage():
    """rollout.extraction is what the rollout stage extracts with (an engine answering an unfinished thought)."""
    from cure.rollout.engine import Completion
    from cure.rollout.stage import rollout_tasks
    from cure.tasks import Task

    class Thinker:
        chat, tokenizer = False, None

        def generate(self, prompts, params):
            return [[Completion(UNFINISHED, 1, "length")] * params.n for _ in prompts]

    class Chars:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    task = Task(task_id="t", source="unit", question="Double n.", test_input=["3\n"], test_output=["6\n"])
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test = 2, 1
    rec = rollout_tasks([task], Thinker(), Thinker(), cfg, Chars())[0]
    assert rec["codes"] == ["print(int(input()) * 2)"] * 2 and rec["extract_failures"]["code"] == 0
    cfg.rollout.extraction = "after_think"
    rec = rollout_tasks([task], Thinker(), Thinker(), cfg, Chars())[0]
    assert rec["codes"] == [None, None]
    assert rec["extract_failure_reasons"]["code"] == {"unfinished_think": 2}


def test_long_cot_preset_turns_on_the_length_aware_reward():
    cfg = load_config("preset:long_cot", ["reward.min_len_threshold=10"])
    assert cfg.reward.enable_efficient is True
    assert cfg.reward.max_len_threshold == 8000 and cfg.reward.min_len_threshold == 10
    assert cfg.model.path == "Qwen/Qwen3-4B"
    with pytest.raises(ConfigError, match="unknown config preset 'nope'.*long_cot"):
        load_config("preset:nope")


def test_length_aware_reward_on_reasoning_responses():
    """Three correct programs that think for different lengths and one wrong one: with the preset, the shortest
    correct response gets the highest reward and the wrong one the lowest (tied with the longest); without it, correct ones tie."""
    short = "<think>double it</think>\n```python\nprint(int(input())*2)\n```"
    medium = "<think>" + "let me think about doubling. " * 20 + "</think>\n```python\nprint(2*int(input()))\n```"
    long = "<think>" + "hmm, what about negative numbers? " * 60 + "</think>\n```python\nn=int(input());print(n+n)\n```"
    wrong = "<think>add two</think>\n```python\nprint(int(input())+2)\n```"
    responses = [medium, short, wrong, long]
    lengths = [len(r.split()) for r in responses]
    rollout = {
        "task_id": "t", "code_prompt": "p", "test_prompt": "q", "code_responses": responses,
        "code_lengths": lengths, "test_responses": [], "test_lengths": [], "tests": [],
        "codes": [extract_code(r)[0] for r in responses], "gt_tests": [{"input": "3", "output": "6"}], "time_limit_s": 1.0,
    }
    passed = [[True], [True], [False], [True]]
    execution = {"task_id": "t", "num_gt": 1, "passed": passed,
                 "status": [["pass" if p else "fail" for p in row] for row in passed]}
    cfg = load_config("preset:long_cot", ["reward.min_len_threshold=1"])
    code, _, _ = assemble([rollout], [execution], cfg.reward, 10000)
    by_resp = {r["response"]: r["reward"] for r in code}
    assert by_resp[short] > by_resp[medium] > by_resp[long]
    # Wrong responses get the lowest correct response's reward (reference length_regularize): here the longest.
    assert by_resp[long] == pytest.approx(by_resp[wrong])
    plain = load_config(None)
    code, _, _ = assemble([rollout], [execution], plain.reward, 10000)
    by_resp = {r["response"]: r["reward"] for r in code}
    assert np.isclose(by_resp[short], by_resp[long]) and by_resp[short] > by_resp[wrong]
