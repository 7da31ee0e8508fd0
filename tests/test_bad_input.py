"""A corpus of malformed artifacts, run through every stage's command: each is refused with exit code 2 and one
line naming the file, the line and the field, with no traceback and no output written, or (where a bad value
can be handled safely) accepted with a count. Nothing here executes a program: every case fails before the
sandbox starts (``--isolation none`` is never reached)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import cure_cli as cli

GT = [{"input": "1 2", "output": "3"}]
GEN = [{"input": "2 2", "output": "4"}, {"input": "0 0", "output": "0"}]


def rollout(task_id: str) -> dict:
    return {
        "task_id": task_id,
        "code_prompt": "write add",
        "test_prompt": "write a test",
        "code_responses": ["a", "b"],
        "code_lengths": [3, 4],
        "codes": ["print(sum(map(int, input().split())))", "print(0)"],
        "test_responses": ["t1", "t2"],
        "test_lengths": [5, 6],
        "tests": GEN,
        "gt_tests": GT,
        "time_limit_s": 1.0,
    }


def execution(task_id: str) -> dict:
    passed = [[True, True, True], [False, False, True]]
    return {
        "task_id": task_id,
        "num_gt": 1,
        "passed": passed,
        "status": [["pass" if p else "fail" for p in row] for row in passed],
    }


def task(task_id: str) -> dict:
    return {"task_id": task_id, "source": "s", "question": "add", "test_input": ["1 2"], "test_output": ["3"]}


def train_record(task_id: str = "t0") -> dict:
    return {"prompt": "p", "response": "r", "reward": 1.0, "role": "coder", "task_id": task_id}


def lines(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _set(rec: dict, key: str, value: object) -> dict:
    rec = copy.deepcopy(rec)
    rec[key] = value
    return rec


# (case id, rollouts file bytes, expected line, expected field or text)
EXECUTE_CASES = [
    ("not-utf8", lines(rollout("a")) + b'{"task_id": "b\xff"}\n', 2, "not valid UTF-8"),
    ("json-array", b"[" + json.dumps(rollout("a")).encode() + b"]\n", 1, "expected one JSON object per line"),
    ("bad-json", lines(rollout("a")) + b"{oops\n", 2, "not valid JSON"),
    ("duplicate-task-id", lines(rollout("a"), rollout("a")), 2, "field 'task_id': duplicate 'a'"),
    ("empty-task-id", lines(_set(rollout("a"), "task_id", "")), 1, "field 'task_id'"),
    ("codes-not-list", lines(_set(rollout("a"), "codes", "print(1)")), 1, "field 'codes'"),
    ("code-not-string", lines(_set(rollout("a"), "codes", [1])), 1, "field 'codes[0]'"),
    ("gt-tests-malformed", lines(_set(rollout("a"), "gt_tests", [{"input": 1}])), 1, "field 'gt_tests[0]'"),
    ("time-limit-0", lines(_set(rollout("a"), "time_limit_s", 0)), 1, "field 'time_limit_s'"),
    ("time-limit-inf", lines(_set(rollout("a"), "time_limit_s", float("inf"))), 1, "field 'time_limit_s'"),
    ("time-limit-1e9", lines(_set(rollout("a"), "time_limit_s", 1e9)), 1, "field 'time_limit_s'"),
    ("time-limit-string", lines(_set(rollout("a"), "time_limit_s", "1")), 1, "field 'time_limit_s'"),
]

# (case id, mutate(rollouts, executions), which file, expected line, expected text)
Mutation = Callable[[list, list], None]
REWARD_CASES: list[tuple[str, Mutation, str, int, str]] = [
    ("exec-duplicate-id", lambda r, e: e.__setitem__(1, execution("a")), "executions", 2, "field 'task_id': duplicate"),
    ("num-gt-negative", lambda r, e: e[0].__setitem__("num_gt", -1), "executions", 1, "field 'num_gt'"),
    ("num-gt-too-big", lambda r, e: e[0].__setitem__("num_gt", 99), "executions", 1, "field 'num_gt'"),
    ("num-gt-string", lambda r, e: e[0].__setitem__("num_gt", "1"), "executions", 1, "field 'num_gt'"),
    ("num-gt-not-gt-count", lambda r, e: e[0].__setitem__("num_gt", 2), "executions", 1, "field 'num_gt'"),
    ("cell-string-no", lambda r, e: e[0]["passed"][1].__setitem__(0, "no"), "executions", 1, "field 'passed[1][0]'"),
    ("cell-string-false", lambda r, e: e[0]["passed"][1].__setitem__(0, "false"), "executions", 1, "field 'passed[1][0]'"),
    ("cell-int", lambda r, e: e[0]["passed"][0].__setitem__(0, 1), "executions", 1, "field 'passed[0][0]'"),
    ("too-few-rows", lambda r, e: (e[0]["passed"].pop(), e[0]["status"].pop()), "executions", 1, "has 1 rows"),
    ("ragged-row", lambda r, e: (e[0]["passed"][1].pop(), e[0]["status"][1].pop()), "executions", 1, "rectangular"),
    ("too-few-columns", lambda r, e: [(row.pop(), srow.pop()) for row, srow in zip(e[0]["passed"], e[0]["status"])],
     "executions", 1, "columns"),
    ("status-unknown", lambda r, e: e[0]["status"][1].__setitem__(0, "maybe"), "executions", 1, "field 'status[1][0]'"),
    ("status-disagrees", lambda r, e: e[0]["status"][1].__setitem__(0, "pass"), "executions", 1, "field 'passed[1][0]'"),
    ("missing-execution", lambda r, e: e.pop(), "rollouts", 2, "has no execution record"),
    ("extra-execution", lambda r, e: e.append(execution("zzz")), "executions", 3, "has no rollout record"),
    ("rollout-duplicate-id", lambda r, e: r.__setitem__(1, rollout("a")), "rollouts", 2, "field 'task_id': duplicate"),
    ("responses-vs-codes", lambda r, e: r[0]["code_responses"].pop(), "rollouts", 1, "field 'code_responses'"),
    ("negative-length", lambda r, e: r[0]["code_lengths"].__setitem__(0, -1), "rollouts", 1, "field 'code_lengths'"),
    ("prompt-missing", lambda r, e: r[0].pop("code_prompt"), "rollouts", 1, "field 'code_prompt'"),
]

# (case id, rewards file bytes, expected line, expected text)
TRAIN_CASES = [
    ("huge-reward", lines(train_record(), _set(train_record(), "reward", 1e300)), 2, "field 'reward'"),
    ("reward-1e20", lines(_set(train_record(), "reward", 1e20)), 1, "field 'reward'"),
    ("reward-nan", b'{"prompt": "p", "response": "r", "reward": NaN, "role": "coder", "task_id": "t"}\n', 1, "field 'reward'"),
    ("reward-string", lines(_set(train_record(), "reward", "1")), 1, "field 'reward'"),
    ("role-unknown", lines(_set(train_record(), "role", "judge")), 1, "field 'role'"),
    ("prompt-not-string", lines(_set(train_record(), "prompt", None)), 1, "field 'prompt'"),
    ("not-utf8", lines(train_record()) + b'{"prompt": "\xc3\x28"}\n', 2, "not valid UTF-8"),
    ("json-array", b"[1, 2]\n", 1, "expected one JSON object per line"),
]


def _assert_refused(rc: int, err: str, path: Path, line: int, text: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert f"{path}:{line}:" in err, err
    assert text in err, err
    assert len([x for x in err.splitlines() if x.startswith("cure ")]) == 1, err


@pytest.mark.parametrize("case", EXECUTE_CASES, ids=[c[0] for c in EXECUTE_CASES])
def test_execute_refuses(case, tmp_path, capsys):
    _, data, line, text = case
    src, out = tmp_path / "rollouts.jsonl", tmp_path / "executions.jsonl"
    src.write_bytes(data)
    rc = cli.main(["execute", "--rollouts", str(src), "--out", str(out), "--isolation", "none", "--no-progress"])
    _assert_refused(rc, capsys.readouterr().err, src, line, text)
    assert not out.exists()


def _write_reward_inputs(tmp_path: Path, mutate: Mutation | None) -> tuple[Path, Path]:
    rollouts, executions = [rollout("a"), rollout("b")], [execution("a"), execution("b")]
    if mutate is not None:
        mutate(rollouts, executions)
    r, e = tmp_path / "rollouts.jsonl", tmp_path / "executions.jsonl"
    r.write_bytes(lines(*rollouts))
    e.write_bytes(lines(*executions))
    return r, e


def test_reward_accepts_the_valid_corpus_base(tmp_path, capsys):
    r, e = _write_reward_inputs(tmp_path, None)
    out = tmp_path / "rewards.jsonl"
    assert cli.main(["reward", "--rollouts", str(r), "--executions", str(e), "--out", str(out)]) == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    coder = {(x["task_id"], x["response"]): x["reward"] for x in got if x["role"] == "coder"}
    assert coder[("a", "a")] == pytest.approx(1.0) and coder[("a", "b")] == pytest.approx(-1.0)


@pytest.mark.parametrize("case", REWARD_CASES, ids=[c[0] for c in REWARD_CASES])
def test_reward_refuses(case, tmp_path, capsys):
    _, mutate, which, line, text = case
    r, e = _write_reward_inputs(tmp_path, mutate)
    out = tmp_path / "rewards.jsonl"
    rc = cli.main(["reward", "--rollouts", str(r), "--executions", str(e), "--out", str(out)])
    _assert_refused(rc, capsys.readouterr().err, r if which == "rollouts" else e, line, text)
    assert not out.exists()


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses(case, tmp_path, capsys):
    _, data, line, text = case
    src, out = tmp_path / "rewards.jsonl", tmp_path / "ckpt"
    src.write_bytes(data)
    model = tmp_path / "model"
    model.mkdir()  # never loaded: the data is checked first
    rc = cli.main(["train", "--model", str(model), "--data", str(src), "--out", str(out), "--engine", "torch"])
    _assert_refused(rc, capsys.readouterr().err, src, line, text)
    assert not (out / "latest").exists()


def test_task_file_cases(tmp_path, capsys):
    out = tmp_path / "tasks.jsonl"
    for name, data, line, text in [
        ("time-limit-0", lines(_set(task("a"), "test_time_limit", 0)), 1, "test_time_limit"),
        ("time-limit-1e9", lines(_set(task("a"), "test_time_limit", 1e9)), 1, "test_time_limit"),
        ("time-limit-inf", lines(_set(task("a"), "test_time_limit", float("inf"))), 1, "test_time_limit"),
        ("duplicate-id", lines(task("a"), task("a")), 2, "field 'task_id': duplicate"),
        ("not-utf8", lines(task("a")) + b'{"question": "\xff"}\n', 2, "not valid UTF-8"),
    ]:
        src = tmp_path / f"{name}.jsonl"
        src.write_bytes(data)
        rc = cli.main(["data", "prepare", "--source", "file", "--path", str(src), "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and f"{src}:{line}" in err and text in err and "Traceback" not in err, (name, err)
        assert not out.exists()


def test_skip_bad_counts_what_it_skips(tmp_path, capsys):
    src, out, report = tmp_path / "t.jsonl", tmp_path / "tasks.jsonl", tmp_path / "report.json"
    src.write_bytes(lines(task("a"), _set(task("b"), "test_time_limit", 0), task("c")))
    rc = cli.main(["data", "prepare", "--source", "file", "--path", str(src), "--out", str(out), "--skip-bad",
                   "--report", str(report)])
    assert rc == 0
    assert [json.loads(x)["task_id"] for x in out.read_text().splitlines()] == ["a", "c"]
    summary = json.loads(report.read_text())
    assert summary["bad"] == 1 and f"{src}:2" in summary["bad_rows"][0]
    assert f"{src}:2" in capsys.readouterr().err


def test_options_checked_before_work(tmp_path, capsys):
    src, out = tmp_path / "t.jsonl", tmp_path / "tasks.jsonl"
    src.write_bytes(lines(task("a"), task("b"), task("c")))
    prepare = ["data", "prepare", "--source", "file", "--path", str(src)]
    assert cli.main([*prepare, "--out", str(out), "--limit", "-2"]) == 2
    assert "--limit -2" in capsys.readouterr().err and not out.exists()
    # --report into a missing folder fails before the tasks are written
    assert cli.main([*prepare, "--out", str(out), "--report", str(tmp_path / "nope" / "r.json")]) == 2
    assert "--report" in capsys.readouterr().err and not out.exists()
    # an output path that cannot be written fails before any work
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (
        [*prepare, "--out", str(blocker / "tasks.jsonl")],
        ["execute", "--rollouts", str(src), "--out", str(blocker / "e.jsonl"), "--isolation", "none"],
        ["reward", "--rollouts", str(src), "--executions", str(src), "--out", str(blocker / "r.jsonl")],
        ["execute", "--rollouts", str(src), "--out", str(tmp_path), "--isolation", "none"],
    ):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "--out" in err and "Traceback" not in err, err


def test_evaluate_rejects_duplicate_names_and_empty_benchmarks(tmp_path, capsys):
    a, empty = tmp_path / "a.jsonl", tmp_path / "empty.jsonl"
    a.write_bytes(lines(task("a")))
    empty.write_bytes(b"")
    base = ["evaluate", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "eval")]
    assert cli.main([*base, "--tasks", f"x={a}", f"x={a}"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert cli.main([*base, "--tasks", f"e={empty}"]) == 2
    assert "no tasks" in capsys.readouterr().err


def test_verbose_shows_the_traceback(tmp_path, capsys):
    src = tmp_path / "rollouts.jsonl"
    src.write_bytes(lines(rollout("a"), rollout("a")))
    argv = ["execute", "--rollouts", str(src), "--out", str(tmp_path / "e.jsonl"), "--isolation", "none"]
    assert cli.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert cli.main([*argv, "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and f"{src}:2" in err


def test_artifacts_get_the_normal_file_mode(tmp_path):
    import os

    from cure.tasks import write_jsonl

    old = os.umask(0o022)
    try:
        write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    finally:
        os.umask(old)
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("verb", ["rollout", "evaluate"])
def test_task_readers_refuse(verb, tmp_path, capsys):
    cases = [
        ("not-utf8", lines(task("a")) + b'{"question": "\xff"}\n', 2, "not valid UTF-8"),
        ("duplicate-id", lines(task("a"), task("a")), 2, "field 'task_id': duplicate"),
        ("time-limit-inf", lines(_set(task("a"), "test_time_limit", float("inf"))), 1, "test_time_limit"),
    ]
    for name, data, line, text in cases:
        src = tmp_path / f"{name}.jsonl"
        src.write_bytes(data)
        model = str(tmp_path / "no-model")  # never loaded: the tasks are checked first
        if verb == "rollout":
            argv = ["rollout", "--tasks", str(src), "--model", model, "--engine", "hf", "--out", str(tmp_path / "r.jsonl")]
        else:
            argv = ["evaluate", "--tasks", f"b={src}", "--model", model, "--out", str(tmp_path / "eval")]
        rc = cli.main(argv)
        _assert_refused(rc, capsys.readouterr().err, src, line, text)
        assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "eval" / "metrics.json").exists()
