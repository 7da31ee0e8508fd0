"""Synthetic task families for the offline demo: small string/integer tasks a ~1-5 M-parameter model can learn.

Every family is parameterised (constants, an operation, a separator...) and its question states the parameters
in digits or quoted characters that the program must copy, so solving a task needs reading its question. The
families are designed so that trivial generated tests cannot pass as discriminative: the output never equals the
input, and the typical wrong program (a neighbouring constant, another operation of the family) prints something
else on almost every input.

Splits are by parameter combination, not by instance: a combination is held out when a hash of
``(family, params)`` falls in the held-out share, whatever the seed. So held-out tasks (``split="heldout"``) are
combinations that no train-split task (and so no warm start) ever shows, drawn from the same families and ranges.

Reference programs (:func:`reference_solution`) and reference tests (:func:`reference_test`) exist for the tiny
model's warm start and for tests of this module; the RL loop must never use them as rewards.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cure.tasks import Task

Params = tuple[Any, ...]

HELDOUT_PERCENT = 20
N_GT_TESTS = 10
SYMBOLS = "-+*#:.,_=/"
LETTERS = string.ascii_lowercase
# Inputs of the public example and of reference tests come from a few easy values, so a tiny tester can learn
# to compute their outputs from the question alone; ground-truth tests use wide, random inputs.
SMALL_WORDS = ("ab", "x", "abc", "yz")


@dataclass(frozen=True)
class Family:
    """One task family: its parameter space and, for a parameter tuple, the question, program and semantics."""

    name: str
    space: Callable[[], list[Params]]
    question: Callable[[Params], str]
    program: Callable[[Params], str]
    solve: Callable[[Params, str], str]  # stdin text -> expected stdout text (raises on malformed input)
    inputs: Callable[[random.Random, bool], str]  # (rng, small) -> stdin text; small: a few easy values
    mutants: Callable[[Params], list[Params]]  # parameters of typical wrong programs (all in the space)


def _near(value: int, lo: int, hi: int) -> list[int]:
    return [v for v in (value - 1, value + 1) if lo <= v <= hi]


def _word(rng: random.Random, small: bool) -> str:
    if small:
        return rng.choice(SMALL_WORDS)
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7)))


def _int_line(text: str) -> int:
    return int(text.strip())


# --- affine: Read n. Print n*A+B / n*A-B / (n+A)*B ---------------------------------------------------------

_AFFINE_FORMS = ("n*{A}+{B}", "n*{A}-{B}", "(n+{A})*{B}")


def _affine_expr(p: Params) -> str:
    form, a, b = p
    return _AFFINE_FORMS[form].format(A=a, B=b)


def _affine_solve(p: Params, text: str) -> str:
    form, a, b = p
    n = _int_line(text)
    return str((n * a + b, n * a - b, (n + a) * b)[form]) + "\n"


AFFINE = Family(
    name="affine",
    space=lambda: [(f, a, b) for f in range(3) for a in range(2, 10) for b in range(2, 10)],
    question=lambda p: f"Read an integer n. Print {_affine_expr(p)}.",
    program=lambda p: f"n = int(input())\nprint({_affine_expr(p)})",
    solve=_affine_solve,
    inputs=lambda rng, small: f"{rng.choice((1, 10)) if small else rng.randint(0, 999)}\n",
    mutants=lambda p: [(f, p[1], p[2]) for f in range(3) if f != p[0]]
    + [(p[0], a, p[2]) for a in _near(p[1], 2, 9)]
    + [(p[0], p[1], b) for b in _near(p[2], 2, 9)],
)


# --- two_ints: Read a and b. Print a*A+b*B / a*A-b*B ------------------------------------------------------

_TWO_FORMS = ("a*{A}+b*{B}", "a*{A}-b*{B}")


def _two_expr(p: Params) -> str:
    form, a, b = p
    return _TWO_FORMS[form].format(A=a, B=b)


def _two_solve(p: Params, text: str) -> str:
    form, a, b = p
    x, y = (int(t) for t in text.split())
    return str(x * a + y * b if form == 0 else x * a - y * b) + "\n"


TWO_INTS = Family(
    name="two_ints",
    space=lambda: [(f, a, b) for f in range(2) for a in range(2, 10) for b in range(2, 10)],
    question=lambda p: f"Read two integers a and b on one line. Print {_two_expr(p)}.",
    program=lambda p: f"a, b = map(int, input().split())\nprint({_two_expr(p)})",
    solve=_two_solve,
    inputs=lambda rng, small: (
        f"{rng.choice((1, 10))} {rng.choice((0, 1))}\n" if small else f"{rng.randint(0, 99)} {rng.randint(1, 99)}\n"
    ),
    mutants=lambda p: [(1 - p[0], p[1], p[2]), (p[0], p[2], p[1])]
    + [(p[0], a, p[2]) for a in _near(p[1], 2, 9)]
    + [(p[0], p[1], b) for b in _near(p[2], 2, 9)],
)


# --- list_op: Read integers. Print the largest / smallest / sum of them times A plus B ---------------------

_LIST_OPS = (("largest", "max"), ("smallest", "min"), ("sum", "sum"))


def _list_solve(p: Params, text: str) -> str:
    op, a, b = p
    values = [int(t) for t in text.split()]
    if not values:
        raise ValueError("empty list")
    return str((max, min, sum)[op](values) * a + b) + "\n"


def _list_inputs(rng: random.Random, small: bool) -> str:
    k = rng.randint(2, 3) if small else rng.randint(3, 6)
    return " ".join(str(v) for v in rng.sample(range(0, 3) if small else range(0, 100), k)) + "\n"


LIST_OP = Family(
    name="list_op",
    space=lambda: [(op, a, b) for op in range(3) for a in range(2, 10) for b in range(1, 10)],
    question=lambda p: f"Read a line of integers. Print the {_LIST_OPS[p[0]][0]} of them times {p[1]} plus {p[2]}.",
    program=lambda p: f"v = list(map(int, input().split()))\nprint({_LIST_OPS[p[0]][1]}(v)*{p[1]}+{p[2]})",
    solve=_list_solve,
    inputs=_list_inputs,
    mutants=lambda p: [(op, p[1], p[2]) for op in range(3) if op != p[0]]
    + [(p[0], a, p[2]) for a in _near(p[1], 2, 9)]
    + [(p[0], p[1], b) for b in _near(p[2], 1, 9)],
)


# --- repeat: Read a word. Print it K times separated by C -------------------------------------------------


def _repeat_solve(p: Params, text: str) -> str:
    k, c = p
    return c.join([text.rstrip("\n")] * k) + "\n"


REPEAT = Family(
    name="repeat",
    space=lambda: [(k, c) for k in range(2, 8) for c in SYMBOLS],
    question=lambda p: f"Read a word s. Print s repeated {p[0]} times, separated by '{p[1]}'.",
    program=lambda p: f"s = input()\nprint('{p[1]}'.join([s]*{p[0]}))",
    solve=_repeat_solve,
    inputs=lambda rng, small: _word(rng, small) + "\n",
    mutants=lambda p: [(k, p[1]) for k in _near(p[0], 2, 7)] + [(p[0], c) for c in SYMBOLS[:3] if c != p[1]],
)


# --- word_suffix: Read a word. Print it (reversed / in upper case / as is) followed by W ---------------------

_WORD_OPS = (("s reversed", "s[::-1]"), ("s in upper case", "s.upper()"), ("s", "s"))


def _suffix_solve(p: Params, text: str) -> str:
    op, w = p
    s = text.rstrip("\n")
    return (s[::-1], s.upper(), s)[op] + w + "\n"


WORD_SUFFIX = Family(
    name="word_suffix",
    space=lambda: [(op, x + y) for op in range(3) for x in LETTERS for y in LETTERS],
    question=lambda p: f"Read a word s. Print {_WORD_OPS[p[0]][0]} followed by '{p[1]}'.",
    program=lambda p: f"s = input()\nprint({_WORD_OPS[p[0]][1]}+'{p[1]}')",
    solve=_suffix_solve,
    inputs=lambda rng, small: _word(rng, small) + "\n",
    mutants=lambda p: [(op, p[1]) for op in range(3) if op != p[0]] + [(p[0], p[1][::-1] if p[1][0] != p[1][1] else p[1][0] + "z")],
)


# --- stretch: Read a word. Print every letter K times, then C ----------------------------------------------


def _stretch_solve(p: Params, text: str) -> str:
    k, c = p
    return "".join(ch * k for ch in text.rstrip("\n")) + c + "\n"


STRETCH = Family(
    name="stretch",
    space=lambda: [(k, c) for k in range(2, 6) for c in SYMBOLS],
    question=lambda p: f"Read a word s. Print every letter of s {p[0]} times, then '{p[1]}'.",
    program=lambda p: f"s = input()\nprint(''.join(c*{p[0]} for c in s)+'{p[1]}')",
    solve=_stretch_solve,
    inputs=lambda rng, small: _word(rng, small) + "\n",
    mutants=lambda p: [(k, p[1]) for k in _near(p[0], 2, 5)] + [(p[0], c) for c in SYMBOLS[:3] if c != p[1]],
)


# --- range_step: Read n. Print K numbers n, n+A, n+2*A, ... ---------------------------------------------------


def _range_solve(p: Params, text: str) -> str:
    a, k = p
    n = _int_line(text)
    return " ".join(str(n + a * i) for i in range(k)) + "\n"


RANGE_STEP = Family(
    name="range_step",
    space=lambda: [(a, k) for a in range(1, 10) for k in range(2, 7)],
    question=lambda p: f"Read an integer n. Print {p[1]} numbers separated by spaces: n, n+{p[0]}, n+2*{p[0]} and so on.",
    program=lambda p: f"n = int(input())\nprint(*[n+{p[0]}*i for i in range({p[1]})])",
    solve=_range_solve,
    inputs=lambda rng, small: f"{rng.choice((0, 1, 10)) if small else rng.randint(0, 99)}\n",
    mutants=lambda p: [(a, p[1]) for a in _near(p[0], 1, 9)] + [(p[0], k) for k in _near(p[1], 2, 6)],
)


# --- letters: Read n. Print the letter c repeated n+K times ---------------------------------------------------


def _letters_solve(p: Params, text: str) -> str:
    c, k = p
    n = _int_line(text)
    if n < 0:
        raise ValueError("n must not be negative")
    return c * (n + k) + "\n"


LETTERS_FAMILY = Family(
    name="letters",
    space=lambda: [(c, k) for c in LETTERS for k in range(1, 6)],
    question=lambda p: f"Read an integer n. Print the letter '{p[0]}' repeated n+{p[1]} times.",
    program=lambda p: f"n = int(input())\nprint('{p[0]}'*(n+{p[1]}))",
    solve=_letters_solve,
    inputs=lambda rng, small: f"{rng.randint(0, 2) if small else rng.randint(0, 30)}\n",
    mutants=lambda p: [(p[0], k) for k in _near(p[1], 1, 5)] + [("z" if p[0] != "z" else "a", p[1])],
)


FAMILIES: dict[str, Family] = {
    f.name: f for f in (AFFINE, TWO_INTS, LIST_OP, REPEAT, WORD_SUFFIX, STRETCH, RANGE_STEP, LETTERS_FAMILY)
}
SPLITS = ("train", "heldout")


def split_of(family: str, params: Params) -> str:
    """The split a parameter combination belongs to: a stable hash, independent of any seed."""
    digest = hashlib.sha256(f"{family}:{params!r}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT else "train"


def parameter_space(family: str, split: str) -> list[Params]:
    """All parameter combinations of ``family`` in ``split``, in a fixed order."""
    return [p for p in _family(family).space() if split_of(family, p) == split]


def _family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown synthetic family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def _distinct_inputs(fam: Family, p: Params, rng: random.Random, n: int, small: bool, avoid: Sequence[str]) -> list[str]:
    seen = set(avoid)
    out: list[str] = []
    for _ in range(50 * n):
        x = fam.inputs(rng, small)
        if x not in seen:
            seen.add(x)
            out.append(x)
            if len(out) == n:
                return out
    raise RuntimeError(f"family {fam.name} {p}: could not draw {n} distinct inputs")  # a family design bug


def make_task(family: str, params: Params, rng: random.Random, task_id: str, n_tests: int = N_GT_TESTS) -> Task:
    """One task instance of ``family`` with ``params``: the question, one public example, ``n_tests`` tests."""
    fam = _family(family)
    example = _distinct_inputs(fam, params, rng, 1, True, [])
    tests = _distinct_inputs(fam, params, rng, n_tests, False, example)
    return Task(
        task_id=task_id,
        source=f"synthetic/{family}",
        question=fam.question(params),
        test_time_limit=1.0,
        example_input=example,
        example_output=[fam.solve(params, x) for x in example],
        test_input=tests,
        test_output=[fam.solve(params, x) for x in tests],
        family=family,
        params=list(params),
    )


def generate_tasks(n: int, seed: int, split: str = "train", families: list[str] | None = None) -> list[Task]:
    """``n`` tasks of ``split``, spread evenly over ``families`` (default: all), deterministic given ``seed``.

    Each family cycles through its split's parameter combinations in a seed-shuffled order, so a combination
    repeats only after all others were used; every task gets its own tests. Task ids are
    ``synthetic/<family>/<split>/s<seed>/<index>``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    names = list(families) if families else list(FAMILIES)
    for name in names:
        _family(name)
    rng = random.Random(f"cure-synthetic:{seed}:{split}")
    cycles = {}
    for name in names:
        space = parameter_space(name, split)
        rng.shuffle(space)
        cycles[name] = itertools.cycle(space)
    tasks = []
    for i in range(n):
        name = names[i % len(names)]
        tasks.append(make_task(name, next(cycles[name]), rng, f"synthetic/{name}/{split}/s{seed}/{i}"))
    return tasks


def _task_params(task: Task | dict[str, Any]) -> tuple[Family, Params]:
    data = task if isinstance(task, dict) else {**task.model_dump(), **(task.model_extra or {})}
    family, params = data.get("family"), data.get("params")
    if family is None or params is None:
        raise ValueError(
            f"task {data.get('task_id')!r} has no 'family'/'params' fields: only tasks made by "
            "cure.synthetic.generate_tasks (and written with their extra fields) have reference solutions"
        )
    return _family(family), tuple(params)


def reference_solution(task: Task | dict[str, Any]) -> str:
    """The reference program (reads stdin with input(), writes with print()). For warm start and tests only."""
    fam, p = _task_params(task)
    return fam.program(p)


def wrong_solutions(task: Task | dict[str, Any]) -> list[str]:
    """Typical wrong programs for the task (a neighbouring constant, another operation of the family).

    For measuring whether tests are discriminative; each differs from the reference on almost every input.
    """
    fam, p = _task_params(task)
    return [fam.program(m) for m in fam.mutants(p) if m != p]


def expected_output(task: Task | dict[str, Any], test_input: str) -> str | None:
    """What the reference program prints for ``test_input`` (computed in-process), or None for malformed input."""
    fam, p = _task_params(task)
    try:
        return fam.solve(p, test_input)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def outputs_match(actual: str, expected: str) -> bool:
    """Whitespace-normalised comparison, as the execute stage compares outputs."""
    return actual.split() == expected.split()


def reference_test(task: Task | dict[str, Any], rng: random.Random) -> dict[str, str]:
    """A correct, discriminative test with a small, easy input (the kind a tiny tester can compute).

    Its output differs from its input, and it rejects every wrong program of :func:`wrong_solutions` when some
    small input does (tried first), otherwise at least one of them.
    """
    fam, p = _task_params(task)
    wrong = [m for m in fam.mutants(p) if m != p]
    fallback = None
    for _ in range(60):
        x = fam.inputs(rng, True)
        out = fam.solve(p, x)
        rejected = sum(not outputs_match(fam.solve(m, x), out) for m in wrong)
        if out.split() == x.split() or rejected == 0:
            continue
        if rejected == len(wrong):
            return {"input": x, "output": out}
        fallback = fallback or {"input": x, "output": out}
    if fallback is None:
        raise RuntimeError(f"family {fam.name} {p}: no discriminative small input found")  # a family design bug
    return fallback


def wrong_test(task: Task | dict[str, Any], rng: random.Random) -> dict[str, str]:
    """A plausible but incorrect test: a :func:`reference_test` input with the output of a typical wrong program.

    For a tiny model's warm start (a tester that sometimes computes a neighbouring task, as base models do); it
    fails the reference program and passes the wrong program it came from.
    """
    fam, p = _task_params(task)
    test = reference_test(task, rng)
    outputs = [fam.solve(m, test["input"]) for m in fam.mutants(p) if m != p]
    outputs = [o for o in outputs if not outputs_match(o, test["output"])]
    if not outputs:
        raise RuntimeError(f"family {fam.name} {p}: no wrong program differs on {test['input']!r}")  # a design bug
    return {"input": test["input"], "output": rng.choice(outputs)}
