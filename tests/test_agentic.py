"""Agentic frameworks (``eval.framework``): each protocol step on fixtures with known answers. The models are
scripted (responses chosen by protocol step); every program runs in the real sandbox (gVisor)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from cure.agentic import alphacodium as ac
from cure.agentic import mpsc, run_tasks
from cure.agentic import sstar as ss
from cure.agentic.common import Ask, Session, code_ask, test_ask
from cure.agentic.live import LivePorts
from cure.config import load_config
from cure.evaluate import evaluate_tasks
from cure.prompts import PromptTemplates
from cure.rollout.engine import Completion, Engine
from cure.tasks import Task

TEMPLATES = PromptTemplates.load()
PLUS_ONE = "print(int(input()) + 1)"
PLUS_ONE_B = "x = int(input())\nprint(x + 1)"
TIMES_TWO = "print(int(input()) * 2)"
CAPPED = "n = int(input())\nprint(n + 1 if n < 10 else n)"  # wrong from 10 on


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def unit_test(i: str, o: str) -> str:
    return f"**Test Input:**\n```{i}```\n\n**Test Output:**\n```{o}```\n"


class WordTokenizer:
    chat_template = None

    @staticmethod
    def encode(text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


class Scripted(LivePorts):
    """The real sandbox; the models answer from a script keyed by protocol step (a list is cycled over the n
    samples; a callable gets the prompt)."""

    def __init__(self, script: dict[str, list[str] | Callable[[str], str]]) -> None:
        cfg = load_config(None, ["execute.workers=1"])
        super().__init__(None, None, cfg, WordTokenizer(), TEMPLATES)
        self.script = script
        self.asks: list[Ask] = []

    def sample(self, asks: list[Ask], n: int) -> list[list[str]]:
        self.asks += asks
        out = []
        for a in asks:
            s = self.script.get(a.step, ["no answer"])
            out.append([s(a.user) for _ in range(n)] if callable(s) else [s[j % len(s)] for j in range(n)])
        return out


TASK = Task(task_id="inc", source="unit", question="Read an integer and print it plus one.",
            example_input=["2\n"], example_output=["3\n"], test_input=["1\n", "7\n", "12\n"],
            test_output=["2\n", "8\n", "13\n"])


@pytest.fixture(scope="module")
def sandbox():
    def make(script):
        return Scripted(script)
    return make


# --- MPSC --------------------------------------------------------------------------------------------------------


def test_mpsc_iteration_reaches_the_closed_form_of_the_papers_objective():
    rng = np.random.default_rng(0)
    w = rng.random((6, 6))
    w = (w + w.T) * (rng.random((6, 6)) < 0.6)
    w = np.triu(w, 1) + np.triu(w, 1).T
    y = rng.random(6)
    d = w.sum(axis=1)
    t = w / np.sqrt(np.outer(d, d))
    closed = 0.05 * np.linalg.solve(np.eye(6) - 0.95 * t, y)  # f* = (1 - a)(I - aT)^-1 y
    assert np.allclose(mpsc.rank(w, y, 0.95), closed, atol=1e-6)


def test_mpsc_graph_picks_the_consistent_solution_where_best_of_n_ties_on_the_wrong_one(sandbox):
    # Programs: x2 (wrong), +1, +1 written differently. Tests: 1->2 (right; x2 passes it too), 3->4 (right), 2->4
    # (wrong; only x2 passes). Best-of-N ties at two tests each and takes the first, the wrong one; MPSC's agreement
    # prior (two programs behave alike) and the specification perspective pick a right one.
    ports = sandbox({
        "mpsc.solutions": [fenced(TIMES_TWO), fenced(PLUS_ONE), fenced(PLUS_ONE_B)],
        "mpsc.tests": [unit_test("1", "2"), unit_test("3", "4"), unit_test("2", "4")],
        "mpsc.specifications": [fenced("def postcondition(inp, out):\n    return int(out) == int(inp) + 1")],
    })
    with ports:
        session = Session(ports, TASK, 1.0)
        out = mpsc.run(session, TEMPLATES, 3, 3, 1)
    assert out.pick in (PLUS_ONE, PLUS_ONE_B)
    assert out.detail["specifications"] == 1 and out.detail["tests"] == 3
    scores = out.detail["scores"]
    assert scores[1] > scores[0] and scores[2] > scores[0]
    assert out.detail["prior"][:3] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # The tests the pick passes are the two right ones; the specification ran in the sandbox.
    assert [t["input"] for t in out.tests] == ["1\n", "3\n"]
    steps = [s["step"] for s in out.trace.steps]
    assert "mpsc.check_specifications" in steps and not out.trace.fallbacks
    assert out.trace.executions > 0 and out.trace.completion_tokens > 0


def test_mpsc_without_a_usable_specification_falls_back_to_solutions_and_tests(sandbox):
    ports = sandbox({
        "mpsc.solutions": [fenced(PLUS_ONE), fenced(TIMES_TWO)],
        "mpsc.tests": [unit_test("3", "4")],
        "mpsc.specifications": ["I am not sure."],
    })
    with ports:
        out = mpsc.run(Session(ports, TASK, 1.0), TEMPLATES, 2, 1, 2)
    assert out.pick == PLUS_ONE and out.detail["specifications"] == 0
    assert any("no specification" in f for f in out.trace.fallbacks)


# --- AlphaCodium -------------------------------------------------------------------------------------------------


def test_alphacodium_flow_ranks_on_public_tests_and_keeps_passing_tests_as_anchors(sandbox):
    # Public test 2 -> 3. Candidates: x2 (fails it) then +1. AI tests: 3 -> 4 (right: an anchor), 5 -> 7 (wrong).
    # The repair for the wrong test would pass it but breaks the anchor, so it is reverted.
    ports = sandbox({
        "alphacodium.reflection": ["REFLECTION: read n, print n + 1."],
        "alphacodium.public_test_reasoning": ["REASONING: 2 + 1 = 3."],
        "alphacodium.candidates": [fenced(TIMES_TWO), fenced(PLUS_ONE)],
        "alphacodium.ai_tests": [unit_test("3", "4"), unit_test("5", "7")],
        "alphacodium.ai_test_iteration.fix": [fenced("print(int(input()) + 2)")],
    })
    with ports:
        session = Session(ports, TASK, 1.0)
        out = ac.run(session, TEMPLATES, 2, 2, iterations=1)
    assert out.pick == PLUS_ONE
    assert out.detail["ranking"] == [1, 0] and out.detail["public_votes"] == [0, 1]
    assert out.tests == [{"input": "3\n", "output": "4\n"}]
    assert out.detail["anchors_public"] == 1 and out.detail["anchors_ai"] == 1
    assert any("broke an anchor" in f for f in out.trace.fallbacks)
    # Each step's prompt carries what the previous steps wrote.
    by_step = {a.step: a.user for a in ports.asks}
    assert "REFLECTION" in by_step["alphacodium.public_test_reasoning"]
    assert "REASONING" in by_step["alphacodium.candidates"] and "REFLECTION" in by_step["alphacodium.candidates"]
    fix = by_step["alphacodium.ai_test_iteration.fix"]
    assert "Input:\n```\n5\n```" in fix and "Expected output:\n```\n7\n```" in fix
    assert "Your program printed:\n```\n6\n```" in fix


def test_alphacodium_public_iteration_repairs_a_failing_solution(sandbox):
    ports = sandbox({
        "alphacodium.candidates": [fenced(TIMES_TWO)],
        "alphacodium.public_iteration.fix": [fenced(PLUS_ONE)],
    })
    with ports:
        out = ac.run(Session(ports, TASK, 1.0), TEMPLATES, 1, 0, iterations=2)
    assert out.pick == PLUS_ONE and out.detail["anchors_public"] == 1


# --- S* ------------------------------------------------------------------------------------------------------------


def judge_right(prompt: str) -> str:
    """A judge that knows the answer: n + 1."""
    n = int(prompt.split("On this input:\n```\n")[1].split("\n")[0])
    return "Answer: A" if f"(A):\n```\n{n + 1}\n" in prompt else "Answer: B"


def test_sstar_pair_is_told_apart_by_the_synthesised_input_and_judged(sandbox):
    # Both pass the public test (2 -> 3); they differ from 10 on. The tester writes 10, both run, the judge takes +1.
    ports = sandbox({
        "sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE)],
        "sstar.distinguishing_input": ["They differ on large n.\n**Test Input:**\n```10```"],
        "sstar.judge": judge_right,
    })
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 2, rounds=1)
    assert out.pick == PLUS_ONE and out.detail["matches"] == [1]
    assert out.tests == [{"input": "10\n", "output": "11\n"}]
    judged = [a.user for a in ports.asks if a.step == "sstar.judge"]
    assert len(judged) == 1 and "(A):\n```\n10\n```" in judged[0] and "(B):\n```\n11\n```" in judged[0]


def test_sstar_input_that_does_not_separate_the_pair_keeps_the_incumbent(sandbox):
    ports = sandbox({
        "sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE)],
        "sstar.distinguishing_input": ["**Test Input:**\n```4```"],
    })
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 2, rounds=1)
    assert out.pick == CAPPED and out.tests == []
    assert any("does not tell the pair apart" in f for f in out.trace.fallbacks)


def test_sstar_unanswered_judgement_goes_to_the_output_most_other_candidates_print(sandbox):
    # Incumbent CAPPED meets +1 on 10; two other +1 variants print 11 there, so +1 wins without a verdict.
    ports = sandbox({
        "sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE), fenced(PLUS_ONE_B), fenced("print(1 + int(input()))")],
        "sstar.distinguishing_input": ["**Test Input:**\n```10```"],
        "sstar.judge": ["hmm"],
    })
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 4, rounds=0)
    assert out.pick != CAPPED and out.detail["matches"][0] == 1
    assert any("decided by the other candidates" in f for f in out.trace.fallbacks)


def test_sstar_debugging_fixes_a_sample_with_execution_feedback(sandbox):
    ports = sandbox({"sstar.samples": [fenced(TIMES_TWO)], "sstar.debug.fix": [fenced(PLUS_ONE)]})
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 1, rounds=2)
    assert out.pick == PLUS_ONE
    fix = [a.user for a in ports.asks if a.step == "sstar.debug.fix"]
    assert len(fix) == 1 and "Your program printed:\n```\n4\n```" in fix[0]


# --- scoring -------------------------------------------------------------------------------------------------------


def test_scoring_uses_the_ground_truth_and_the_projects_unit_test_accuracy(sandbox):
    # S* ends with the judged test 10 -> 11 (right) on a task whose pick is right: code acc 1, unit-test acc 1.
    # A second task where the judge is wrong ends with the wrong pick and a wrong test: 0 and 0 there.
    wrong_judge = {"sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE)],
                   "sstar.distinguishing_input": ["**Test Input:**\n```12```"], "sstar.judge": ["Answer: A"]}
    cfg = load_config(None, ["eval.k_code=2", "eval.scales=[[2, 2]]", "eval.framework_iterations=0"])
    ports = sandbox(wrong_judge)
    with ports:
        metrics, records = run_tasks("sstar", [TASK], ports, TEMPLATES, cfg, [1.0])
    assert metrics["sstar_code_acc"] == 0.0 and records[0]["pick"] == CAPPED
    assert records[0]["final_tests"] == [{"input": "12\n", "output": "12\n"}]
    assert metrics["sstar_unit_test_acc"] == 0.0  # the only correct program (+1) fails it
    assert metrics["sstar_executions_per_task"] > 0
    right = dict(wrong_judge, **{"sstar.judge": judge_right})
    ports = sandbox(right)
    with ports:
        metrics, records = run_tasks("sstar", [TASK], ports, TEMPLATES, cfg, [1.0])
    assert metrics["sstar_code_acc"] == 1.0 and metrics["sstar_unit_test_acc"] == 1.0
    assert metrics["sstar_final_tests_per_task"] == 1.0


# --- through the evaluation stage ------------------------------------------------------------------------------------


class RoleEngine(Engine):
    """A scripted engine for one role; every prompt kept."""

    def __init__(self, answer: Callable[[str, int], str]) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    def generate(self, prompts, params):
        self.prompts += prompts
        return [[Completion(self.answer(p, j), 1, "stop") for j in range(params.n)] for p in prompts]


def answer_as_coder(prompt: str, j: int) -> str:
    if "It fails this unit test" in prompt:
        return fenced(PLUS_ONE)
    if "Reflect on the problem" in prompt or "explain step by step why" in prompt:
        return "Add one."
    return fenced(CAPPED if j % 2 else PLUS_ONE)


def answer_as_tester(prompt: str, j: int) -> str:
    if "Program A:" in prompt:
        return "**Test Input:**\n```10```"
    if "Answer: A" in prompt:
        return "Answer: A"
    if "postcondition" in prompt:
        return fenced("def postcondition(inp, out):\n    return int(out) == int(inp) + 1")
    return unit_test("3", "4")


@pytest.mark.parametrize("framework", ["mpsc", "alphacodium", "sstar"])
def test_framework_runs_in_the_evaluation_with_a_separate_coder(framework):
    cfg = load_config(None, ["eval.k_code=2", "eval.k_test=2", "eval.scales=[[2, 2]]", f"eval.framework={framework}",
                             "execute.workers=1"])
    coder, tester = RoleEngine(answer_as_coder), RoleEngine(answer_as_tester)
    metrics, rollouts, _ = evaluate_tasks("", [TASK], cfg, 0, tester, WordTokenizer(), coder=coder)
    for key in ("code_acc", "unit_test_acc", "bon_2x2"):  # one-shot and Best-of-N stay
        assert key in metrics
    assert {f"{framework}_{k}" for k in ("code_acc", "unit_test_acc", "executions_per_task",
                                         "completion_tokens_per_task")} <= set(metrics)
    assert metrics[f"{framework}_executions_per_task"] > 0
    record = rollouts[0]["agentic"]
    assert record["framework"] == framework and record["steps"]
    # Test-side steps went to the tester, programs and repairs to the coder.
    assert not any("Program A:" in p or "postcondition" in p or "**Test Input:**" in p for p in coder.prompts
                   if "It fails this unit test" not in p)
    assert any("**Test Input:**" in p for p in tester.prompts)


def test_framework_runs_in_a_pairing_with_the_coder_and_the_tester_apart():
    from cure.pairing import pair_tasks, to_markdown

    cfg = load_config(None, ["eval.k_code=2", "eval.k_test=1", "eval.scales=[[2, 1]]", "eval.framework=sstar",
                             "execute.workers=1"])
    coder, tester = RoleEngine(answer_as_coder), RoleEngine(answer_as_tester)
    report, rollouts, _ = pair_tasks([TASK], coder, tester, cfg, WordTokenizer())
    assert report["agentic"]["sstar_code_acc"] in (0.0, 1.0) and rollouts[0]["agentic"]["framework"] == "sstar"
    assert any("Program A:" in p for p in tester.prompts) and not any("Program A:" in p for p in coder.prompts)
    assert "| sstar_code_acc |" in to_markdown("unit", report, "coder", "tester")


def test_a_prompt_past_the_models_context_gets_empty_responses_and_the_rest_are_answered():
    class Short(RoleEngine):
        def generate(self, prompts, params):
            if any(len(p) > 600 for p in prompts):
                raise ValueError("a prompt of 700 tokens does not fit")
            return super().generate(prompts, params)

    cfg = load_config(None, ["execute.workers=1"])
    ports = LivePorts(Short(lambda p, j: "ok"), None, cfg, WordTokenizer(), TEMPLATES)
    out = ports.sample([Ask("coder", "s", "short"), Ask("coder", "s", "long " * 200)], 2)
    assert out == [["ok", "ok"], ["", ""]]


def test_alphacodium_takes_candidates_from_the_plain_coder_prompt_when_the_notes_give_none(sandbox):
    ports = sandbox({"alphacodium.candidates": ["no program here"], "alphacodium.candidates_plain": [fenced(PLUS_ONE)]})
    with ports:
        out = ac.run(Session(ports, TASK, 1.0), TEMPLATES, 2, 0, iterations=1)
    assert out.pick == PLUS_ONE
    assert any("candidates from the coder prompt" in f for f in out.trace.fallbacks)


# --- a model that knows only its coder and tester prompts (the tiny model's own templates) -------------------------


def test_roles_only_when_the_prompt_templates_are_the_models_own():
    from cure.agentic.common import roles_only

    assert not roles_only(None) and not roles_only("")
    assert roles_only("src/cure/models/tiny/prompts")


def test_mpsc_roles_only_asks_for_no_specification(sandbox):
    ports = sandbox({
        "mpsc.solutions": [fenced(TIMES_TWO), fenced(PLUS_ONE), fenced(PLUS_ONE_B)],
        "mpsc.tests": [unit_test("1", "2"), unit_test("3", "4")],
        "mpsc.specifications": [fenced("def postcondition(inp, out):\n    return True")],
    })
    with ports:
        out = mpsc.run(Session(ports, TASK, 1.0), TEMPLATES, 3, 2, 2, roles=True)
    assert out.pick in (PLUS_ONE, PLUS_ONE_B) and out.detail["specifications"] == 0
    assert [a.step for a in ports.asks] == ["mpsc.solutions", "mpsc.tests"]
    assert any("roles only" in f for f in out.trace.fallbacks)


def test_alphacodium_roles_only_samples_candidates_and_repairs_from_the_coder_prompt(sandbox):
    # The one candidate (x2) fails the public test 2 -> 3; the repair is a fresh sample of the coder prompt (+1).
    ports = sandbox({
        "alphacodium.candidates": [fenced(TIMES_TWO)],
        "alphacodium.public_iteration.resample": [fenced(PLUS_ONE)],
        "alphacodium.ai_tests": [unit_test("3", "4")],
    })
    with ports:
        out = ac.run(Session(ports, TASK, 1.0), TEMPLATES, 1, 1, iterations=2, roles=True)
    assert out.pick == PLUS_ONE and out.tests == [{"input": "3\n", "output": "4\n"}]
    coder_prompt = [a.user for a in ports.asks if a.step == "alphacodium.candidates"][0]
    assert coder_prompt == code_ask(TASK, TEMPLATES).user  # the coder's own prompt, no notes
    resampled = [a.user for a in ports.asks if a.step == "alphacodium.public_iteration.resample"]
    assert resampled == [coder_prompt]
    assert {a.step for a in ports.asks} == {"alphacodium.candidates", "alphacodium.ai_tests",
                                            "alphacodium.public_iteration.resample"}


def test_sstar_roles_only_decides_a_match_by_the_testers_own_tests(sandbox):
    # Both pass the public test. The tester's tests: 4 -> 5 (the pair agrees), then 10 -> 11 twice and 10 -> 10 once:
    # the pair differs on 10, and the output most of the tester's tests expect there (11) wins.
    ports = sandbox({
        "sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE)],
        "sstar.tester_tests": [unit_test("4", "5"), unit_test("10", "11"), unit_test("10", "10"), unit_test("10", "11")],
    })
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 2, rounds=1, roles=True, k_test=4)
    assert out.pick == PLUS_ONE and out.detail["matches"] == [1]
    assert out.tests == [{"input": "10\n", "output": "11\n"}]
    assert {a.step for a in ports.asks} == {"sstar.samples", "sstar.tester_tests"}
    assert [a.user for a in ports.asks if a.step == "sstar.tester_tests"] == [test_ask(TASK, TEMPLATES).user]
    assert any("the tester's tests expect" in f for f in out.trace.fallbacks)


def test_sstar_roles_only_goes_to_agreement_when_no_tester_test_expects_either_output(sandbox):
    ports = sandbox({
        "sstar.samples": [fenced(CAPPED), fenced(PLUS_ONE), fenced(PLUS_ONE_B)],
        "sstar.tester_tests": [unit_test("10", "99")],
    })
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 3, rounds=0, roles=True, k_test=1)
    assert out.pick != CAPPED and out.detail["matches"][0] == 1
    assert any("decided by the other candidates" in f for f in out.trace.fallbacks)


def test_sstar_roles_only_debugs_by_resampling_the_coder_prompt(sandbox):
    ports = sandbox({"sstar.samples": [fenced(TIMES_TWO)], "sstar.debug.resample": [fenced(PLUS_ONE)]})
    with ports:
        out = ss.run(Session(ports, TASK, 1.0), TEMPLATES, 1, rounds=2, roles=True)
    assert out.pick == PLUS_ONE
    assert [a.user for a in ports.asks if a.step == "sstar.debug.resample"] == [code_ask(TASK, TEMPLATES).user]
    assert not any(a.step == "sstar.debug.fix" for a in ports.asks)


@pytest.mark.parametrize("framework", ["mpsc", "alphacodium", "sstar"])
def test_a_model_with_its_own_prompts_is_sent_only_its_coder_and_tester_prompts(framework):
    prompts = "src/cure/models/tiny/prompts"
    cfg = load_config(None, ["eval.k_code=2", "eval.k_test=2", "eval.scales=[[2, 2]]", f"eval.framework={framework}",
                             "execute.workers=1", f"rollout.prompt_dir={prompts}"])
    coder, tester = RoleEngine(answer_as_coder), RoleEngine(answer_as_tester)
    metrics, rollouts, _ = evaluate_tasks("", [TASK], cfg, 0, tester, WordTokenizer(), coder=coder)
    assert len(set(coder.prompts)) == 1 and len(set(tester.prompts)) == 1  # the one-shot prompts, nothing else
    assert set(coder.prompts) == {rollouts[0]["code_prompt"]} and set(tester.prompts) == {rollouts[0]["test_prompt"]}
    assert metrics[f"{framework}_code_acc"] in (0.0, 1.0) and metrics[f"{framework}_executions_per_task"] > 0
