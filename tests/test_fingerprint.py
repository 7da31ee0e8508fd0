"""Executions carry a fingerprint of the rollout rows they were computed from; the reward stage refuses a table that
does not belong to the rollouts it is given (reordered programs or tests, another file)."""

from __future__ import annotations

import copy
import json

import pytest
from sandbox_fixtures import rollout

import cure_cli as cli
from cure.config import CureConfig
from cure.execute import FINGERPRINT, execute_rollouts, rollout_fingerprint
from cure.reward_stage import assemble
from cure.validate import ArtifactError

pytestmark = pytest.mark.gvisor

RIGHT = "a, b = map(int, input().split())\nprint(a + b)"
WRONG = "a, b = map(int, input().split())\nprint(a - b)"


def _task():
    rec = rollout([RIGHT, WRONG], [("1 2", "3"), ("5 1", "6")], [("2 2", "4"), ("2 2", "0")])
    rec.update(code_prompt="c", test_prompt="t", code_responses=["r0", "r1"], test_responses=["t0", "t1"],
               code_lengths=[5, 5], test_lengths=[5, 5])
    return rec


@pytest.fixture(scope="module")
def executed():
    from cure.config import ExecuteConfig

    rec = _task()
    [ex] = execute_rollouts([rec], ExecuteConfig(isolation="gvisor", workers=1), progress=False)
    return rec, ex


def test_executions_carry_the_fingerprint_of_their_rollout(executed):
    rec, ex = executed
    assert ex[FINGERPRINT] == rollout_fingerprint(rec)
    assert len(ex[FINGERPRINT]["codes"]) == 2 and len(ex[FINGERPRINT]["tests"]) == 4
    assert ex["status"][0] == ["pass", "pass", "pass", "fail"]


def test_reward_accepts_the_matching_rollout(executed):
    rec, ex = executed
    code, _, _ = assemble([rec], [ex], CureConfig().reward, max_new_tokens=64)
    by_response = {e["response"]: e["reward"] for e in code}
    assert by_response["r0"] > by_response["r1"]


@pytest.mark.parametrize("change", ["programs_swapped", "tests_swapped", "program_edited"])
def test_reward_refuses_a_table_from_other_rollout_rows(executed, change):
    rec, ex = executed
    other = copy.deepcopy(rec)
    if change == "programs_swapped":  # the same rollout, programs (and their responses) in another order
        for key in ("codes", "code_responses"):
            other[key] = other[key][::-1]
    elif change == "tests_swapped":
        other["gt_tests"] = other["gt_tests"][::-1]
    else:
        other["codes"][1] = WRONG + "\n# edited"
    with pytest.raises(ArtifactError, match=r"rollout_fingerprint.*(program|test column) \d.*run `cure execute`"):
        assemble([other], [ex], CureConfig().reward, max_new_tokens=64)


def test_cure_reward_refuses_with_rc_2_and_one_line(executed, tmp_path, capsys):
    rec, ex = executed
    other = copy.deepcopy(rec)
    other["codes"], other["code_responses"] = other["codes"][::-1], other["code_responses"][::-1]
    (tmp_path / "r.jsonl").write_text(json.dumps(other) + "\n")
    (tmp_path / "e.jsonl").write_text(json.dumps(ex) + "\n")
    rc = cli.main(["reward", "--rollouts", str(tmp_path / "r.jsonl"), "--executions", str(tmp_path / "e.jsonl"),
                   "--out", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "e.jsonl" in err[0] and "program 0" in err[0], err
    assert not (tmp_path / "out.jsonl").exists()
