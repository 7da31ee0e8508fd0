"""S* (Li et al., 2025, "S*: Test time scaling for code generation").

Two stages, every program run in the sandbox:

1. **Generation.** ``k_code`` parallel samples (the coder's one-shot prompt); each is debugged sequentially with
   execution feedback on the public tests: while it fails one, the coder gets the repair prompt (``fix.j2``, with what
   the program printed) for the first failing test, at most ``rounds`` times; a response with no program ends that
   sample's debugging.
2. **Selection by adaptive input synthesis.** The candidates are the debugged samples that pass every public test
   (all samples when none does), one per distinct program text. A knockout tournament: the
   incumbent meets each challenger in turn. For a pair, the tester writes an input that tells them apart
   (``distinguish.j2``); both run on it; when they print different outputs the tester judges which output is right
   (``judge.j2``), and the winner stays.

Fallbacks (each recorded): no input extracted, or both print the same output, keeps the incumbent; a judgement with
no ``Answer: A/B`` line is decided by agreement: the output more of the other candidates print on that input (the
incumbent on ties). The tests the framework ends with are the synthesised inputs with the output judged right.

Approximations: S* first groups candidates by their outputs on model-written inputs and compares group
representatives; here every distinct program competes (more matches, same protocol per match), and the tester (the
verifier) writes the inputs and judges, where S* uses one model for both roles.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from cure.agentic.common import (
    Ask,
    Outcome,
    Session,
    extract_answer,
    extract_input,
    fix_ask,
    output_key,
    public_tests,
    render,
    resample,
    same_output,
    sample_programs,
    test_ask,
)
from cure.prompts import extract_code, extract_test


def debug(session: Session, code: str, public: list[dict[str, str]], rounds: int, extraction: str,
          templates: Any = None, roles: bool = False) -> str:
    """Sequential debugging of one sample on the public tests (stage 1); ``roles``: each round is a fresh sample from
    the coder prompt instead of a repair."""
    for _ in range(rounds + 1):
        if not public:
            return code
        ran = session.run("sstar.debug.run", [code], [t["input"] for t in public])[0]
        failing = [(t, r) for t, r in zip(public, ran) if not (r.status in ("pass", "fail") and same_output(r.output, t["output"]))]
        if not failing or _ == rounds:
            return code
        if roles:
            new = resample(session, templates, "sstar.debug.resample", extraction)
        else:
            text = session.sample([fix_ask(session.task, code, failing[0][0], failing[0][1], "sstar.debug.fix")])[0][0]
            new = extract_code(text, extraction)[0]
        if new is None:
            session.trace.fell_back("sstar: debug response with no program; sample kept")
            return code
        code = new
    return code


def compare(session: Session, a: str, b: str, others: list[str], extraction: str) -> tuple[int, dict[str, str] | None]:
    """One match: 0 if ``a`` (the incumbent) wins, 1 if ``b``; with the test it settled on (input, judged output)."""
    task = session.task
    text = session.sample([Ask("tester", "sstar.distinguishing_input",
                               render("distinguish", problem=task.question, code_a=a, code_b=b))])[0][0]
    x = extract_input(text)
    if x is None:
        session.trace.fell_back("sstar: no distinguishing input extracted; incumbent kept")
        return 0, None
    ran = session.run("sstar.run_pair", [a, b] + others, [x])
    out_a, out_b = ran[0][0].output, ran[1][0].output
    if same_output(out_a, out_b) or (out_a is None and out_b is None):
        session.trace.fell_back("sstar: the input does not tell the pair apart; incumbent kept")
        return 0, None
    if out_a is None or out_b is None:  # one crashed or timed out on a valid input: the other wins
        win = 0 if out_a is not None else 1
        return win, {"input": x, "output": [out_a, out_b][win]}
    verdict = extract_answer(session.sample([Ask("tester", "sstar.judge", render(
        "judge", problem=task.question, input=x, output_a=out_a, output_b=out_b))])[0][0])
    if verdict is None:
        win = by_agreement(session, [row[0].output for row in ran[2:]], out_a, out_b,
                           "sstar: judgement with no answer; decided by the other candidates' outputs")
    else:
        win = 0 if verdict == "A" else 1
    return win, {"input": x, "output": [out_a, out_b][win]}


def by_agreement(session: Session, others: list[str | None], out_a: str, out_b: str, why: str) -> int:
    """The output more of the other candidates print wins (the incumbent, 0, on ties); recorded as a fallback."""
    votes = Counter(output_key(o) for o in others if o is not None)
    session.trace.fell_back(why)
    return 1 if votes[output_key(out_b)] > votes[output_key(out_a)] else 0


def compare_on_tests(session: Session, a: str, b: str, others: list[str],
                     tests: list[dict[str, str]]) -> tuple[int, dict[str, str] | None]:
    """One match for a roles-only tester: the inputs are those of the tester's own tests (sampled once per task);
    the first on which the pair prints different outputs decides it, and the judged output is the one the tester's
    tests expect on that input (most of those tests), else the one more of the other candidates print."""
    inputs = list(dict.fromkeys(t["input"] for t in tests))
    if not inputs:
        session.trace.fell_back("sstar: roles only: no tester test to draw an input from; incumbent kept")
        return 0, None
    ran = session.run("sstar.run_pair_on_tester_inputs", [a, b] + others, inputs)
    for j, x in enumerate(inputs):
        out_a, out_b = ran[0][j].output, ran[1][j].output
        if same_output(out_a, out_b) or (out_a is None and out_b is None):
            continue
        if out_a is None or out_b is None:
            win = 0 if out_a is not None else 1
            return win, {"input": x, "output": [out_a, out_b][win]}
        expected = Counter(output_key(t["output"]) for t in tests if t["input"] == x)
        va, vb = expected[output_key(out_a)], expected[output_key(out_b)]
        if va != vb:
            win = 0 if va > vb else 1
            session.trace.fell_back("sstar: roles only: judged by the output the tester's tests expect")
        else:
            win = by_agreement(session, [row[j].output for row in ran[2:]], out_a, out_b,
                               "sstar: roles only: no tester test expects either output; decided by the other "
                               "candidates' outputs")
        return win, {"input": x, "output": [out_a, out_b][win]}
    session.trace.fell_back("sstar: roles only: no tester input tells the pair apart; incumbent kept")
    return 0, None


def run(session: Session, templates: Any, k_code: int, rounds: int = 2, extraction: str = "reference",
        roles: bool = False, k_test: int = 0) -> Outcome:
    """S* on one task (module docstring). ``roles``: the models know only their coder and tester prompts
    (:func:`cure.agentic.common.roles_only`): debugging resamples from the coder prompt, and the matches draw their
    inputs and judged outputs from ``k_test`` tests of the tester's own prompt (:func:`compare_on_tests`)."""
    task = session.task
    public = public_tests(task)
    samples = sample_programs(session, templates, "sstar.samples", k_code, extraction)
    debugged: list[str | None] = [debug(session, c, public, rounds, extraction, templates, roles) if c is not None else None
                                  for c in samples]
    live = [c for c in debugged if c is not None]
    if not live:
        session.trace.fell_back("sstar: no program extracted; no pick")
        return Outcome(None, debugged, [], session.trace, {"candidates": 0})
    if public:
        ok = session.passes("sstar.filter_on_public_tests", live, public).all(axis=1)
        passing = [c for c, p in zip(live, ok) if p]
        if not passing:
            session.trace.fell_back("sstar: no sample passes the public tests; all samples compete")
        live = passing or live
    pool = list(dict.fromkeys(live))  # one per distinct program
    incumbent, tests, matches = pool[0], [], []
    tester_tests = []
    if roles and len(pool) > 1:
        tester_tests = [t for t in (extract_test(r, extraction)[0] for r in session.sample(
            [test_ask(task, templates, "sstar.tester_tests")], k_test)[0]) if t is not None] if k_test else []
    for challenger in pool[1:]:
        others = [c for c in pool if c is not incumbent and c is not challenger]
        win, test = compare_on_tests(session, incumbent, challenger, others, tester_tests) if roles else \
            compare(session, incumbent, challenger, others, extraction)
        matches.append(win)
        if test is not None:
            tests.append(test)
        if win == 1:
            incumbent = challenger
    detail = {"candidates": len(pool), "matches": matches}
    session.trace.steps.append({"step": "sstar.final", **detail})
    return Outcome(incumbent, debugged, tests, session.trace, detail)
