"""Long chain-of-thought responses: extraction reads the answer after ``</think>``; the long-CoT preset turns on
the length-aware reward. All responses here are handwritten."""

from __future__ import annotations

import numpy as np
import pytest

from cure.config import ConfigError, load_config
from cure.prompts import extract_code, extract_test
from cure.reasoning import reasoning_share, split_reasoning
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


def test_code_comes_from_the_answer_not_the_reasoning():
    assert extract_code(DRAFT_IN_THOUGHT) == ("print(int(input()) * 2)", None)
    assert extract_code(TEMPLATE_OPENED) == ("print(int(input()) * 2)", None)


def test_test_comes_from_the_answer_not_the_reasoning():
    test, why = extract_test(TEST_AFTER_THOUGHT)
    assert why is None
    assert test == {"input": "4\n", "output": "8\n"}
    # The reasoning's draft test (3 -> 5) is never taken, even when the answer has no test at all.
    assert extract_test(DRAFT_IN_THOUGHT.replace("**Test", "Test")) == (None, "no_test_input")
    assert extract_test(TEST_AFTER_THOUGHT.split("</think>")[0] + "</think>\nI could not find a test.") == (None, "no_test_input")


def test_an_unfinished_thought_has_no_answer():
    assert extract_code(UNFINISHED) == (None, "unfinished_think")
    assert extract_test(UNFINISHED) == (None, "unfinished_think")
    assert split_reasoning(UNFINISHED) == (None, "unfinished_think")


def test_responses_without_reasoning_are_unchanged():
    plain = "```python\nprint(1)\n```"
    assert split_reasoning(plain) == (plain, None)
    assert extract_code(plain) == ("print(1)", None)
    assert reasoning_share(plain) == 0.0
    assert 0.5 < reasoning_share(DRAFT_IN_THOUGHT) < 1.0
    assert reasoning_share(UNFINISHED) == 1.0


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
