"""``cure submit`` against a fake KFP API server on loopback (tests/fake_kfp.py) that speaks the kfp_server_api
v2beta1 REST shapes and refuses runs and recurring runs as KFP 2.17's API server does."""

from __future__ import annotations

from pathlib import Path

import pytest
from cure_pipelines.submit import SubmitError, kfp_cron, typed_params
from fake_kfp import FakeKFP

from cure.experiment import upsert_record
from cure.store import open_store
from cure_cli import main


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg")
    assert main(["compile", "--out", str(out), "--rounds", "4", "--segment", "2"]) == 0
    return out / "cure-training.yaml"


def _submit(fake: FakeKFP, package: Path, *extra: str) -> int:
    return main(["submit", "--host", fake.url, "--package", str(package), "--poll", "0.05", *extra])


def test_wait_fails_when_the_run_fails(package, capsys):
    with FakeKFP([["PENDING", "RUNNING", "FAILED"]]) as fake:
        rc = _submit(fake, package, "--wait", "--param", "pipeline__store_uri=file:///nonexistent-cure-store")
    assert rc == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"{fake.url}/#/runs/details/run-0" in out


@pytest.mark.parametrize("final", ["CANCELED", "SUCCEEDED"])
def test_wait_exit_code_follows_the_final_state(package, final, tmp_path):
    with FakeKFP([["RUNNING", final]]) as fake:
        rc = _submit(fake, package, "--wait", "--param", f"pipeline__store_uri=file://{tmp_path}")
    assert rc == (0 if final == "SUCCEEDED" else 1)


def test_wait_times_out(package):
    with FakeKFP([["RUNNING"]]) as fake:
        assert _submit(fake, package, "--wait", "--timeout", "0.3") == 1


def test_parameters_keep_their_types(package):
    with FakeKFP([["SUCCEEDED"]]) as fake:
        rc = _submit(fake, package, "--param", "total_rounds=12", "--param", "train__learning_rate=1e-5",
                     "--param", "reward__post_stage=true", "--param", "pipeline__experiment=0123",
                     "--param", "noise_seeds=[3, 4]")
        assert rc == 0
    params = fake.runs[0]["runtime_config"]["parameters"]
    assert params["total_rounds"] == 12 and params["train__learning_rate"] == 1e-5
    assert params["reward__post_stage"] is True and params["pipeline__experiment"] == "0123"
    assert params["noise_seeds"] == [3, 4]


def test_bad_parameters_are_errors(package):
    from cure_pipelines.submit import package_parameters

    declared = package_parameters(package)
    with pytest.raises(SubmitError, match="no such parameter"):
        typed_params(["learning_rate=1"], declared)
    with pytest.raises(SubmitError, match="BOOLEAN"):
        typed_params(["reward__post_stage=maybe"], declared)
    with pytest.raises(SubmitError, match="NUMBER_INTEGER"):
        typed_params(["total_rounds=ten"], declared)


def test_recurring_run_gets_kfp_cron(package):
    with FakeKFP([["SUCCEEDED"]]) as fake:
        assert _submit(fake, package, "--recurring", "0 2 * * *", "--param", "total_rounds=120") == 0
        assert _submit(fake, package, "--recurring", "0 30 1 * * MON") == 0
        assert _submit(fake, package, "--recurring", "0 2 * *") == 2  # 4 fields: refused before any request
    assert [j["trigger"]["cron_schedule"]["cron"] for j in fake.recurring] == ["0 0 2 * * *", "0 30 1 * * MON"]
    assert fake.recurring[0]["max_concurrency"] in ("1", 1) and fake.recurring[0]["no_catchup"] is True
    assert fake.recurring[0]["runtime_config"]["parameters"]["total_rounds"] == 120


def test_cron_validation():
    assert kfp_cron("*/10 * * * *") == "0 */10 * * * *"
    assert kfp_cron("0 0 0 ? * 2-6") == "0 0 0 ? * 2-6"
    for bad in ("0 24 * * *", "0 0 32 * *", "61 * * * * *", "* * * *", "0 0 * * 9"):
        with pytest.raises(SubmitError):
            kfp_cron(bad)


def test_until_done_chains_runs_until_total_rounds(package, tmp_path):
    """Each fake run 'trains' two rounds in the store when it succeeds; the chain stops at total_rounds=4."""
    store_uri = f"file://{tmp_path / 'store'}"
    store = open_store(store_uri)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()

    def train_two_rounds(i: int) -> None:
        r = 2 * (i + 1)
        if store.latest_checkpoint("exp") == f"round-{r:04d}":
            return
        (ckpt / "w.bin").write_text(str(r))
        store.commit_checkpoint("exp", f"round-{r:04d}", ckpt, metadata={"round": r, "keep": True})
        upsert_record(store, "exp", "history.json", {"round": r, "code_acc": 0.5})

    with FakeKFP([["RUNNING", "SUCCEEDED"]], on_finish=train_two_rounds) as fake:
        rc = _submit(fake, package, "--until-done", "--param", f"pipeline__store_uri={store_uri}",
                     "--param", "pipeline__experiment=exp", "--param", "total_rounds=4")
    assert rc == 0
    assert len(fake.runs) == 2


def test_until_done_stops_on_a_failed_run_or_no_progress(package, tmp_path):
    store_uri = f"file://{tmp_path / 'store'}"
    store = open_store(store_uri)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "w.bin").write_text("2")

    def first_run_trains(i: int) -> None:
        if i == 0 and store.latest_checkpoint("exp") is None:
            store.commit_checkpoint("exp", "round-0002", tmp_path / "ckpt", metadata={"round": 2, "keep": True})

    args = ["--until-done", "--param", f"pipeline__store_uri={store_uri}", "--param", "pipeline__experiment=exp",
            "--param", "total_rounds=4"]
    with FakeKFP([["RUNNING", "SUCCEEDED"], ["RUNNING", "FAILED"]], on_finish=first_run_trains) as fake:
        assert _submit(fake, package, *args) == 1
    assert len(fake.runs) == 2  # the second run failed: the chain stops with a non-zero exit
    with FakeKFP([["SUCCEEDED"]]) as fake:  # a run that succeeds without advancing the experiment: no endless chain
        assert _submit(fake, package, *args) == 1
    assert len(fake.runs) == 1


REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "manifests" / "examples" / "kfp-runs.sh"


def _run_example(fake: FakeKFP, package: Path, mode: str, tmp_path: Path, *params: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "KFP_ENDPOINT": fake.url, "EXPERIMENT": "cure-test", "PACKAGE": str(package), "MODE": mode,
           "STORE": f"file://{tmp_path / 'store'}", "CURE": f"{sys.executable} -m cure_cli",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run(["bash", str(EXAMPLE), *params], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_example_script_fails_ci_when_the_run_fails(package, tmp_path):
    with FakeKFP([["RUNNING", "FAILED"]]) as fake:
        proc = _run_example(fake, package, "run", tmp_path, "train__learning_rate=2e-6")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    params = fake.runs[0]["runtime_config"]["parameters"]
    assert params["pipeline__experiment"] == "cure-test" and params["total_rounds"] == 120
    assert params["train__learning_rate"] == 2e-6


def test_example_script_schedules_with_kfp_cron(package, tmp_path):
    with FakeKFP([["SUCCEEDED"]]) as fake:
        proc = _run_example(fake, package, "recurring", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = fake.recurring[0]
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * *"  # 02:00 every day, not minute 2 of every hour
    assert int(job["max_concurrency"]) == 1 and job["no_catchup"] is True


def test_documented_submit_commands_parse():
    """Every `cure submit` line in the README and the operator guide parses, with a valid cron where it has one."""
    import argparse
    import re
    import shlex

    from cure_cli.submit import configure as configure_parser

    found = 0
    for doc in (REPO / "README.md", REPO / "docs" / "operator.md"):
        for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", doc.read_text(), re.DOTALL):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split(" #", 1)[0].strip()
                if not line.startswith("cure submit"):
                    continue
                parser = argparse.ArgumentParser()
                configure_parser(parser)
                args = parser.parse_args(shlex.split(line.replace('"$KFP_ENDPOINT"', "http://h"))[2:])
                if args.recurring:
                    kfp_cron(args.recurring)
                found += 1
    assert found >= 4


# --- the fake refuses what KFP 2.17 refuses; cure submit's bad input, auth, network ---------------------------


def _client(fake: FakeKFP, token: str | None = None):
    import kfp

    return kfp.Client(host=fake.url, existing_token=token)


def test_fake_kfp_refuses_what_the_api_server_refuses(package, tmp_path):
    """Each rule of tests/fake_kfp.py on a real kfp.Client request: a workspace without access modes (the compiled
    pipeline before it named one), a parameter of the wrong type or unknown, max concurrency, robfig's cron."""
    import yaml
    from kfp_server_api import ApiException

    docs = list(yaml.safe_load_all(package.read_text()))
    docs[1]["platforms"]["kubernetes"]["pipelineConfig"]["workspace"]["kubernetes"]["pvcSpecPatch"] = {}
    old = tmp_path / "no-access-mode.yaml"
    old.write_text(yaml.safe_dump_all(docs))
    with FakeKFP([["SUCCEEDED"]]) as fake:
        client = _client(fake)
        exp = client.create_experiment("e")
        cases = [
            (dict(pipeline_package_path=str(old)), "workspace PVC spec must specify accessModes"),
            (dict(pipeline_package_path=str(package), params={"total_rounds": "12"}), "requires type double or integer"),
            (dict(pipeline_package_path=str(package), params={"reward__post_stage": 1}), "requires type bool"),
            (dict(pipeline_package_path=str(package), params={"nope": 1}), "not required by pipeline: nope"),
        ]
        for kwargs, message in cases:
            with pytest.raises(ApiException) as e:
                client.run_pipeline(experiment_id=exp.experiment_id, job_name="r", **kwargs)
            assert e.value.status == 400 and message in e.value.body
        for kwargs, message in [
            (dict(cron_expression="0 0 2 * * *", max_concurrency=11), "at least 1 and at most 10"),
            (dict(cron_expression="0 */0 * * * *"), "Step of range should be a positive number"),
            (dict(cron_expression="0 5-1 * * * *"), "beyond end of range"),
            (dict(cron_expression="0 0 2 * * 7"), "above maximum (6)"),
        ]:
            with pytest.raises(ApiException) as e:
                client.create_recurring_run(experiment_id=exp.experiment_id, job_name="rr",
                                            pipeline_package_path=str(package), **kwargs)
            assert e.value.status == 400 and message in e.value.body, e.value.body
        # what robfig accepts, the fake accepts: 5 fields (seconds first), a never-firing Feb 31, a descriptor
        for cron in ("0 0 2 * *", "0 0 2 31 2 *", "@daily"):
            client.create_recurring_run(experiment_id=exp.experiment_id, job_name="rr", cron_expression=cron,
                                        pipeline_package_path=str(package))
        assert not fake.runs and len(fake.recurring) == 3


@pytest.mark.parametrize("args, what", [
    (["--param", "nope=1"], "--param nope: the pipeline has no such parameter"),
    (["--param", "total_rounds=2.5"], "--param total_rounds='2.5': not a valid NUMBER_INTEGER"),
    (["--recurring", "61 * * * *"], "minute '61': not in 0-59"),
    (["--recurring", "*/0 * * * *"], "the step after / must be a number >= 1"),
    (["--recurring", "5-1 * * * *"], "range 5-1 runs backwards"),
    (["--recurring", "0 2 31 2 *"], "it never runs"),
    (["--recurring", "0 0 * * 7"], "day of week '7': not in 0-6"),
    (["--api-timeout", "0"], "--api-timeout"),
])
def test_bad_input_is_rc_2_with_one_line_on_stderr(package, capsys, args, what):
    with FakeKFP([["SUCCEEDED"]]) as fake:
        assert _submit(fake, package, *args) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and what in lines[0] and lines[0].startswith("cure submit: error:"), out.err
    assert not fake.runs and not fake.recurring


def test_missing_package_is_bad_input(tmp_path, capsys):
    assert main(["submit", "--host", "http://127.0.0.1:9", "--package", str(tmp_path / "none.yaml")]) == 2
    assert "--package" in capsys.readouterr().err


def test_refused_connection_is_one_clear_line(package, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["submit", "--host", f"http://127.0.0.1:{port}", "--package", str(package), "--api-attempts", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert "Connection refused" in err[0] and "MaxRetryError" not in err[0] and f"127.0.0.1:{port}" in err[0]


def test_a_host_that_never_answers_times_out(package, capsys):
    import socket
    import time

    with socket.socket() as s:  # accepts connections (the kernel's backlog) and never answers
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        start = time.monotonic()
        rc = main(["submit", "--host", f"http://127.0.0.1:{s.getsockname()[1]}", "--package", str(package),
                   "--api-timeout", "0.3", "--api-attempts", "1"])
        seconds = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "timed out" in err[0], err
    assert seconds < 60


def test_token_from_the_flag_or_the_environment(package, capsys, monkeypatch):
    with FakeKFP([["SUCCEEDED"]], token="s3cret") as fake:
        assert _submit(fake, package, "--api-attempts", "1") == 1
        assert "--token or set KF_PIPELINES_TOKEN" in capsys.readouterr().err
        assert _submit(fake, package, "--token", "s3cret") == 0
        monkeypatch.setenv("KF_PIPELINES_TOKEN", "s3cret")
        assert _submit(fake, package) == 0
    assert len(fake.runs) == 2


def test_transient_errors_while_waiting_are_retried(package, tmp_path, monkeypatch, capsys):
    import cure_pipelines.submit

    monkeypatch.setattr(cure_pipelines.submit, "BACKOFF_S", 0.01)
    with FakeKFP([["RUNNING", "SUCCEEDED"]], flaky_gets=3) as fake:
        assert _submit(fake, package, "--wait", "--param", f"pipeline__store_uri=file://{tmp_path}") == 0
    with FakeKFP([["RUNNING", "SUCCEEDED"]], flaky_gets=50) as fake:  # the API stays down: one line, the run's URL
        assert _submit(fake, package, "--wait", "--api-attempts", "2") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run goes on" in err[0] and "/#/runs/details/run-0" in err[0], err
