"""AlphaCodium (Ridnik et al., 2024, "Code generation with AlphaCodium: from prompt engineering to flow engineering").

The flow, one task at a time, every program run in the sandbox:

1. **Problem reflection** (coder, :file:`templates/agentic/reflection.j2`): goal, inputs, outputs, rules, edge cases.
2. **Public-test reasoning** (coder, ``public_tests.j2``): why each public example's input gives its output.
3. **Candidate solutions and ranking** (coder, ``solution.j2``: the one-shot prompt with the two notes above):
   ``k_code`` candidates, ranked by the public tests they pass (the first on ties).
4. **AI-generated tests** (the tester, with the CURE tester's prompt): ``k_test`` tests.
5. **Initial solution**: the top-ranked candidate.
6. **Iterations on the public tests**: while the solution fails a public test, the coder gets the repair prompt
   (``fix.j2``, with what the program printed) for the first failing one; at most ``iterations`` repairs.
7. **Iterations on the AI tests, with anchors**: the anchors are the public tests and every AI test the solution
   passes. For each AI test it fails, at most ``iterations`` repairs; a repair is kept only if it still passes
   every anchor (else the solution goes back), and a test it comes to pass becomes an anchor.

The pick is the solution at the end; the tests the framework ends with are the AI tests kept as anchors.

Approximations: AlphaCodium ranks natural-language solution ideas with the model and writes code for the chosen
one; here candidates are programs and the ranking is by the public tests (execution, not the model's judgement).
A response with no program leaves the solution as it was, and when no candidate comes from the prompt with the
notes, the candidates come from the plain one-shot coder prompt (both recorded as fallbacks). Reflection and test reasoning are
passed on as written, whatever their quality.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cure.agentic.common import (
    Ask,
    Outcome,
    Ran,
    Session,
    fix_ask,
    public_tests,
    render,
    resample,
    same_output,
    sample_programs,
    test_ask,
)
from cure.prompts import EVAL_SPECIAL_REQUIREMENTS, extract_code, extract_test


def _ran_on(session: Session, step: str, code: str, test: dict[str, str]) -> Ran:
    return session.run(step, [code], [test["input"]])[0][0]


def _ok(ran: Ran, test: dict[str, str]) -> bool:
    return ran.status in ("pass", "fail") and same_output(ran.output, test["output"])


def passes_all(session: Session, step: str, code: str, tests: list[dict[str, str]]) -> bool:
    return bool(session.passes(step, [code], tests).all()) if tests else True


def repair(session: Session, code: str, test: dict[str, str], anchors: list[dict[str, str]], iterations: int,
           step: str, extraction: str, templates: Any = None, roles: bool = False) -> tuple[str, bool]:
    """Up to ``iterations`` repairs of ``code`` on ``test``, each kept only if it passes every anchor; returns
    (the solution, whether it now passes ``test``). ``roles``: a repair is a fresh sample from the coder prompt."""
    for _ in range(iterations):
        ran = _ran_on(session, f"{step}.run", code, test)
        if _ok(ran, test):
            return code, True
        if roles:
            new = resample(session, templates, f"{step}.resample", extraction)
        else:
            new, _ = extract_code(session.sample([fix_ask(session.task, code, test, ran, f"{step}.fix")])[0][0], extraction)
        if new is None:
            session.trace.fell_back(f"{step}: repair with no program; solution kept")
            continue
        if passes_all(session, f"{step}.anchors", new, anchors):
            code = new
        else:
            session.trace.fell_back(f"{step}: repair broke an anchor test; solution reverted")
    return code, _ok(_ran_on(session, f"{step}.run", code, test), test)


def _candidates_with_notes(session: Session, templates: Any, public: list[dict[str, str]], k_code: int,
                           extraction: str) -> list[str | None]:
    """Steps 1-3: reflection, public-test reasoning, then candidates from the prompt with both notes."""
    task = session.task
    reflection = session.sample([Ask("coder", "alphacodium.reflection", render("reflection", problem=task.question))])[0][0]
    reasoning = session.sample([Ask("coder", "alphacodium.public_test_reasoning", render(
        "public_tests", problem=task.question, reflection=reflection, tests=public))])[0][0] if public else ""
    solution_user = render("solution", language="python", special_requirements=EVAL_SPECIAL_REQUIREMENTS,
                           problem=task.question, reflection=reflection, test_reasoning=reasoning)
    candidates = [extract_code(r, extraction)[0]
                  for r in session.sample([Ask("coder", "alphacodium.candidates", solution_user)], k_code)[0]]
    if all(c is None for c in candidates):  # a model that cannot use the notes: the plain one-shot prompt
        session.trace.fell_back("alphacodium: no program from the prompt with notes; candidates from the coder prompt")
        candidates = sample_programs(session, templates, "alphacodium.candidates_plain", k_code, extraction)
    return candidates


def run(session: Session, templates: Any, k_code: int, k_test: int, iterations: int = 2,
        extraction: str = "reference", roles: bool = False) -> Outcome:
    """AlphaCodium on one task (module docstring). ``roles``: the models know only their coder and tester prompts
    (:func:`cure.agentic.common.roles_only`): no reflection or test reasoning is asked for, the candidates come from
    the coder prompt and a repair is a fresh sample from it (kept under the same anchor rule)."""
    task = session.task
    public = public_tests(task)
    if roles:
        session.trace.fell_back("alphacodium: roles only: no reflection or test reasoning; candidates from the coder prompt")
        candidates = sample_programs(session, templates, "alphacodium.candidates", k_code, extraction)
    else:
        candidates = _candidates_with_notes(session, templates, public, k_code, extraction)
    ai_tests = [t for t in (extract_test(r, extraction)[0]
                            for r in session.sample([test_ask(task, templates, "alphacodium.ai_tests")], k_test)[0])
                if t is not None] if k_test else []
    live = [i for i, c in enumerate(candidates) if c is not None]
    if not live:
        session.trace.fell_back("alphacodium: no candidate program extracted; no pick")
        return Outcome(None, candidates, [], session.trace, {"ranking": []})
    votes = session.passes("alphacodium.rank_on_public_tests", [candidates[i] for i in live], public).sum(axis=1) \
        if public else np.zeros(len(live))
    order = sorted(range(len(live)), key=lambda k: (-votes[k], k))
    code = candidates[live[order[0]]]
    assert code is not None
    anchors: list[dict[str, str]] = []
    for test in public:
        code, ok = repair(session, code, test, anchors, iterations, "alphacodium.public_iteration", extraction,
                          templates, roles)
        if ok:
            anchors.append(test)
    kept: list[dict[str, str]] = []
    if ai_tests:
        passed = session.passes("alphacodium.ai_tests_initial", [code], ai_tests)[0]
        kept = [t for t, p in zip(ai_tests, passed) if p]
        anchors += kept
        for test, p in zip(ai_tests, passed):
            if p:
                continue
            code, ok = repair(session, code, test, anchors, iterations, "alphacodium.ai_test_iteration", extraction,
                              templates, roles)
            if ok:
                anchors.append(test)
                kept.append(test)
    detail = {"ranking": [live[k] for k in order], "public_votes": [int(votes[k]) for k in range(len(live))],
              "ai_tests": len(ai_tests), "anchors_public": sum(1 for a in anchors if a in public),
              "anchors_ai": len(kept)}
    session.trace.steps.append({"step": "alphacodium.final", **detail})
    return Outcome(code, candidates, kept, session.trace, detail)
