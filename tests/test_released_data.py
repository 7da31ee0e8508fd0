"""The released task files load exactly as published.

The fixtures under ``fixtures/released/`` are shaped as the reference's conversion writes its files
(``data/transformation.ipynb`` of Gen-Verse/CURE: one indented JSON array, ``ensure_ascii=False``, integer
``task_id``, and the extra fields ``dataset``, ``solutions`` (null), ``difficulty``, ``exe_method``), one per named
source, named as the file on the hub.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cure.data import RELEASED, hub_location, load_released
from cure.tasks import TaskFormatError, load_tasks, read_jsonl
from cure_cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "released"
EXTRA = ("dataset", "difficulty", "exe_method", "solutions")


def fixture(name: str) -> Path:
    return FIXTURES / Path(RELEASED[name][1]).name


def rows(name: str) -> list[dict]:
    return json.loads(fixture(name).read_text(encoding="utf-8"))


def test_every_named_source_has_a_fixture_of_the_conversion_shape() -> None:
    assert {"livebench_reasonflux", "livecodebench_reasonflux", "mbpp_reasonflux"} <= set(RELEASED)
    for name in RELEASED:
        data = rows(name)
        assert data and all(isinstance(r["task_id"], int) and r["solutions"] is None for r in data), name
        assert [r["task_id"] for r in data] == list(range(len(data)))
        assert set(EXTRA) <= set(data[0])


def test_reasonflux_sources_follow_the_download_pattern() -> None:
    """data/download_data.py: repo_id=f"Gen-Verse/{dataset}", filename=f"{split}/{dataset}.json"."""
    for name, dataset in [("livebench_reasonflux", "LiveBench-ReasonFlux"),
                          ("livecodebench_reasonflux", "LiveCodeBench-ReasonFlux"), ("mbpp_reasonflux", "MBPP-ReasonFlux")]:
        assert RELEASED[name] == (f"Gen-Verse/{dataset}", f"test/{dataset}.json")


@pytest.mark.parametrize("name", list(RELEASED))
def test_cli_prepares_each_released_file_as_published(name: str, tmp_path: Path) -> None:
    out, report = tmp_path / "tasks.jsonl", tmp_path / "report.json"
    rc = main(["data", "prepare", "--source", name, "--path", str(fixture(name)), "--out", str(out),
               "--report", str(report)])
    assert rc == 0
    want = rows(name)
    summary = json.loads(report.read_text())
    assert (summary["written"], summary["bad"], summary["unlabeled"]) == (len(want), 0, 0)
    assert summary["extra_fields"] == {k: len(want) for k in EXTRA}
    got = read_jsonl(out)
    assert [r["task_id"] for r in got] == [f"{name}/{r['task_id']}" for r in want]
    for g, w in zip(got, want):
        assert g["source"] == name
        assert (g["question"], g["test_input"], g["test_output"]) == (w["question"], w["test_input"], w["test_output"])
        assert g["test_time_limit"] == w["test_time_limit"]
        assert {k: g[k] for k in EXTRA} == {k: w[k] for k in EXTRA}  # kept in the record, null included
    # the written file reads back as tasks (what rollout and evaluate load)
    assert [t.task_id for t in load_tasks(out)[0]] == [r["task_id"] for r in got]


def test_the_issue_command_exits_0_and_reports_counts(tmp_path: Path) -> None:
    """`cure data prepare --source codecontests_train --path F` on the conversion's output (it exited 2 with
    "field 'task_id': Input should be a valid string")."""
    out = tmp_path / "tasks.jsonl"
    proc = subprocess.run([sys.executable, "-m", "cure_cli", "data", "prepare", "--source", "codecontests_train",
                           "--path", str(fixture("codecontests_train")), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote 3 tasks to ")
    assert "other fields kept in the records: dataset (3), difficulty (3), exe_method (3), solutions (3)" in proc.stdout


def test_ids_integer_string_or_absent(tmp_path: Path) -> None:
    base = rows("livebench")[0]
    f = tmp_path / "f.json"
    f.write_text(json.dumps([dict(base, task_id=7), dict(base, task_id="q-12"), {k: v for k, v in base.items() if k != "task_id"},
                             dict(base, task_id=None)]))
    tasks, bad = load_released("livebench", str(f))
    assert [t.task_id for t in tasks] == ["livebench/7", "livebench/q-12", "livebench/2", "livebench/3"] and not bad
    # a file prepared before keeps its ids
    out = tmp_path / "tasks.jsonl"
    assert main(["data", "prepare", "--source", "livebench", "--path", str(f), "--out", str(out)]) == 0
    assert [t.task_id for t in load_released("livebench", str(out))[0]] == [t.task_id for t in tasks]
    # the plain file source keeps the file's own ids as text
    tasks, _ = load_tasks(f)
    assert [t.task_id for t in tasks] == ["7", "q-12", "f/2", "f/3"]
    # a boolean or a list is no id; two rows with one id are refused (1 and "1" are the same text)
    f.write_text(json.dumps([dict(base, task_id=1), dict(base, task_id="1")]))
    with pytest.raises(TaskFormatError, match=r"item 1\): field 'task_id': duplicate '1'"):
        load_tasks(f)
    f.write_text(json.dumps([dict(base, task_id=True)]))
    with pytest.raises(TaskFormatError, match="field 'task_id': Input should be a valid string"):
        load_tasks(f)


def test_a_bad_item_of_a_json_array_is_named_by_its_line(tmp_path: Path) -> None:
    data = rows("codecontests")
    data[1]["test_output"] = data[1]["test_output"][:1]
    f = tmp_path / "CodeContests.json"
    f.write_text(json.dumps(data, indent=2))
    line = next(i for i, text in enumerate(f.read_text().splitlines(), 1) if text == "  {" and i > 2)
    with pytest.raises(TaskFormatError, match=rf"CodeContests.json:{line} \(item 1\): .*test_input has 3 items"):
        load_released("codecontests", str(f))
    tasks, bad = load_released("codecontests", str(f), on_error="skip")
    assert len(tasks) == 1 and bad[0].where.endswith(f":{line} (item 1)") and bad[0].field == "(record)"
    f.write_text(json.dumps(data, indent=2)[:-3])  # cut off: not JSON
    with pytest.raises(TaskFormatError, match="not valid JSON"):
        load_released("codecontests", str(f), on_error="skip")
    f.write_text(json.dumps(data) + "\n]")
    with pytest.raises(TaskFormatError, match=":2: not valid JSON: extra data after the array"):
        load_released("codecontests", str(f))
    f.write_text("[]")
    assert load_released("codecontests", str(f)) == ([], [])


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_a_lone_surrogate_is_refused_naming_file_line_and_field(suffix: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """JSON's "\\udc80" escape decodes to a lone surrogate, which UTF-8 cannot encode: writing tasks.jsonl failed
    with a bare codec error when it sat in a field the task format does not type (here ``difficulty``)."""
    good = rows("mbpp")[0]
    bad = dict(good, task_id=1, difficulty="e\udc80")
    f = tmp_path / f"MBPP.{suffix}"
    if suffix == "jsonl":
        f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        where = f"{f}:2"
    else:
        f.write_text(json.dumps([good, bad], indent=2))
        where = f"{f}:{2 + json.dumps(good, indent=2).count(chr(10)) + 1} (item 1)"
    out = tmp_path / "tasks.jsonl"
    assert main(["data", "prepare", "--source", "mbpp", "--path", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{where}: field 'difficulty': holds a lone surrogate ('\\udc80' at character 1)" in err[0]
    assert not out.exists()
    nested = dict(good, test_output=["1\n", "x\ud800"])
    f.write_text(json.dumps(nested) + "\n" if suffix == "jsonl" else json.dumps([nested]))
    with pytest.raises(TaskFormatError, match=r"field 'test_output.1': holds a lone surrogate \('\\ud800' at character 1\)"):
        load_tasks(f)


def _hub_cache(root: Path, repo: str, filename: str, source: Path) -> None:
    """A Hugging Face hub cache holding one dataset file, laid out as huggingface_hub writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / ("datasets--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    f = base / "snapshots" / commit / filename
    f.parent.mkdir(parents=True)
    f.write_bytes(source.read_bytes())


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


@pytest.mark.parametrize("name", list(RELEASED))
def test_each_named_source_through_the_hub_cache(name: str, offline_hub: Path, tmp_path: Path) -> None:
    from cure.stages import prepare_data

    repo, filename = RELEASED[name]
    _hub_cache(offline_hub, repo, filename, fixture(name))
    n = len(rows(name))
    assert prepare_data(name, str(tmp_path / "t.jsonl")) == {"tasks": n, "bad_rows": 0, "unlabeled": 0}
    assert prepare_data(f"{name}:1", str(tmp_path / "t.jsonl"))["tasks"] == 1


def test_hub_repository_and_file_overridable_per_source(offline_hub: Path, tmp_path: Path) -> None:
    from cure.stages import prepare_data

    _hub_cache(offline_hub, "mirror-org/lb", "data/lb.json", fixture("livebench_reasonflux"))
    out = tmp_path / "t.jsonl"
    # the usual place is not in the cache: the hub error says so
    with pytest.raises(TaskFormatError, match="could not fetch test/LiveBench-ReasonFlux.json of dataset Gen-Verse/LiveBench-ReasonFlux"):
        load_released("livebench_reasonflux")
    assert main(["data", "prepare", "--source", "livebench_reasonflux", "--hub-repo", "mirror-org/lb", "--hub-file",
                 "data/lb.json", "--out", str(out)]) == 0
    assert [r["task_id"] for r in read_jsonl(out)] == ["livebench_reasonflux/0", "livebench_reasonflux/1"]
    assert prepare_data("livebench_reasonflux@mirror-org/lb/data/lb.json:1", str(out))["tasks"] == 1
    assert read_jsonl(out)[0]["source"] == "livebench_reasonflux"
    # a new repository alone keeps the usual file path
    assert hub_location("mbpp", "x/y") == ("x/y", "test/MBPP.json")
    with pytest.raises(TaskFormatError, match="expected OWNER/NAME"):
        hub_location("mbpp", "just-a-name")
    assert main(["data", "prepare", "--source", "file", "--path", str(fixture("mbpp")), "--hub-repo", "a/b",
                 "--out", str(out)]) == 2


def test_hf_loader_takes_integer_ids(tmp_path: Path) -> None:
    """The released JSON through the datasets library (source hf): its int64 task_id column becomes text."""
    from cure.tasks import load_hf_tasks

    tasks, bad = load_hf_tasks(str(fixture("mbpp_reasonflux")))
    assert [t.task_id for t in tasks] == ["0", "1"] and not bad
    assert tasks[0].model_extra is not None and tasks[0].model_extra["difficulty"] == "easy"


def test_text_ids_through_rollout_execute_and_reward(tmp_path: Path) -> None:
    """Ids that were integers in the file are the same text in every later artifact: rollout, execution and
    reward records, and the joins between them."""
    from cure.config import CureConfig, ExecuteConfig
    from cure.execute import execute_rollouts
    from cure.reward_stage import assemble
    from cure.rollout.engine import Completion
    from cure.rollout.stage import rollout_tasks
    from cure.validate import check_executions, check_join, check_rollouts

    class Scripted:
        chat, tokenizer = False, None

        def generate(self, prompts, params):
            out = []
            for p in prompts:
                if "solve problems" in p:
                    texts = ["```python\na, b = map(int, input().split())\nprint(min(a, b))\n```", "```python\nprint(0)\n```"]
                else:
                    texts = ["**Test Input:**\n```3 4```\n\n**Test Output:**\n```3```\n\n**Explanation:**\n\nmin"]
                out.append([Completion(texts[j % len(texts)], 5, "stop") for j in range(params.n)])
            return out

    class Chars:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    tasks, _ = load_released("mbpp", str(fixture("mbpp")))
    tasks = tasks[:1]
    cfg = CureConfig()
    cfg.rollout.k_code, cfg.rollout.k_test = 2, 2
    rollouts = rollout_tasks(tasks, Scripted(), Scripted(), cfg, Chars())
    executions = execute_rollouts(rollouts, ExecuteConfig(isolation="none", workers=1), progress=False)
    check_rollouts(rollouts, for_reward=True)
    check_executions(executions)
    check_join(rollouts, executions)
    coder, tester, _ = assemble(rollouts, executions, cfg.reward, 10000)
    assert {r["task_id"] for r in rollouts + executions + coder + tester} == {"mbpp/0"}
    assert executions[0]["passed"][0][:3] == [True, True, True] and executions[0]["passed"][1][:3] == [False, False, True]
