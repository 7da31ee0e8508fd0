"""Agentic refinement (``eval.refine_rounds``): failing programs and doubtful tests rewritten with execution
feedback. Programs run in the sandbox (gVisor)."""

from __future__ import annotations

from cure.config import load_config
from cure.evaluate import evaluate_tasks
from cure.prompts import EVAL_SPECIAL_REQUIREMENTS
from cure.refine import flatten, rows_from_metrics, to_markdown
from cure.rollout.engine import Completion, Engine
from cure.tasks import Task


class WordTokenizer:
    chat_template = None

    @staticmethod
    def encode(text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def unit_test(i: str, o: str) -> str:
    return f"**Test Input:**\n```{i}```\n\n**Test Output:**\n```{o}```\n"


class Scripted(Engine):
    """One-shot programs and tests from fixed lists; refinement prompts answered with a fix; every prompt kept."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompts, params):
        out = []
        for p in prompts:
            self.prompts.append(p)
            if "It fails this unit test" in p:
                texts = [fenced("print(int(input()) + 1)")]
            elif "A previous test for this problem was" in p:
                texts = [unit_test("5", "6")]
            elif "**Test Input:**" in p:
                texts = [unit_test("5", "6"), unit_test("5", "9")]  # the second is wrong
            else:
                texts = [fenced("print(int(input()) + 2)"), fenced("print(int(input()) + 1)"),
                         fenced("x = int(input())\nprint(x + 1)")]
            out.append([Completion(texts[j % len(texts)], 1, "stop") for j in range(params.n)])
        return out


TASK = Task(task_id="inc", source="unit", question="Read an integer and print it plus one.",
            example_input=["1\n"], example_output=["2\n"], test_input=["1\n", "7\n"], test_output=["2\n", "8\n"])


def test_a_refinement_round_carries_the_failing_test_and_fixes_program_and_test():
    cfg = load_config(None, ["eval.k_code=3", "eval.k_test=2", "eval.scales=[[3, 2]]", "eval.refine_rounds=1",
                             "execute.workers=2"])
    engine = Scripted()
    metrics, _, _ = evaluate_tasks("", [TASK], cfg, 0, engine, WordTokenizer())
    coder_fix = [p for p in engine.prompts if "It fails this unit test" in p]
    test_fix = [p for p in engine.prompts if "A previous test for this problem was" in p]
    # Three programs get feedback: the +2 program on the trusted test (5 -> 6, it printed 7), the two right ones
    # on the wrong test (5 -> 9), which they fail with 6.
    assert len(coder_fix) == 3 and len(test_fix) == 1
    # The evaluation's prompt rules: the reference layout (rollout.prompt_layout) and the coder's evaluation wording.
    assert all(p.startswith("<|im_start|>") and p.endswith(" <|im_end|>\n<|im_start|>Assistant: ")
               for p in coder_fix + test_fix)
    assert all(EVAL_SPECIAL_REQUIREMENTS + " Put the complete program" in p for p in coder_fix)
    wrong = [p for p in coder_fix if "+ 2" in p]
    assert len(wrong) == 1
    assert "Input:\n```\n5\n```" in wrong[0] and "Expected output:\n```\n6\n```" in wrong[0]
    assert "Your program printed:\n```\n7\n```" in wrong[0]
    assert TASK.question in wrong[0]
    # The wrong test disagrees with every program; its prompt shows what most programs print (6).
    assert "**Test Output:**\n```\n9\n```" in test_fix[0]
    assert "Most programs written for this problem print instead:\n```\n6\n```" in test_fix[0]
    rows = rows_from_metrics(metrics)
    assert [r["round"] for r in rows] == [0, 1]
    assert abs(rows[0]["code_acc"] - 2 / 3) < 1e-9 and rows[0]["unit_test_acc"] == 0.5
    assert rows[1]["code_acc"] == 1.0 and rows[1]["unit_test_acc"] == 1.0 and rows[1]["bon_3x2"] == 1.0
    assert rows[1]["programs_refined"] == 3 and rows[1]["tests_regenerated"] == 1
    assert "| 0 (one-shot) | 0.667 |" in to_markdown(rows)
    assert flatten(rows)["refine1_code_acc"] == 1.0


def test_errors_are_reported_as_errors():
    from cure.prompts import PromptTemplates
    from cure.refine import code_refine_prompt

    p = code_refine_prompt(TASK, "raise ValueError", {"input": "1\n", "output": "2\n"}, "error", None,
                           PromptTemplates.load(), None)
    assert "It raised an error" in p and "Expected output:\n```\n2\n```" in p


class ChatTokenizer:
    chat_template = "{{ messages }}"

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
        return "CHAT:" + "|".join(m["role"] + "=" + m["content"] for m in messages)


def test_refinement_prompts_follow_the_configured_layout():
    from cure.prompts import PromptTemplates
    from cure.refine import code_refine_prompt, test_refine_prompt

    t = PromptTemplates.load()
    args = (TASK, "print(0)", {"input": "1\n", "output": "2\n"}, "fail", "0\n", t, ChatTokenizer())
    assert code_refine_prompt(*args).startswith("<|im_start|>")
    assert code_refine_prompt(*args, "chat_template").startswith("CHAT:system=")
    targs = (TASK, {"input": "1\n", "output": "3\n"}, "2\n", t, ChatTokenizer())
    assert test_refine_prompt(*targs).startswith("<|im_start|>")
    assert test_refine_prompt(*targs, "chat_template").startswith("CHAT:system=")


def test_the_probe_runs_programs_in_the_evaluation_namespace():
    from cure.refine import probe

    # an annotated program needs List/Optional/Tuple predefined, as the evaluation's scoring run gives it
    code = "def f(xs: List[int]) -> Optional[Tuple[int, int]]:\n    return (min(xs), max(xs))\nprint(*f([3, 1, 2]))"
    rec = {"task_id": "t", "codes": [code], "gt_tests": [], "tests": [{"input": "", "output": "1 3\n"}],
           "time_limit_s": 1.0}
    cfg = load_config(None, ["execute.isolation=none", "execute.workers=1"])
    (plain, _), (named, printed) = probe([rec, dict(rec, task_id="t2", typing_names=True)], cfg)
    assert plain == [["error"]]
    assert named == [["pass"]] and printed == [["1 3\n"]]
