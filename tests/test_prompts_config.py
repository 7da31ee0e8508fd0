"""Prompt rendering, extraction and the typed config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cure.config import ConfigError, CureConfig, dump_config, load_config
from cure.prompts import PromptTemplates, code_prompt, extract_code, extract_test, test_prompt


def test_code_prompt_reference_layout():
    p = code_prompt("Add two numbers.")
    assert p.startswith("<|im_start|>You are a helpful assistant help user solve problems. <|im_end|>\n<|im_start|>User: ")
    assert "You should use input() to input and print() to output in your script." in p
    assert p.endswith("Add two numbers. <|im_end|>\n<|im_start|>Assistant: ")


def test_test_prompt_examples():
    none = test_prompt("Q")
    one = test_prompt("Q", ["1 2\n"], ["3\n"])
    two = test_prompt("Q", ["1\n", "2\n"], ["a\n", "b\n"])
    assert "We already have" not in none
    assert "We already have one test sample:\n Its input is '1 2\\n'. Its output is '3\\n'." in one
    assert "We already have 2 test samples" in two and "'1\\n', '2\\n'" in two
    assert "**Test Input:**" in one


def test_chat_template_is_used_when_present():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "|".join(m["role"] + ":" + m["content"] for m in messages)

    p = code_prompt("Q", tokenizer=Tok())
    assert p.startswith("system:You are a helpful assistant") and "|user:You need to think first" in p


def test_custom_templates(tmp_path):
    (tmp_path / "coder_user.j2").write_text("Solve: {{ problem }}")
    t = PromptTemplates.load(tmp_path)
    assert "Solve: Q <|im_end|>" in code_prompt("Q", templates=t)
    assert "Given a coding task" in test_prompt("Q", templates=t)  # others fall back to the defaults


def test_extract_code_last_block():
    assert extract_code("```python\na=1\n```\ntext\n```python\nprint(2)\n```") == ("print(2)", None)
    assert extract_code("no code") == (None, "no_python_block")
    assert extract_code("```python\n\n```") == (None, "empty_python_block")
    assert extract_code("```python\nprint(1)")[0] is None  # unterminated


def test_extract_test_fenced_and_plain():
    fenced = "**Test Input:**\n```\n3 4\n```\n\n**Test Output:**\n```\n7\n```\n\n**Explanation:** sum"
    assert extract_test(fenced) == ({"input": "3 4\n", "output": "7\n"}, None)
    plain = "**Test Input:** 3\\n4\n**Test Output:** 7\n**Explanation:** ok"
    assert extract_test(plain) == ({"input": "3\n4\n", "output": "7\n"}, None)
    assert extract_test("**Test Input:**\n```plaintext\nab\n```\n**Test Output:**\n```ba```")[0] == {"input": "ab\n", "output": "ba\n"}
    assert extract_test("nothing") == (None, "no_test_input")
    assert extract_test("**Test Input:** 3") == (None, "no_test_input")
    assert extract_test("**Test Input:**\n```3```\n")[1] == "no_test_output"


@given(st.text())
def test_extraction_never_raises(s):
    code, why = extract_code(s)
    assert (code is None) != (why is None)
    test, why = extract_test(s)
    assert (test is None) != (why is None)


def test_config_defaults_are_the_papers():
    c = CureConfig()
    assert (c.rollout.k_code, c.rollout.k_test, c.rollout.temperature, c.rollout.top_p) == (16, 16, 1.0, 1.0)
    assert (c.train.learning_rate, c.train.kl_coef, c.train.kl_estimator, c.train.clip_eps) == (1e-6, 0.01, "k3", 0.2)
    assert c.eval.scales == [(4, 4), (16, 16)] and c.data.max_gt_tests == 8


def test_config_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  learning_rate: 3.0e-4\nrollout:\n  k_code: 4\n")
    c = load_config(f, ["rollout.k_code=8", "eval.scales=[[2, 2]]"])
    assert c.train.learning_rate == 3e-4 and c.rollout.k_code == 8 and c.eval.scales == [(2, 2)]
    assert load_config(overrides=[]) == CureConfig()
    again = tmp_path / "d.yaml"
    again.write_text(dump_config(c))
    assert load_config(again) == c
    with pytest.raises(ConfigError, match="rollout.k_code"):
        load_config(overrides=["rollout.k_code=-1"])
    with pytest.raises(ConfigError, match="section one of"):
        load_config(overrides=["nope.x=1"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
