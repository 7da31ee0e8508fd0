"""MPSC: Multi-Perspective Self-Consistency (Huang et al., 2023, "Enhancing large language models in coding through
multi-perspective self-consistency").

Three perspectives are sampled per task: **solutions** (the coder's one-shot prompt), **specifications** and **tests**
(the tester: the CURE tester's prompt for tests, :file:`templates/agentic/specification.j2` for specifications). They
are the vertices of one graph:

* inter-perspective edges, by execution in the sandbox: solution--test 1 when the solution prints the test's output;
  solution--specification = the share of the test inputs on which the specification accepts what the solution
  printed; specification--test 1 when the specification accepts the test's (input, output) pair;
* intra-perspective consistency, by agreement, as the paper uses it: the initial score ``y`` of a vertex. A solution's is
  the share of solutions that print the same outputs on every test input (structural equivalence); a test's the share
  of the tests with the same input that expect the same output; specifications start equal (1).

Scores follow the paper's optimisation (a ranking regularised by the graph: minimise
``alpha * f' L f + (1 - alpha) * |f - y|^2`` with ``L`` the normalised Laplacian), solved by its iteration
``f <- alpha * T f + (1 - alpha) * y`` with ``T = D^-1/2 W D^-1/2``. The pick is the top-scored solution (the first on
ties); the tests the framework ends with are the tests the pick passes.

Approximations: a specification is a Python ``postcondition(inp, out) -> bool`` (the paper asks for pre- and
post-conditions as assertions); it is judged on the test inputs only. A model that writes no usable specification
leaves that perspective empty and the graph is solutions--tests (recorded as a fallback). Intra-consistency is the
structural-equivalence measure only (the paper compares several measures).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from cure.agentic.common import Ask, Outcome, Session, code_ask, output_key, render, same_output, test_ask
from cure.prompts import extract_code, extract_test

ALPHA = 0.95  # the paper's default weight of the graph term

_HARNESS = """

import json as _cure_json
_cure_pair = _cure_json.loads(input())
print(1 if postcondition(_cure_pair[0], _cure_pair[1]) else 0)
"""


def consistency_graph(sol_test: np.ndarray, sol_spec: np.ndarray, spec_test: np.ndarray) -> np.ndarray:
    """The symmetric weight matrix over vertices [solutions | specifications | tests]."""
    s, t = sol_test.shape
    p = spec_test.shape[0]
    n = s + p + t
    w = np.zeros((n, n))
    w[:s, s + p:] = sol_test
    w[:s, s:s + p] = sol_spec
    w[s:s + p, s + p:] = spec_test
    return w + w.T


def rank(w: np.ndarray, y: np.ndarray, alpha: float = ALPHA, tol: float = 1e-9, max_iter: int = 1000) -> np.ndarray:
    """The paper's iteration ``f <- alpha T f + (1 - alpha) y`` to its fixed point (isolated vertices keep ``(1-alpha) y``)."""
    d = w.sum(axis=1)
    inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    t = inv[:, None] * w * inv[None, :]
    f = y.astype(float).copy()
    for _ in range(max_iter):
        new = alpha * t @ f + (1 - alpha) * y
        if np.abs(new - f).max() < tol:
            return new
        f = new
    return f


def solution_prior(outputs: list[list[str | None]]) -> np.ndarray:
    """Share of solutions printing the same outputs on every input (a program with no output row gets 0)."""
    keys = [tuple(output_key(o) for o in row) if row and any(o is not None for o in row) else None for row in outputs]
    counts = Counter(k for k in keys if k is not None)
    n = max(len(keys), 1)
    return np.array([counts[k] / n if k is not None else 0.0 for k in keys])


def test_prior(tests: list[dict[str, str]]) -> np.ndarray:
    """Share of the tests with the same input that expect the same output."""
    same_in = Counter(output_key(t["input"]) for t in tests)
    same_pair = Counter((output_key(t["input"]), output_key(t["output"])) for t in tests)
    return np.array([same_pair[(output_key(t["input"]), output_key(t["output"]))] / same_in[output_key(t["input"])]
                     for t in tests])


def check_pairs(session: Session, specs: list[str], pairs: list[tuple[str, str]]) -> np.ndarray:
    """bool [specs, pairs]: the specification accepts the (input, output) pair, each check run in the sandbox."""
    if not specs or not pairs:
        return np.zeros((len(specs), len(pairs)), dtype=bool)
    checkers: list[str | None] = [s + _HARNESS for s in specs]
    ran = session.run("mpsc.check_specifications", checkers, [json.dumps(list(p)) + "\n" for p in pairs])
    return np.array([[r.status in ("pass", "fail") and same_output(r.output, "1") for r in row] for row in ran],
                    dtype=bool).reshape(len(specs), len(pairs))


def run(session: Session, templates: Any, k_code: int, k_test: int, k_spec: int, extraction: str = "reference",
        alpha: float = ALPHA, roles: bool = False) -> Outcome:
    """MPSC on one task (module docstring). ``roles``: the models know only their coder and tester prompts
    (:func:`cure.agentic.common.roles_only`): no specification is asked for; the graph is solutions and tests."""
    task = session.task
    asks = [code_ask(task, templates, "mpsc.solutions"), test_ask(task, templates, "mpsc.tests")]
    spec_ask = Ask("tester", "mpsc.specifications", render("specification", problem=task.question))
    code_resp, test_resp = session.sample(asks[:1], k_code)[0], session.sample(asks[1:], k_test)[0]
    spec_resp = session.sample([spec_ask], k_spec)[0] if k_spec and not roles else []
    codes = [extract_code(r, extraction)[0] for r in code_resp]
    tests = [t for t in (extract_test(r, extraction)[0] for r in test_resp) if t is not None]
    specs = [c for c in (extract_code(r, extraction)[0] for r in spec_resp) if c and "def postcondition" in c]
    if roles:
        session.trace.fell_back("mpsc: roles only: no specification perspective; graph of solutions and tests")
    elif not specs:
        session.trace.fell_back("mpsc: no specification extracted; graph of solutions and tests only")
    live = [i for i, c in enumerate(codes) if c is not None]
    if not live:
        session.trace.fell_back("mpsc: no program extracted; no pick")
        return Outcome(None, codes, [], session.trace, {"scores": []})
    if not tests:
        session.trace.fell_back("mpsc: no test extracted; nothing to agree on, the pick is the first program")
    inputs = list(dict.fromkeys(t["input"] for t in tests))
    ran = session.run("mpsc.solutions_on_test_inputs", [codes[i] for i in live], inputs)
    outputs = [[r.output if r.status in ("pass", "fail") else None for r in row] for row in ran]
    where = {x: j for j, x in enumerate(inputs)}
    sol_test = np.array([[same_output(outputs[a][where[t["input"]]], t["output"]) for t in tests] for a in range(len(live))],
                        dtype=float).reshape(len(live), len(tests))
    pairs = list(dict.fromkeys([(x, o) for row in outputs for x, o in zip(inputs, row) if o is not None] +
                               [(t["input"], t["output"]) for t in tests]))
    accepted = check_pairs(session, specs, pairs)
    at = {p: j for j, p in enumerate(pairs)}
    sol_spec = np.array([[np.mean([accepted[p, at[(x, o)]] if o is not None else False for x, o in zip(inputs, outputs[a])])
                          if inputs else 0.0 for p in range(len(specs))] for a in range(len(live))]).reshape(len(live), len(specs))
    spec_test = np.array([[accepted[p, at[(t["input"], t["output"])]] for t in tests] for p in range(len(specs))],
                         dtype=float).reshape(len(specs), len(tests))
    w = consistency_graph(sol_test, sol_spec, spec_test)
    y = np.concatenate([solution_prior(outputs), np.ones(len(specs)), test_prior(tests) if tests else np.zeros(0)])
    f = rank(w, y, alpha)
    best = int(np.argmax(f[:len(live)]))
    pick = codes[live[best]]
    final_tests = [t for j, t in enumerate(tests) if sol_test[best, j]]
    detail = {"solutions": len(live), "specifications": len(specs), "tests": len(tests),
              "scores": [float(v) for v in f], "prior": [float(v) for v in y], "pick": live[best]}
    session.trace.steps.append({"step": "mpsc.rank", **detail})
    return Outcome(pick, codes, final_tests, session.trace, detail)
