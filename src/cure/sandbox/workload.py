"""Synthetic execution workloads with known expected pass tables (for the benchmark and the tests).

Each task asks for ``f(a, b) = a * m + b`` (``m`` differs per task) on input ``"a b"``. Programs are written from
kinds whose behaviour is known in advance, so the exact status of every cell is computed here without running
anything (:func:`expected_status`), and the sandbox's tables can be checked cell by cell:

* ``right``, ``right_exit`` (prints, then ``sys.exit(0)``), ``right_stdin`` (reads ``sys.stdin``): pass on correct tests
* ``wrong`` (off by one), ``partial`` (right only when ``a`` is even), ``exit_first`` (exits before printing)
* ``crash`` (raises), ``print_crash`` (prints, then raises: the output is lost) -> error
* ``heavy``: right after ~``heavy_s`` seconds of pure CPU work (a false timeout if it is ever marked timeout)
* ``hang``: right, except that it never terminates when ``a % 4 == 3`` -> timeout there

Generated tests are half correct, half with a wrong expected output.
"""

from __future__ import annotations

import random
from typing import Any

KINDS_OVERHEAD = ["right", "right_exit", "right_stdin", "wrong", "partial", "exit_first", "crash", "print_crash"]

_BODY = {
    "right": "a, b = map(int, input().split())\nprint(a * {m} + b)\n",
    "right_exit": "import sys\na, b = map(int, input().split())\nprint(a * {m} + b)\nsys.exit(0)\n",
    "right_stdin": "import sys\na, b = map(int, sys.stdin.read().split())\nsys.stdout.write(str(a * {m} + b) + '\\n')\n",
    "wrong": "a, b = map(int, input().split())\nprint(a * {m} + b + 1)\n",
    "partial": "a, b = map(int, input().split())\nprint(a * {m} + b if a % 2 == 0 else a + b)\n",
    "exit_first": "import sys\na, b = map(int, input().split())\nsys.exit(0)\nprint(a * {m} + b)\n",
    "crash": "a, b = map(int, input().split())\nraise ValueError('boom')\n",
    "print_crash": "a, b = map(int, input().split())\nprint(a * {m} + b)\nraise RuntimeError('late')\n",
    "heavy": (
        "a, b = map(int, input().split())\ns = 0\nfor i in range({loops}):\n    s += i & 7\n"
        "print(a * {m} + b if s >= 0 else 0)\n"
    ),
    "hang": "a, b = map(int, input().split())\nwhile a % 4 == 3:\n    pass\nprint(a * {m} + b)\n",
}

# Iterations of the heavy loop per second of CPU (CPython 3.11, one core of a typical x86 server).
LOOPS_PER_SECOND = 14_000_000


def program(kind: str, m: int, heavy_s: float = 0.3) -> str:
    return _BODY[kind].format(m=m, loops=int(heavy_s * LOOPS_PER_SECOND))


def _outcome(kind: str, m: int, a: int, b: int) -> tuple[str, str | None]:
    """What the program of ``kind`` does on input (a, b): ("ok", output) | ("error", None) | ("timeout", None)."""
    right = str(a * m + b)
    if kind in ("right", "right_exit", "right_stdin", "heavy"):
        return "ok", right
    if kind == "hang":
        return ("timeout", None) if a % 4 == 3 else ("ok", right)
    if kind == "wrong":
        return "ok", str(a * m + b + 1)
    if kind == "partial":
        return "ok", right if a % 2 == 0 else str(a + b)
    if kind == "exit_first":
        return "ok", ""
    return "error", None


def expected_status(kind: str, m: int, test: dict[str, str]) -> str:
    a, b = map(int, test["input"].split())
    what, out = _outcome(kind, m, a, b)
    if what != "ok":
        return what
    return "pass" if " ".join(out.split()) == " ".join(test["output"].split()) else "fail"


def make_rollouts(
    n_tasks: int,
    kinds: list[str],
    n_programs: int = 16,
    n_gt: int = 8,
    n_gen: int = 16,
    heavy_s: float = 0.3,
    seed: int = 0,
    distinct_inputs: int = 0,
) -> tuple[list[dict[str, Any]], list[list[list[str]]], list[list[str]]]:
    """Rollout records, their expected status tables, and the program kind of every row.

    ``distinct_inputs`` > 0: the tests of a task draw their inputs from that many (a, b) pairs (in turn), as a
    tester that writes the same input several times does; 0: every test its own random input."""
    rng = random.Random(seed)
    rollouts, expected, row_kinds = [], [], []
    for t in range(n_tasks):
        m = 3 + t
        # A unique comment per program keeps the executor from sharing runs between identical programs.
        kinds_t = [kinds[i % len(kinds)] for i in range(n_programs)]
        codes = [f"# task {t} program {i}\n" + program(k, m, heavy_s) for i, k in enumerate(kinds_t)]

        pool = [(rng.randint(0, 999), rng.randint(0, 999)) for _ in range(distinct_inputs)]
        drawn = iter(range(n_gt + n_gen))

        def test(correct: bool, m: int = m, pool: list = pool, drawn: Any = drawn) -> dict[str, str]:
            a, b = pool[next(drawn) % len(pool)] if pool else (rng.randint(0, 999), rng.randint(0, 999))
            return {"input": f"{a} {b}\n", "output": f"{a * m + b + (0 if correct else 7)}\n"}

        gt = [test(True) for _ in range(n_gt)]
        gen = [test(i % 2 == 0) for i in range(n_gen)]
        rollouts.append(
            {"task_id": f"bench/{t}", "codes": codes, "gt_tests": gt, "tests": gen, "time_limit_s": 1.0}
        )
        expected.append([[expected_status(k, m, c) for c in gt + gen] for k in kinds_t])
        row_kinds.append(kinds_t)
    return rollouts, expected, row_kinds
