"""What the three agentic frameworks share: the ports to the models and the sandbox, the trace, and the scoring.

A framework's protocol is pure logic over three ports (:class:`Ports`):

* ``sample(asks, n)``: ``n`` responses per :class:`Ask` from the coder or the tester (``Ask.role``);
* ``run(programs, inputs, time_limit)``: every program on every input, in the sandbox; a :class:`Ran` per cell with
  the status and what the program printed;
* ``count(text)``: tokens of a text, as the rollout stage counts response lengths.

Tests pass scripted ports; :class:`LivePorts` is the real one: the project's rollout engines (prompts rendered as the
rollout stage renders them, ``rollout.prompt_layout``) and the project's sandbox pool (gVisor by default,
``execute.isolation``), kept open for the whole evaluation. Every program and test a model writes runs only there.

Every step lands in a :class:`Trace`: the prompts sent, the responses, the executions, with token and execution
counts per task, so a framework's cost is visible next to its gain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, Protocol

import numpy as np

from cure.metrics import summarize
from cure.prompts import EVAL_SPECIAL_REQUIREMENTS, FAILURE_TEXT, _compiled, extract_code
from cure.tasks import Task

Role = Literal["coder", "tester"]


@dataclass(frozen=True)
class Ask:
    """One prompt for one role: the role's system text and the user text of one protocol step."""

    role: Role
    step: str
    user: str


@dataclass(frozen=True)
class Ran:
    """One execution: ``status`` as the sandbox reports it (``pass``/``fail``/``error``/``timeout``/...) and what
    the program printed (None when it did not finish normally)."""

    status: str
    output: str | None


class Ports(Protocol):
    def sample(self, asks: list[Ask], n: int) -> list[list[str]]: ...

    def run(self, programs: list[str | None], inputs: list[str], time_limit: float) -> list[list[Ran]]: ...

    def count(self, text: str) -> int: ...


@cache
def template(name: str) -> str:
    """A step's user template, ``cure/templates/agentic/NAME.j2``."""
    return resources.files("cure").joinpath("templates", "agentic", f"{name}.j2").read_text(encoding="utf-8")


def render(name: str, **values: Any) -> str:
    return _compiled(template(name)).render(**values)


def same_output(a: str | None, b: str | None) -> bool:
    """The sandbox's output comparison: whitespace-normalised exact match (None matches nothing)."""
    return a is not None and b is not None and " ".join(a.split()) == " ".join(b.split())


def output_key(a: str | None) -> str | None:
    return None if a is None else " ".join(a.split())


def public_tests(task: Task) -> list[dict[str, str]]:
    return [{"input": i, "output": o} for i, o in zip(task.example_input, task.example_output)]


def fix_ask(task: Task, code: str, test: dict[str, str], ran: Ran, step: str) -> Ask:
    """The coder's repair prompt with execution feedback: the program, one failing test and what it printed (or how
    it failed), as the project's refinement prompt (:func:`cure.refine.code_refine_prompt`) words it."""
    if ran.status == "fail" and ran.output is not None:
        outcome = "Your program printed:\n```\n" + (ran.output if ran.output.endswith("\n") else ran.output + "\n") + "```"
    else:
        outcome = FAILURE_TEXT.get(ran.status, f"It failed ({ran.status}).")
    user = render("fix", problem=task.question, code=code, input=test["input"], output=test["output"],
                  outcome=outcome, special_requirements=EVAL_SPECIAL_REQUIREMENTS)
    return Ask("coder", step, user)


_ANSWER = re.compile(r"Answer:\s*\**\s*([AB])\b")
_INPUT = re.compile(r"\*\*Test Input:\*\*\s*```(.*?)```", re.DOTALL)


def extract_input(response: str) -> str | None:
    """The last fenced ``**Test Input:**`` block (the tester format's input part), ending with a newline."""
    found = _INPUT.findall(response)
    if not found or not found[-1].strip():
        return None
    text = found[-1].lstrip("\n").replace("plaintext\n", "")
    return text if text.endswith("\n") else text + "\n"


def extract_answer(response: str) -> str | None:
    """``A`` or ``B`` from the last ``Answer: X`` line, else None."""
    found = _ANSWER.findall(response)
    return found[-1] if found else None


@dataclass
class Trace:
    """Everything one framework did on one task, with its costs."""

    task_id: str
    count: Any
    steps: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    executions: int = 0
    fallbacks: list[str] = field(default_factory=list)

    def sampled(self, asks: list[Ask], responses: list[list[str]]) -> None:
        for ask, resp in zip(asks, responses):
            self.prompt_tokens += self.count(ask.user)
            self.completion_tokens += sum(self.count(r) for r in resp)
            self.steps.append({"step": ask.step, "role": ask.role, "prompt": ask.user, "responses": resp})

    def ran(self, step: str, programs: int, inputs: int, summary: Any = None) -> None:
        self.executions += programs * inputs
        self.steps.append({"step": step, "executions": programs * inputs, "result": summary})

    def fell_back(self, what: str) -> None:
        self.fallbacks.append(what)
        self.steps.append({"step": "fallback", "what": what})

    def costs(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "executions": self.executions}


class Session:
    """A framework's view of the ports on one task: every call is recorded in the trace."""

    def __init__(self, ports: Ports, task: Task, time_limit: float) -> None:
        self.ports = ports
        self.task = task
        self.time_limit = time_limit
        self.trace = Trace(task.task_id, ports.count)

    def sample(self, asks: list[Ask], n: int = 1) -> list[list[str]]:
        if not asks:
            return []
        out = self.ports.sample(asks, n)
        self.trace.sampled(asks, out)
        return out

    def run(self, step: str, programs: list[str | None], inputs: list[str]) -> list[list[Ran]]:
        if not programs or not inputs:
            return [[] for _ in programs]
        out = self.ports.run(programs, inputs, self.time_limit)
        self.trace.ran(step, sum(p is not None for p in programs), len(inputs),
                       [[r.status for r in row] for row in out])
        return out

    def passes(self, step: str, programs: list[str | None], tests: list[dict[str, str]]) -> np.ndarray:
        """bool [programs, tests]: the program's output matches the test's expected output."""
        ran = self.run(step, programs, [t["input"] for t in tests])
        return np.array([[same_output(r.output, t["output"]) and r.status in ("pass", "fail") for r, t in zip(row, tests)]
                         for row in ran], dtype=bool).reshape(len(programs), len(tests))


@dataclass
class Outcome:
    """What a framework ends with on one task: its pick, the candidate programs it saw, the tests it keeps."""

    pick: str | None
    candidates: list[str | None]
    tests: list[dict[str, str]]
    trace: Trace
    detail: dict[str, Any] = field(default_factory=dict)


def score(outcome: Outcome, task: Task, ports: Ports, time_limit: float, max_test: int) -> dict[str, Any]:
    """The pick's ground-truth result and the final tests' accuracy table, both executed in the sandbox (these runs
    are the evaluation's, not the framework's: they are not in its trace or costs).

    ``pick_pass``: the pick passes every ground-truth test (the first ``max_test``). The final tests are scored with
    the project's unit-test accuracy (:func:`cure.metrics.summarize`): a test is correct when every correct program
    among the framework's candidates (and its pick) passes it; the table is returned for pooling over tasks."""
    gt = [{"input": i, "output": o} for i, o in zip(task.test_input[:max_test], task.test_output[:max_test])]
    programs = list(outcome.candidates) + [outcome.pick]
    table = Session(ports, task, time_limit).passes("score", programs, gt + outcome.tests)
    gt_pass, gen_pass = table[:, : len(gt)], table[:, len(gt):]
    return {"pick_pass": bool(outcome.pick is not None and gt_pass[-1].all()), "table": (gt_pass, gen_pass)}


def aggregate(name: str, scored: list[dict[str, Any]], traces: list[Trace]) -> dict[str, float]:
    """Per framework: ``{name}_code_acc`` (pass rate of the final pick), ``{name}_unit_test_acc`` (of the tests it ends
    with, over tasks with a correct program and at least one final test), tokens and executions per task."""
    n = max(len(scored), 1)
    with_tests = [s["table"] for s in scored if s["table"][1].shape[1] > 0]
    test_acc = summarize(with_tests, scales=())["unit_test_acc"] if with_tests else 0.0
    return {
        f"{name}_code_acc": sum(s["pick_pass"] for s in scored) / n,
        f"{name}_unit_test_acc": test_acc,
        f"{name}_final_tests_per_task": float(np.mean([s["table"][1].shape[1] for s in scored])) if scored else 0.0,
        f"{name}_prompt_tokens_per_task": sum(t.prompt_tokens for t in traces) / n,
        f"{name}_completion_tokens_per_task": sum(t.completion_tokens for t in traces) / n,
        f"{name}_executions_per_task": sum(t.executions for t in traces) / n,
        f"{name}_fallbacks_per_task": sum(len(t.fallbacks) for t in traces) / n,
    }


def code_ask(task: Task, templates: Any, step: str = "solutions") -> Ask:
    """The evaluation's one-shot coder prompt (:func:`cure.prompts.code_prompt`, evaluation wording)."""
    user = _compiled(templates.coder_user).render(language="python", special_requirements=EVAL_SPECIAL_REQUIREMENTS,
                                                  problem=task.question)
    return Ask("coder", step, user)


def test_ask(task: Task, templates: Any, step: str = "tests") -> Ask:
    """The evaluation's tester prompt (:func:`cure.prompts.test_prompt`, no public example, as ``eval.no_example``)."""
    return Ask("tester", step, _compiled(templates.tester_user).render(problem=task.question, example_intro=" "))


test_ask.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def roles_only(prompt_dir: str | None) -> bool:
    """Whether the frameworks speak to the models through their coder and tester prompts only.

    The step prompts under ``templates/agentic/`` extend the built-in coder and tester prompts. A model that ships
    its own prompt templates (``rollout.prompt_dir``, e.g. the offline tiny model's ``prompts/``) was trained on
    those two prompts alone, so a step that needs another instruction (a reflection, a repair, a specification, a
    distinguishing input, a judgement) is replaced by the deterministic rule each framework documents."""
    return bool(prompt_dir)


def sample_programs(session: Session, templates: Any, step: str, k: int, extraction: str) -> list[str | None]:
    """``k`` programs sampled from the coder prompt (:func:`code_ask`), as extracted (None where none was)."""
    return [extract_code(r, extraction)[0] for r in session.sample([code_ask(session.task, templates, step)], k)[0]]


def resample(session: Session, templates: Any, step: str, extraction: str) -> str | None:
    """The repair rule of a roles-only model: a fresh program from the coder's own prompt (the execution feedback
    decides whether it is kept, the model does not see it)."""
    session.trace.fell_back(f"{step}: roles only: repair by a fresh sample from the coder prompt")
    return sample_programs(session, templates, step, 1, extraction)[0]
