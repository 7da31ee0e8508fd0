"""Task records, sources and the `cure data prepare` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cure.tasks import TaskFormatError, load_hf_tasks, load_tasks, read_jsonl
from cure_cli import main

GOOD = {
    "question": "Read n and print n+1.",
    "test_time_limit": 1,
    "example_input": ["1\n"],
    "example_output": ["2\n"],
    "test_input": ["1\n", "5\n"],
    "test_output": ["2\n", "6\n"],
}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cure_format_json_list_gets_ids(tmp_path):
    f = tmp_path / "CodeContests.json"
    f.write_text(json.dumps([GOOD, GOOD]))
    tasks, bad = load_tasks(f)
    assert [t.task_id for t in tasks] == ["CodeContests/0", "CodeContests/1"] and not bad
    assert tasks[0].test_time_limit == 1.0


def test_bad_row_is_named_with_line_and_field(tmp_path):
    broken = dict(GOOD, test_output=["2\n"])  # one output for two inputs
    f = _write_jsonl(tmp_path / "t.jsonl", [GOOD, broken, dict(GOOD, question="")])
    with pytest.raises(TaskFormatError) as e:
        load_tasks(f)
    assert f"{f}:2" in str(e.value) and "test_input has 2 items but test_output has 1" in str(e.value)
    tasks, bad = load_tasks(f, on_error="skip")
    assert len(tasks) == 1 and len(bad) == 2
    assert bad[0].where.endswith(":2") and bad[1].where.endswith(":3") and bad[1].field == "question"


def test_invalid_json_line_and_wrong_types(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(GOOD) + "\n{not json\n" + json.dumps(dict(GOOD, test_time_limit="fast")) + "\n")
    tasks, bad = load_tasks(f, on_error="skip")
    assert len(tasks) == 1
    assert "not valid JSON" in bad[0].problem
    assert bad[1].field == "test_time_limit"


def test_duplicate_task_ids_rejected(tmp_path):
    f = _write_jsonl(tmp_path / "t.jsonl", [dict(GOOD, task_id="a"), dict(GOOD, task_id="a")])
    with pytest.raises(TaskFormatError, match="duplicate 'a'"):
        load_tasks(f)


def test_hf_dataset_from_save_to_disk(tmp_path):
    import datasets

    rows = [dict(GOOD, question=f"q{i}") for i in range(3)]
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])})
    ds.save_to_disk(str(tmp_path / "ds"))
    tasks, bad = load_hf_tasks(str(tmp_path / "ds"), split="test")
    assert len(tasks) == 1 and tasks[0].question == "q0" and not bad
    with pytest.raises(TaskFormatError, match="no split 'valid'"):
        load_hf_tasks(str(tmp_path / "ds"), split="valid")
    bad_ds = datasets.Dataset.from_list([dict(GOOD, test_input=["1\n"])])
    bad_ds.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TaskFormatError, match=r"row 0: .*test_input has 1 items"):
        load_hf_tasks(str(tmp_path / "bad"))


@pytest.mark.slow
def test_hub_name_without_network_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TaskFormatError, match="pass a local save_to_disk folder"):
        load_hf_tasks("no-such-org/no-such-dataset-cure")


def test_cli_prepare_humaneval_writes_164_valid_tasks(tmp_path):
    out = tmp_path / "he.jsonl"
    assert main(["data", "prepare", "--source", "humaneval", "--out", str(out)]) == 0
    tasks, bad = load_tasks(out)
    assert len(tasks) == 164 and not bad
    assert all(t.source == "humaneval" and len(t.test_input) >= 1 for t in tasks)


def test_cli_rejects_broken_file_with_row_and_field(tmp_path):
    f = _write_jsonl(tmp_path / "broken.jsonl", [GOOD, dict(GOOD, example_output=[])])
    proc = subprocess.run(
        [sys.executable, "-m", "cure_cli", "data", "prepare", "--source", "file", "--path", str(f), "--out", str(tmp_path / "o.jsonl")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert f"{f}:2" in proc.stderr and "example_input has 1 items but example_output has 0" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
    # with --skip-bad the good row is written and the bad one is reported and counted
    report = tmp_path / "r.json"
    rc = main(["data", "prepare", "--source", "file", "--path", str(f), "--skip-bad", "--report", str(report), "--out", str(tmp_path / "o.jsonl")])
    assert rc == 0 and len(read_jsonl(tmp_path / "o.jsonl")) == 1
    assert json.loads(report.read_text())["bad"] == 1


def test_cli_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "data prepare" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert main(["data", "prepare", "--source", "file", "--out", "x", "--set", "train.nope=1"]) == 2
    assert "train.nope" in capsys.readouterr().err
