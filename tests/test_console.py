"""The run console (cure.console) and the report's training curves."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import pytest

from cure.console import RunConsole, RunState, eval_table, stage_of
from cure.report import ReportInputError, write_report

# What kfp.local prints around a component, as captured from a local run (colours included).
KFP_TASK = """\x1b[36m'reward'\x1b[0m
2026-11-29 23:40:01.123 - INFO - Executing task \x1b[96m'reward-3'\x1b[0m
2026-11-29 23:40:01.124 - INFO - Streamed logs:

    2026-11-29 23:40:02,000 cure: round 3: reward
    {"executor_input": {"inputs": {"parameterValues": {"round": 3}}}}
2026-11-29 23:40:04.000 - INFO - Task \x1b[96m'reward-3'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
2026-11-29 23:40:04.001 - INFO - Task \x1b[96m'reward-3'\x1b[0m outputs:
    metrics: Metrics( name='metrics',
                      uri='/tmp/run/kfp/cure-demo/reward-3/metrics',
                      metadata={'tasks': 32.0, 'coder_reward_mean': 0.61, 'tester_reward_mean': 0.25} )
"""


def test_state_reads_stages_metrics_and_failures() -> None:
    s = RunState(rounds=12)
    events = [e for line in KFP_TASK.splitlines() for e in s.feed(line)]
    assert ("stage", (3, "reward")) in events
    assert ("task", "reward-3") in events
    assert s.metrics[3]["reward"]["coder_reward_mean"] == 0.61
    assert s.tasks_done == 1 and s.failed is None
    s.feed("    cure: round 3: train")
    s.feed("      metadata={'loss': -0.0123, 'kl': 0.0004, 'tokens': 900.0} )")
    assert s.rounds_done == 1
    line = s.summary_line()
    assert "round 3" in line and "coder 0.61" in line and "loss -0.0123" in line
    s.feed("Task 'train-4' finished with status FAILURE")
    assert s.failed == "train-4"
    # A warning with more words after the colon is not a stage.
    s.feed("cure.stages: round 4: no training examples (every task's rewards were all equal)")
    assert s.stage == "train"


def test_state_without_stage_announcements_counts_rounds() -> None:
    s = RunState(rounds=2)
    for meta in ("{'programs': 4.0, 'tests_extracted': 4.0}", "{'loss': 0.1, 'kl': 0.0}",
                 "{'programs': 4.0, 'tests_extracted': 3.0}", "{'loss': 0.2, 'kl': 0.01}",
                 "{'code_acc': 0.5, 'unit_test_acc': 0.1}"):
        s.feed(f"    metadata={meta} )")
    assert sorted(s.metrics) == [1, 2]
    assert s.metrics[2]["evaluate"]["code_acc"] == 0.5
    assert stage_of({"coder_examples": 1, "tester_examples": 2}) == "reward"
    assert stage_of({"foo": 1}) is None


def test_console_sends_everything_to_the_log_and_little_to_the_person(tmp_path: Path) -> None:
    out = io.StringIO()
    with RunConsole(tmp_path, rounds=12, title="cure run (test)", tty=False, stream=out):
        for line in KFP_TASK.splitlines():
            print(line)
        logging.getLogger("cure.run").info("a log line")
        print("noise " * 20, file=sys.stderr)
        print("      metadata={'code_acc': 0.61, 'unit_test_acc': 0.09, 'p01': 0.0} )")
    shown = out.getvalue()
    log = (tmp_path / "run.log").read_text()
    assert "executor_input" in log and "a log line" in log and "noise noise" in log
    assert "executor_input" not in shown and "noise noise" not in shown
    assert str(tmp_path / "run.log") in shown
    assert "round 3/12: reward" in shown
    assert "evaluation after round 3" in shown and "0.610" in shown
    # Another task's metrics after an evaluation (prepare-data's counts) are not an empty evaluation table.
    out = io.StringIO()
    with RunConsole(tmp_path, rounds=12, title="cure run (test)", tty=False, stream=out):
        print("    cure: round 0: evaluate")
        print("      metadata={'code_acc': 0.61, 'unit_test_acc': 0.09, 'p01': 0.0} )")
        print("      metadata={'bad_rows': 0.0, 'tasks': 512.0} )")
    assert out.getvalue().count("evaluation after round 0") == 1
    assert sys.stdout is not out and not isinstance(sys.stdout, type(None))


def test_console_reports_a_failure_with_the_log_tail(tmp_path: Path) -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), RunConsole(tmp_path, rounds=1, tty=False, stream=out):
        print("the component said: something broke")
        raise RuntimeError("Task 'train' finished with status FAILURE")
    shown = out.getvalue()
    assert "the run failed" in shown and "something broke" in shown


def test_console_bar_on_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    with RunConsole(tmp_path, rounds=4, tty=True, stream=out):
        for line in KFP_TASK.splitlines():
            print(line)
    shown = out.getvalue()
    assert "round 3/4 reward" in shown  # the bar's description
    assert "executor_input" not in shown


def test_eval_table() -> None:
    text = eval_table(6, {"code_acc": 0.84, "unit_test_acc": 0.135, "bon_8x8": 0.86, "seconds": 3.0})
    assert text.splitlines()[0] == "evaluation after round 6:"
    assert "bon_8x8" in text and "0.135" in text and "seconds" not in text


def _rounds(n: int) -> list[dict]:
    return [
        {"round": r, "rollout": {"programs": 256.0}, "execute": {"train_code_acc": 0.5 + r / 50, "train_unit_test_acc": 0.1},
         "reward": {"coder_reward_mean": 0.5 + r / 40, "tester_reward_mean": 0.2}, "train": {"loss": -0.01 * r, "kl": 1e-4 * r},
         "seconds": {"rollout": 10.0, "train": 5.0}}
        for r in range(n, 0, -1)
    ]


def test_report_plots_training_curves(tmp_path: Path) -> None:
    history = [{"round": 0, "code_acc": 0.6}, {"round": 12, "code_acc": 0.8}]
    paths = write_report(history, tmp_path, noise={"code_acc": 0.02}, rounds=_rounds(12))
    assert paths["training"].is_file() and paths["training"].stat().st_size > 1000
    md = paths["markdown"].read_text()
    assert "Training curves (every round)" in md and "training.png" in md
    curves = md[md.index("Training curves (every round)"):]
    rows = [line for line in curves.splitlines() if line.startswith("| 12 |")]
    assert rows and "0.8000" in rows[0] and "15.0" in rows[0]  # coder reward 0.5 + 12/40, seconds summed
    assert curves.index("| 1 |") < curves.index("| 12 |")  # sorted by round
    assert "training curves" in paths["html"].read_text()
    assert "training" not in write_report(history, tmp_path / "plain")


@pytest.mark.parametrize("bad", ["rounds", [{"round": "1"}], [{"round": 1, "train": 3}], [3]])
def test_report_rejects_malformed_rounds(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ReportInputError, match="rounds"):
        write_report([{"round": 0, "code_acc": 0.6}], tmp_path, rounds=bad)  # type: ignore[arg-type]


def test_reward_stage_reports_raw_mean_rewards() -> None:
    from cure.config import RewardConfig
    from cure.reward_stage import assemble

    rollouts = [
        {"task_id": t, "code_prompt": "c", "code_responses": ["a", "b"], "test_prompt": "t", "test_responses": ["x", "y"],
         "code_lengths": [3, 3], "test_lengths": [3, 3], "codes": ["print(1)", "print(2)"],
         "tests": [{"input": "", "output": "1"}, {"input": "", "output": "2"}], "gt_tests": [{"input": "", "output": "1"}],
         "time_limit_s": 1.0}
        for t in ("t1", "t2")
    ]
    # t1: program 0 passes its ground-truth test, program 1 fails it; test 0 passes the correct program and the
    # wrong one (raw reward 1 * 0 rejected = 0), test 1 fails the correct one and passes the wrong one (-1 * 1 = -1).
    # t2: no correct program: the tester's reward is undefined there and does not enter the mean.
    executions = [
        {"task_id": "t1", "num_gt": 1, "passed": [[True, True, False], [False, True, True]]},
        {"task_id": "t2", "num_gt": 1, "passed": [[False, True, False], [False, False, True]]},
    ]
    for e in executions:
        e["status"] = [["pass" if p else "fail" for p in row] for row in e["passed"]]
    _, _, counts = assemble(rollouts, executions, RewardConfig(post_stage=False), max_new_tokens=100)
    assert counts["coder_reward_mean"] == pytest.approx(0.25)  # (1 + 0 + 0 + 0) / 4
    assert counts["tester_reward_mean"] == pytest.approx(-0.5)  # (0 + -1) / 2


def test_console_of_a_run_without_rounds(tmp_path: Path) -> None:
    """``cure run --pipeline evaluation``: the title says what is evaluated; stages name the round alone."""
    out = io.StringIO()
    with RunConsole(tmp_path, 0, title="cure run --pipeline evaluation", what="self-evaluation of m", tty=False, stream=out):
        print("    cure: round 0: evaluate")
    shown = out.getvalue()
    assert shown.startswith("cure run --pipeline evaluation: self-evaluation of m; full orchestrator output: ")
    assert "round 0: evaluate" in shown and "round 0/0" not in shown
