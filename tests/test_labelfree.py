"""Label-free coder rewards: generated tests in place of ground truth (``reward.code_reward_source``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cure.config import load_config
from cure.reward import generated_test_pass_rate, label_free_code_rewards, test_weights
from cure.reward_stage import assemble
from cure.tasks import read_jsonl, write_jsonl
from cure_cli import main

tables = st.tuples(st.integers(1, 8), st.integers(1, 8)).flatmap(
    lambda s: arrays(bool, s, elements=st.booleans())
)


@settings(max_examples=200, deadline=None)
@given(tables)
def test_uniform_rewards_order_programs_by_generated_test_pass_rate(gen):
    r = label_free_code_rewards(gen)
    rate = gen.mean(axis=1)
    if np.all(rate == rate[0]):
        assert r is None
        return
    assert r is not None and np.isclose(r.mean(), 0) and np.isclose(r.std(), 1)
    for i in range(len(rate)):
        for j in range(len(rate)):
            assert (rate[i] > rate[j]) == (r[i] > r[j] + 1e-12)


@settings(max_examples=100, deadline=None)
@given(tables, st.data())
def test_unextracted_tests_weigh_nothing(gen, data):
    valid = np.asarray(data.draw(arrays(bool, gen.shape[1], elements=st.booleans())))
    w = test_weights(gen, valid)
    assert np.all(w[~valid] == 0)
    rate = generated_test_pass_rate(gen, w)
    if not valid.any():
        assert rate is None
    else:
        assert np.allclose(rate, gen[:, valid].mean(axis=1))


def test_agreement_weighting_damps_tests_few_programs_pass():
    # Programs 0-2 agree on tests 0-2; test 3 (likely wrong) is passed by program 3 alone.
    gen = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]], dtype=bool)
    w = test_weights(gen, weighting="agreement")
    assert w.tolist() == [0.75, 0.75, 0.5, 0.25]
    uni = label_free_code_rewards(gen)
    agr = label_free_code_rewards(gen, weighting="agreement")
    assert agr[3] < uni[3]  # the lone program's odd test counts less
    assert agr[0] > agr[2] > agr[3]
    with pytest.raises(ValueError, match="unknown test weighting 'vote'"):
        test_weights(gen, weighting="vote")


def _task(task_id, passed, num_gt, tests=None):
    """A complete rollout record and its execution record (the reward stage validates both and their join)."""
    n_code, n_test = len(passed), len(passed[0]) - num_gt
    tests = tests if tests is not None else [{"input": "1\n", "output": "1\n"}] * n_test
    rollout = {
        "task_id": task_id, "code_prompt": f"code {task_id}", "test_prompt": f"test {task_id}",
        "code_responses": [f"{task_id} program {i}" for i in range(n_code)], "code_lengths": [5] * n_code,
        "codes": [f"print({i})" for i in range(n_code)],
        "test_responses": [f"{task_id} test {j}" for j in range(n_test)], "test_lengths": [5] * n_test,
        "gt_tests": [{"input": "", "output": f"gt {g}\n"} for g in range(num_gt)],
        "tests": tests, "time_limit_s": 1.0,
    }
    status = [["pass" if p else ("no_test" if c >= num_gt and tests[c - num_gt] is None else "fail")
               for c, p in enumerate(row)] for row in passed]
    return rollout, {"task_id": task_id, "num_gt": num_gt, "passed": passed, "status": status}


# No ground truth: four programs that pass 3, 1, 2 and 0 of three generated tests.
NO_GT = [[True, True, True], [False, True, False], [True, False, True], [False, False, False]]


def test_no_ground_truth_task_trains_the_coder_and_not_the_tester(caplog):
    ro, ex = _task("nogt", NO_GT, 0)
    cfg = load_config(None, ["reward.code_reward_source=generated_tests"]).reward
    code, test, counts = assemble([ro], [ex], cfg, 100)
    rewards = {r["response"]: r["reward"] for r in code}
    assert rewards["nogt program 0"] > rewards["nogt program 2"] > rewards["nogt program 1"] > rewards["nogt program 3"]
    assert test == [] and counts["tester_none"] == 1 and counts["coder_tasks"] == 1
    # The default (ground truth) gives the coder nothing on such a task.
    with caplog.at_level("WARNING", logger="cure.reward_stage"):
        code, test, counts = assemble([ro], [ex], load_config(None).reward, 100)
    assert code == [] and test == [] and counts["coder_none"] == 1 and counts["unlabeled_tasks"] == 1
    assert "1 task(s) have no ground-truth tests" in caplog.text  # said, not silent


def test_ground_truth_is_not_read_in_label_free_mode():
    # One gt test that every program but the last passes; generated tests say the opposite.
    passed = [[True, False, True], [True, False, True], [False, True, True]]
    ro, ex = _task("gt", passed, 1)
    lf = load_config(None, ["reward.code_reward_source=generated_tests"]).reward
    code, test, _ = assemble([ro], [ex], lf, 100)
    rewards = {r["response"]: r["reward"] for r in code}
    assert rewards["gt program 2"] > rewards["gt program 0"]
    # With ground truth present, the co-evolving tester still gets its Eq. 4 reward.
    assert len(test) == 2
    # A frozen tester's tests are never trained on.
    frozen = load_config(None, ["reward.code_reward_source=generated_tests", "reward.tester_model=/models/tester"]).reward
    _, test, _ = assemble([ro], [ex], frozen, 100)
    assert test == []
    ro["tester_model"] = "/models/tester"
    _, test, _ = assemble([ro], [ex], lf, 100)
    assert test == []


def test_unextracted_tests_do_not_count():
    # Test 1 was not extracted (no_test column: every program fails it); test 2 was.
    passed = [[False, False, True], [False, False, False]]
    ro, ex = _task("x", passed, 0, tests=[None, {"input": "1\n", "output": "2\n"}, {"input": "", "output": "3\n"}])
    cfg = load_config(None, ["reward.code_reward_source=generated_tests"]).reward
    code, _, _ = assemble([ro], [ex], cfg, 100)
    assert sorted(r["reward"] for r in code) == [-1.0, 1.0]


def test_cli_contract_orders_coder_rows_by_generated_test_pass_rate(tmp_path):
    """``cure reward ... --set reward.code_reward_source=generated_tests`` on a task with num_gt 0."""
    ro, ex = _task("nogt", NO_GT, 0)
    write_jsonl(tmp_path / "r.jsonl", [ro])
    write_jsonl(tmp_path / "e.jsonl", [ex])
    rc = main(["reward", "--rollouts", str(tmp_path / "r.jsonl"), "--executions", str(tmp_path / "e.jsonl"),
               "--out", str(tmp_path / "o.jsonl"), "--summary", str(tmp_path / "s.json"),
               "--set", "reward.code_reward_source=generated_tests"])
    assert rc == 0
    rows = read_jsonl(tmp_path / "o.jsonl")
    coder = [r for r in rows if r["role"] == "coder"]
    assert len(coder) == 4 and not [r for r in rows if r["role"] == "tester"]
    rate = {f"nogt program {i}": np.mean(row) for i, row in enumerate(NO_GT)}
    ordered = sorted(coder, key=lambda r: r["reward"])
    assert [rate[r["response"]] for r in ordered] == sorted(rate.values())
    assert json.loads((tmp_path / "s.json").read_text())["tester_none"] == 1


def test_rollout_step_samples_tests_from_the_frozen_tester(tmp_path):
    """``reward.tester_model``: the rollout stage's tests come from that model, the programs from the policy."""
    import shutil
    import sys
    from pathlib import Path

    import cure
    from cure import stages
    from cure.prompts import PromptTemplates, test_prompt
    from cure.rollout.engine import SamplingParams
    from cure.rollout.hf import HFEngine
    from cure.rollout.stage import _render_for
    from cure.tasks import Task

    sys.path.insert(0, str(Path(__file__).parent))
    from rollout_fixtures import build_fixture_model
    from train_fixtures import build_tiny_model

    policy, tester = build_fixture_model(tmp_path / "policy"), build_tiny_model(tmp_path / "tester")
    for d in (policy, tester):
        shutil.copytree(Path(cure.__file__).parent / "templates" / "tiny", d / "prompts")
    task = Task(task_id="t", source="unit", question="Print the input.", example_input=["1\n"], example_output=["1\n"],
                test_input=["2\n"], test_output=["2\n"])
    write_jsonl(tmp_path / "tasks.jsonl", [task])
    cfg = load_config(None, ["rollout.engine=hf", "rollout.dtype=float32", "rollout.k_code=2", "rollout.k_test=2", "rollout.max_new_tokens=8",
                             "rollout.temperature=0", "rollout.p_give_example=0", f"reward.tester_model={tester}"])
    stages.rollout(str(policy), str(tmp_path / "tasks.jsonl"), cfg, 1, str(tmp_path / "r.jsonl"))
    rec = read_jsonl(tmp_path / "r.jsonl")[0]
    assert rec["tester_model"] == str(tester)
    engine = HFEngine(str(tester), cfg.rollout)
    templates = PromptTemplates.load(tester / "prompts")
    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=8, stop=cfg.rollout.stop)
    want = engine.generate([_render_for(engine, lambda t, _: test_prompt(task.question, [], [], t, templates, "reference"), None)], greedy)
    assert rec["test_responses"][0] == want[0][0].text


def _unlabeled_file(tmp_path):
    from cure.tasks import Task

    tasks = [Task(task_id="labelled", source="unit", question="Print the input.", test_input=["2\n"], test_output=["2\n"]),
             Task(task_id="bare", source="unit", question="Print the input.", example_input=["1\n"],
                  example_output=["1\n"], test_input=[], test_output=[])]
    write_jsonl(tmp_path / "tasks.jsonl", tasks)
    return tmp_path / "tasks.jsonl"


def test_a_task_file_holds_unlabeled_tasks_and_ground_truth_stages_refuse_them(tmp_path):
    """A task without ground-truth tests loads and is counted; ground-truth rewards and evaluation name it."""
    from cure import stages
    from cure.evaluate import evaluate_tasks
    from cure.tasks import TaskFormatError, load_tasks

    path = _unlabeled_file(tmp_path)
    tasks, bad = load_tasks(path)
    assert [t.task_id for t in tasks] == ["labelled", "bare"] and not bad
    assert stages.prepare_data(f"file:{path}", str(tmp_path / "copy.jsonl"))["unlabeled"] == 1
    no_model = str(tmp_path / "no-model")  # the checks come before any model is loaded
    with pytest.raises(TaskFormatError, match=r"1 task\(s\) without ground-truth tests \(bare\).*code_reward_source"):
        stages.rollout(no_model, str(path), load_config(None, []), 1, str(tmp_path / "r.jsonl"))
    with pytest.raises(TaskFormatError, match=r"evaluation: 1 task\(s\) without ground-truth tests \(bare\)"):
        evaluate_tasks(no_model, tasks, load_config(None, []))


@pytest.mark.gvisor
def test_label_free_round_on_an_unlabeled_task_trains_its_coder(tmp_path):
    """A task file whose second task has no ground truth: rollout, execute (gVisor) and reward with generated tests.

    The fixture model writes no runnable code, so the unlabeled task's extracted programs and tests are replaced by
    handwritten ones after the rollout (what a model that codes would have written); the rest is the stages' own."""
    import shutil
    import sys
    from pathlib import Path

    import cure
    from cure import stages

    sys.path.insert(0, str(Path(__file__).parent))
    from rollout_fixtures import build_fixture_model

    policy = build_fixture_model(tmp_path / "policy")
    shutil.copytree(Path(cure.__file__).parent / "templates" / "tiny", policy / "prompts")
    cfg = load_config(None, ["rollout.engine=hf", "rollout.dtype=float32", "rollout.k_code=4", "rollout.k_test=3",
                             "rollout.max_new_tokens=8", "rollout.p_give_example=0", "data.tasks_per_step=2",
                             "execute.isolation=gvisor", "execute.workers=1", "reward.code_reward_source=generated_tests"])
    r, e, w = (str(tmp_path / f) for f in ("r.jsonl", "e.jsonl", "w.jsonl"))
    stages.rollout(str(policy), str(_unlabeled_file(tmp_path)), cfg, 1, r)
    records = read_jsonl(r)
    bare = next(x for x in records if x["task_id"] == "bare")
    assert bare["gt_tests"] == []
    # programs that pass 3, 1, 2 and 0 of the three generated tests (inputs 1, 2, 3: print n; n == 2 is wrong once)
    bare["codes"] = ["print(input())", "print(2)", "n = input()\nprint(n if n != '2' else 0)", "print('x')"]
    bare["code_responses"] = [f"```python\n{c}\n```" for c in bare["codes"]]
    bare["tests"] = [{"input": f"{n}\n", "output": f"{n}\n"} for n in (1, 2, 3)]
    write_jsonl(r, records)
    stages.execute(r, cfg, e)
    table = next(x for x in read_jsonl(e) if x["task_id"] == "bare")
    assert table["num_gt"] == 0 and [sum(row) for row in table["passed"]] == [3, 1, 2, 0]
    stages.reward(r, e, cfg, w)
    rows = [x for x in read_jsonl(w) if x["task_id"] == "bare"]
    assert rows and all(x["role"] == "coder" for x in rows)  # no tester rows: Eq. 4 needs ground truth
    by_response = {x["response"]: x["reward"] for x in rows}
    rewards = [by_response[resp] for resp in bare["code_responses"]]
    assert rewards[0] > rewards[2] > rewards[1] > rewards[3]
