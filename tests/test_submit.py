"""``cure submit`` against a fake KFP API server on loopback that speaks the kfp_server_api v2beta1 REST shapes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cure.cli import main
from cure.experiment import upsert_record
from cure.store import open_store
from cure.submit import SubmitError, kfp_cron, typed_params


class FakeKFP:
    """Experiments, runs whose states follow a script per run, recurring runs; every request body is kept."""

    def __init__(self, run_states: list[list[str]], on_finish=None):
        self.run_states = run_states  # the states get_run reports, per submitted run, the last one repeating
        self.on_finish = on_finish  # called with the run index when a run reaches its last state
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring: list[dict] = []
        self.polls: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"{}")

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                if path == "/apis/v2beta1/healthz":
                    return self._send(200, {"multi_user": False})
                if path == "/apis/v2beta1/experiments":
                    return self._send(200, {"experiments": fake.experiments} if fake.experiments else {})
                if path.startswith("/apis/v2beta1/runs/"):
                    run_id = path.rsplit("/", 1)[1]
                    i = int(run_id.split("-")[1])
                    states = fake.run_states[min(i, len(fake.run_states) - 1)]
                    n = fake.polls.get(run_id, 0)
                    fake.polls[run_id] = n + 1
                    state = states[min(n, len(states) - 1)]
                    if n == len(states) - 1 and fake.on_finish:
                        fake.on_finish(i)
                    return self._send(200, {"run_id": run_id, "display_name": fake.runs[i]["display_name"], "state": state})
                return self._send(404, {"error": f"no route {path}"})

            def do_POST(self):  # noqa: N802
                path, body = self.path.split("?")[0], self._body()
                if path == "/apis/v2beta1/experiments":
                    exp = {**body, "experiment_id": f"exp-{len(fake.experiments)}"}
                    fake.experiments.append(exp)
                    return self._send(200, exp)
                if path == "/apis/v2beta1/runs":
                    run = {**body, "run_id": f"run-{len(fake.runs)}", "state": "PENDING"}
                    fake.runs.append(run)
                    return self._send(200, run)
                if path == "/apis/v2beta1/recurringruns":
                    job = {**body, "recurring_run_id": f"rr-{len(fake.recurring)}"}
                    fake.recurring.append(job)
                    return self._send(200, job)
                return self._send(404, {"error": f"no route {path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg")
    assert main(["compile", "--out", str(out), "--rounds", "4", "--segment", "2"]) == 0
    return out / "cure-training.yaml"


def _submit(fake: FakeKFP, package: Path, *extra: str) -> int:
    return main(["submit", "--host", fake.host, "--package", str(package), "--poll", "0.05", *extra])


def test_wait_fails_when_the_run_fails(package, capsys):
    with FakeKFP([["PENDING", "RUNNING", "FAILED"]]) as fake:
        rc = _submit(fake, package, "--wait", "--param", "pipeline__store_uri=file:///nonexistent-cure-store")
    assert rc == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"{fake.host}/#/runs/details/run-0" in out


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
    from cure.submit import package_parameters

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
        assert _submit(fake, package, "--recurring", "0 2 * *") == 1  # 4 fields: refused before any request
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

    env = {**os.environ, "KFP_ENDPOINT": fake.host, "EXPERIMENT": "cure-test", "PACKAGE": str(package), "MODE": mode,
           "STORE": f"file://{tmp_path / 'store'}", "CURE": f"{sys.executable} -m cure.cli",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    return subprocess.run(["bash", str(EXAMPLE), *params], env=env, capture_output=True, text=True, timeout=300)


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

    from cure.submit import configure_parser

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
