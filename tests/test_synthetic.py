"""Synthetic task families: determinism, held-out split, reference programs and tests, discriminative power.

Reference and mutated programs are trusted project code, so they run in a plain subprocess here.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from cure import synthetic
from cure.tasks import Task, load_tasks, write_jsonl

# Runs a trusted program on several stdins in one interpreter (one process per program keeps the test fast).
_HARNESS = """
import contextlib, io, json, sys
code, inputs = json.load(sys.stdin)
outs = []
for text in inputs:
    sys.stdin, buf = io.StringIO(text), io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "<program>", "exec"), {"__name__": "__main__"})
    outs.append(buf.getvalue())
print(json.dumps(outs))
"""


def run_program(code: str, inputs: list[str]) -> list[str]:
    payload = json.dumps([code, inputs])
    result = subprocess.run([sys.executable, "-c", _HARNESS], input=payload, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"program failed:\n{code}\n{result.stderr}"
    return json.loads(result.stdout)


def one_per_family(split: str, seed: int = 0) -> list[Task]:
    return synthetic.generate_tasks(len(synthetic.FAMILIES), seed, split)


def test_generation_is_deterministic_and_seed_dependent():
    a = [t.model_dump() for t in synthetic.generate_tasks(40, 3)]
    b = [t.model_dump() for t in synthetic.generate_tasks(40, 3)]
    c = [t.model_dump() for t in synthetic.generate_tasks(40, 4)]
    assert a == b
    assert a != c


def test_task_records_have_the_stdio_shape():
    tasks = synthetic.generate_tasks(64, 1, "heldout") + synthetic.generate_tasks(64, 1, "train")
    assert len({t.task_id for t in tasks}) == len(tasks)
    assert {t.source for t in tasks} == {f"synthetic/{f}" for f in synthetic.FAMILIES}
    for t in tasks:
        assert t.test_time_limit == 1.0
        assert len(t.example_input) == len(t.example_output) == 1
        assert len(t.test_input) >= 8 and len(set(t.test_input)) == len(t.test_input)
        assert t.example_input[0] not in t.test_input
        for text in t.test_input + t.test_output + t.example_input + t.example_output:
            assert text.endswith("\n")
        # The output never equals the input, so echo-like tests cannot pass as correct.
        assert all(o.split() != i.split() for i, o in zip(t.test_input, t.test_output))


def test_families_filter_and_errors():
    tasks = synthetic.generate_tasks(6, 0, families=["affine", "repeat"])
    assert [t.source for t in tasks] == ["synthetic/affine", "synthetic/repeat"] * 3
    with pytest.raises(ValueError, match="unknown synthetic family 'nope'"):
        synthetic.generate_tasks(2, 0, families=["nope"])
    with pytest.raises(ValueError, match="split must be one of"):
        synthetic.generate_tasks(2, 0, split="test")


def test_heldout_parameter_combinations_never_appear_in_train():
    for name in synthetic.FAMILIES:
        train = set(synthetic.parameter_space(name, "train"))
        held = set(synthetic.parameter_space(name, "heldout"))
        assert train and held, f"family {name} needs combinations in both splits"
        assert not train & held
    seen_train = {(t.source, tuple(t.params)) for s in (0, 1, 2) for t in synthetic.generate_tasks(400, s, "train")}
    seen_held = {(t.source, tuple(t.params)) for s in (0, 1) for t in synthetic.generate_tasks(200, s, "heldout")}
    assert not seen_train & seen_held
    # Held-out combinations are new combinations of values that the train split also uses (same ranges).
    for name in synthetic.FAMILIES:
        train = synthetic.parameter_space(name, "train")
        for params in synthetic.parameter_space(name, "heldout"):
            for i, value in enumerate(params):
                # Strings (suffixes) may be new as a whole, but each character sits in the train range.
                for part in value if isinstance(value, str) else [value]:
                    assert any(part in p[i] if isinstance(value, str) else p[i] == part for p in train), (name, params, i)


def test_question_states_the_parameters():
    tasks = synthetic.generate_tasks(200, 0)
    by_question: dict[str, tuple] = {}
    for t in tasks:
        key = (t.source, tuple(t.params))
        assert by_question.setdefault(t.question, key) == key, f"two parameter sets share the question {t.question!r}"
    t = synthetic.make_task("affine", (0, 7, 3), random.Random(0), "x")
    assert t.question == "Read an integer n. Print n*7+3."


def test_reference_solutions_pass_their_tests():
    for task in one_per_family("train") + one_per_family("heldout", seed=5):
        code = synthetic.reference_solution(task)
        inputs = task.test_input + task.example_input
        assert run_program(code, inputs) == task.test_output + task.example_output, task.task_id


def test_reference_tests_are_correct_and_reject_wrong_programs():
    rng = random.Random(0)
    for task in one_per_family("train", seed=2):
        test = synthetic.reference_test(task, rng)
        assert run_program(synthetic.reference_solution(task), [test["input"]]) == [test["output"]]
        assert test["output"].split() != test["input"].split()
        wrong = synthetic.wrong_solutions(task)
        assert len(wrong) >= 2
        for code in wrong:
            assert run_program(code, [test["input"]])[0].split() != test["output"].split(), (task.task_id, code, test)


def test_wrong_tests_fail_the_reference_and_pass_a_wrong_program():
    rng = random.Random(3)
    for task in one_per_family("train", seed=4) + one_per_family("heldout", seed=6):
        test = synthetic.wrong_test(task, rng)
        assert run_program(synthetic.reference_solution(task), [test["input"]])[0].split() != test["output"].split()
        wrong = synthetic.wrong_solutions(task)
        assert any(run_program(c, [test["input"]])[0].split() == test["output"].split() for c in wrong), (task.task_id, test)


def test_wrong_programs_fail_almost_every_ground_truth_test():
    """A neighbouring constant or another operation changes the output on almost every input."""
    agree = total = 0
    for task in synthetic.generate_tasks(160, 7, "heldout"):
        fam, params = synthetic._task_params(task)
        for m in fam.mutants(params):
            if m == params:
                continue
            outs = [fam.solve(m, x) for x in task.test_input]
            agree += sum(synthetic.outputs_match(o, e) for o, e in zip(outs, task.test_output))
            total += len(outs)
            assert any(not synthetic.outputs_match(o, e) for o, e in zip(outs, task.test_output)), (task.task_id, m)
    assert agree / total < 0.05
    # The in-process semantics agree with the mutated programs themselves.
    task = one_per_family("heldout")[0]
    fam, params = synthetic._task_params(task)
    for m, code in zip([m for m in fam.mutants(params) if m != params], synthetic.wrong_solutions(task)):
        assert run_program(code, task.test_input) == [fam.solve(m, x) for x in task.test_input]


def test_reference_solution_survives_a_jsonl_round_trip(tmp_path):
    tasks = one_per_family("heldout")
    write_jsonl(tmp_path / "tasks.jsonl", tasks)
    loaded, bad = load_tasks(tmp_path / "tasks.jsonl")
    assert not bad
    assert [synthetic.reference_solution(t) for t in loaded] == [synthetic.reference_solution(t) for t in tasks]
    assert synthetic.expected_output(loaded[0], "not a number\n") is None or loaded[0].source != "synthetic/affine"
    plain = Task(task_id="x", source="file", question="q", test_input=["1\n"], test_output=["2\n"])
    with pytest.raises(ValueError, match="no 'family'/'params' fields"):
        synthetic.reference_solution(plain)
