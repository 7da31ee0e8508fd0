"""Nothing lost, nothing leaked: a run never deletes what it did not create, the experiment's state stays one
consistent record (latest pointer, evaluations, one run at a time), and nonsense options are refused at load.

Most cases test the state logic directly (cure.experiment, cure.segment, cure_pipelines.local_run's checks), against the folder
store and the S3 store on moto's loopback server; one end-to-end smoke run covers the folder lock, the --out
protection, the resume of a missing final evaluation and kfp.local's temporary folders.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cure import experiment as exp
from cure import segment as loop
from cure.config import ConfigError, load_config
from cure.store import LocalStore, PreconditionFailed, StoreError, open_store
from cure_cli import main

REPO = Path(__file__).resolve().parents[1]
ACCESS, SECRET = "cure-rel-access", "cure-rel-secret"


# ---- stores -------------------------------------------------------------------------------------------------
_buckets = iter(range(1000))


def _s3_env(port: int) -> dict[str, str]:
    return {"CURE_S3_ENDPOINT": f"http://127.0.0.1:{port}", "CURE_S3_ACCESS_KEY": ACCESS, "CURE_S3_SECRET_KEY": SECRET}


@pytest.fixture(params=["folder", "s3"])
def store(request, tmp_path: Path):
    if request.param == "folder":
        return open_store(f"file://{tmp_path / 'store'}")
    from minio import Minio

    port = request.getfixturevalue("moto_port")
    name = f"cure-rel-{next(_buckets)}"
    Minio(f"127.0.0.1:{port}", ACCESS, SECRET, secure=False).make_bucket(name)
    return open_store(f"s3://{name}/runs", env=_s3_env(port), retries=2, backoff_s=0.01)


def _model(tmp_path: Path, text: str) -> Path:
    d = tmp_path / f"model-{text}"
    d.mkdir(exist_ok=True)
    (d / "weights.bin").write_text(text)
    return d


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


# ---- 1. cure run --out never deletes what it did not create ---------------------------------------------------
def _unrelated(tmp_path: Path) -> Path:
    out = tmp_path / "V"
    (out / "important").mkdir(parents=True)
    (out / "important" / "thesis.txt").write_text("x")
    return out


@pytest.mark.parametrize("extra", [["--rounds", "-1"], ["--eval-every", "0"], ["--segment", "0"], []])
def test_run_refuses_a_folder_of_other_things_and_bad_options_before_touching_it(tmp_path, capsys, extra):
    out = _unrelated(tmp_path)
    assert main(["run", "--preset", "smoke", "--out", str(out), *extra]) == 2
    err = _err(capsys)
    assert len(err.splitlines()) == 1, err
    assert (out / "important" / "thesis.txt").read_text() == "x"
    assert sorted(p.name for p in out.iterdir()) == ["important"]  # not even a lock file
    if extra:
        assert extra[0] in err and ">=" in err
    else:
        assert "not a cure run folder" in err


def _fake_experiment(tmp_path: Path, experiment: str = "local-smoke") -> Path:
    out = tmp_path / "run"
    store = open_store(f"file://{out / 'store'}")
    exp.promote(store, experiment, _model(tmp_path, "1"), 1, keep=True)
    (out / "run.json").write_text(json.dumps({"preset": "smoke", "experiment": experiment, "total_rounds": 1,
                                              "base_model": "tiny:0:40"}))
    (out / "notes.txt").write_text("mine")
    return out


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file() and p.name != ".cure-run.lock"}


def test_an_existing_experiment_needs_resume_or_overwrite(tmp_path, capsys):
    out = _fake_experiment(tmp_path)
    before = _tree(out)
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 2
    assert "--resume" in _err(capsys) and _tree(out) == before
    assert main(["run", "--preset", "demo", "--out", str(out), "--resume"]) == 2  # another preset's experiment
    assert "local-smoke" in _err(capsys) and _tree(out) == before
    assert main(["run", "--preset", "smoke", "--out", str(out), "--resume", "--overwrite"]) == 2
    assert _tree(out) == before


def test_overwrite_deletes_only_what_a_run_created(tmp_path, capsys, monkeypatch):
    import kfp.local

    def stop(*args, **kwargs):  # the folder is prepared; the pipeline itself is not what this test is about
        raise RuntimeError("stopped before the pipeline")

    monkeypatch.setattr(kfp.local, "init", stop)
    out = _fake_experiment(tmp_path)
    assert main(["run", "--preset", "smoke", "--out", str(out), "--overwrite"]) == 1
    assert "stopped before the pipeline" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"  # not created by a run: kept
    assert exp.latest_round(open_store(f"file://{out / 'store'}"), "local-smoke") == (None, 0)  # the experiment: afresh


def test_evaluation_runs_refuse_a_folder_of_other_things(tmp_path, capsys):
    out = _unrelated(tmp_path)
    assert main(["run", "--pipeline", "evaluation", "--preset", "smoke", "--out", str(out)]) == 2
    assert "not a cure run folder" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == ["important"]
    train_run = _fake_experiment(tmp_path)  # a training experiment's folder is not an evaluation's
    before = _tree(train_run)
    assert main(["run", "--pipeline", "evaluation", "--preset", "smoke", "--out", str(train_run)]) == 2
    assert "local-smoke" in _err(capsys) and _tree(train_run) == before


# ---- 8. one run per folder ------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_folder_refuses_at_once(tmp_path, capsys):
    from cure_pipelines.local_run import RunLock

    out = _fake_experiment(tmp_path)
    before = _tree(out)
    with RunLock(out):
        t0 = time.monotonic()
        assert main(["run", "--preset", "smoke", "--out", str(out), "--resume"]) == 2
        assert time.monotonic() - t0 < 30
    err = _err(capsys)
    assert "in use by another cure run" in err and f"pid {os.getpid()}" in err
    assert _tree(out) == before


# ---- 2. a missing or damaged latest pointer is an error naming the recovery --------------------------------
def test_a_missing_or_damaged_latest_is_an_error_naming_the_repair(store, tmp_path, capsys):
    for r in (1, 2):
        exp.promote(store, "e", _model(tmp_path, str(r)), r, keep=True)
    exp.upsert_record(store, "e", exp.ROUNDS, {"round": 2})
    store.delete("e/latest")
    with pytest.raises(StoreError, match="no latest pointer.*cure store repair --store .* --experiment e"):
        exp.plan_run(store, "e", 4, 2)
    assert exp.read_rounds(store, "e") == [{"round": 2}]  # nothing dropped
    store.put_bytes("e/latest", b"{not json")
    with pytest.raises(StoreError, match="latest pointer is damaged.*cure store repair"):
        exp.latest_round(store, "e")
    store.put_json("e/latest", {"name": "round-0009"})  # names a checkpoint that is not there
    with pytest.raises(StoreError, match="damaged.*cure store repair"):
        exp.latest_round(store, "e")
    env = _s3_env(int(store.endpoint.split(":")[1])) if store.uri.startswith("s3://") else {}
    for k, v in env.items():
        os.environ[k] = v
    try:
        assert main(["store", "repair", "--store", store.uri, "--experiment", "e"]) == 0
    finally:
        for k in env:
            os.environ.pop(k)
    assert "round-0002 (round 2)" in capsys.readouterr().out
    assert exp.latest_round(store, "e") == ("round-0002", 2)
    assert exp.plan_run(store, "e", 4, 2)["start"] == 3


def test_no_checkpoint_at_all_is_a_fresh_start(store):
    assert exp.latest_round(store, "new") == (None, 0)


def test_run_resume_over_a_lost_latest_refuses_with_the_command(tmp_path, capsys):
    out = _fake_experiment(tmp_path)
    open_store(f"file://{out / 'store'}").delete("local-smoke/latest")
    assert main(["run", "--preset", "smoke", "--out", str(out), "--resume"]) == 2
    err = _err(capsys)
    assert "cure store repair --store file://" in err and "--experiment local-smoke" in err


# ---- 3. a segment is done only when its final evaluation is recorded -----------------------------------------
@pytest.mark.slow
def test_a_promoted_round_without_its_evaluation_is_evaluated_by_the_next_run(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    exp.promote(store, "e", _model(tmp_path, "2"), 2, keep=True)
    exp.upsert_record(store, "e", exp.HISTORY, {"round": 0})
    # killed during round 2's evaluation, after its promotion: the experiment's total (2) is reached
    config, plan, active = _plan(tmp_path, total=2, segment=2, eval_every=2)
    p, cfg = json.loads(plan), loop.load_config(config)
    assert active and p["evaluate_start"] and p["start"] > p["last"]
    assert loop._eval_round(p, cfg, 0) == 2  # slot 0 evaluates the starting model, round 2
    assert [loop.slot_round(p, k) for k in (1, 2)] == [None, None]  # nothing to train
    exp.upsert_record(store, "e", exp.HISTORY, {"round": 2})
    _, plan, active = _plan(tmp_path, total=2, segment=2, eval_every=2)
    assert not active  # done: promoted and evaluated
    exp.take_lease(store, "e", "a-later-run", ttl_s=60)  # a run with nothing to do has released the lease
    # a round that is not an evaluation round needs none; round 0 is evaluated once
    _, plan, _ = _plan(tmp_path, total=6, segment=2, eval_every=4, run_id="a-later-run")
    p = json.loads(plan)
    assert not p["evaluate_start"] and loop._eval_round(p, cfg, 0) is None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _, plan, _ = _plan(fresh, total=2, segment=2, eval_every=2)
    assert loop._eval_round(json.loads(plan), cfg, 0) == 0


def _plan(tmp_path: Path, total: int, segment: int, run_id: str = "run-a", **pipeline):
    values = {"pipeline": {"store_uri": f"file://{tmp_path / 'store'}", "experiment": "e", **pipeline}}
    return loop.plan(values, total, segment, run_id=run_id)


# ---- 8. the experiment's lease in the store -------------------------------------------------------------------
def test_the_lease_admits_one_run_and_expires(store):
    exp.take_lease(store, "e", "run-a", ttl_s=60)
    exp.take_lease(store, "e", "run-a", ttl_s=60)  # the same run again: a renewal
    with pytest.raises(exp.LeaseHeld, match="in use by another run.*run-a.*cure store unlock"):
        exp.take_lease(store, "e", "run-b", ttl_s=60)
    exp.check_lease(store, "e", "run-a", ttl_s=60)
    with pytest.raises(exp.LeaseHeld, match="no longer holds"):
        exp.check_lease(store, "e", "run-b", ttl_s=60)
    # expired (a run that died): another run takes it over, and the dead one can no longer write
    exp.take_lease(store, "e", "run-b", ttl_s=60, now=time.time() + 120)
    with pytest.raises(exp.LeaseHeld, match="held by run run-b"):
        exp.check_lease(store, "e", "run-a", ttl_s=60)
    assert not exp.release_lease(store, "e", "run-a") and exp.release_lease(store, "e", "run-b")
    exp.take_lease(store, "e", "run-c", ttl_s=60)  # released: free at once
    assert exp.break_lease(store, "e")["run_id"] == "run-c"
    exp.take_lease(store, "e", "run-d", ttl_s=60)


def test_the_exit_handler_frees_a_failed_runs_lease_and_no_other(tmp_path, monkeypatch):
    """A run that failed after its plan task took the lease: the exit handler frees it (under the run id the plan
    task used, $CURE_RUN_ID), so the next run starts at once; a lease another run holds stays."""
    store = open_store(f"file://{tmp_path / 'store'}")
    monkeypatch.setenv("CURE_RUN_ID", "run-a")
    exp.take_lease(store, "e", "run-a", ttl_s=3600)
    assert loop.release_after_run(store.uri, "e", "{{$.pipeline_job_uuid}}")
    exp.take_lease(store, "e", "run-b", ttl_s=3600)  # the next run: no wait for the expiry
    assert not loop.release_after_run(store.uri, "e")  # run-a's exit handler again: run-b's lease stays
    with pytest.raises(exp.LeaseHeld, match="run-b"):
        exp.take_lease(store, "e", "run-c", ttl_s=3600)
    monkeypatch.delenv("CURE_RUN_ID")
    assert not loop.release_after_run("", "e", "run-b")  # no store: nothing to do
    assert loop.release_after_run(store.uri, "e", "run-b")  # outside a pod: the run id passed in


def test_the_exit_handler_says_how_to_free_a_lease_it_cannot_reach(monkeypatch, caplog):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a folder store inside a pod is refused
    assert not loop.release_after_run("file:///tmp/nowhere", "e", "run-a")
    assert "cure store unlock --store file:///tmp/nowhere --experiment e" in caplog.text


def test_conditional_writes_refuse_a_stale_version(store):
    store.put_if("x/lease.json", b"one", None)
    with pytest.raises(PreconditionFailed):
        store.put_if("x/lease.json", b"two", None)  # must not exist
    data, version = store.get_versioned("x/lease.json")
    assert data == b"one"
    store.put_if("x/lease.json", b"two", version)
    with pytest.raises(PreconditionFailed):
        store.put_if("x/lease.json", b"three", version)  # stale
    assert store.get_versioned("x/lease.json")[0] == b"two" and store.get_versioned("nothing") is None
    assert store.list("x") == ["x/lease.json"]  # the folder store's lock file is not an object


def test_two_runs_racing_for_the_lease_one_wins(store):
    results: dict[str, str] = {}
    barrier = threading.Barrier(4)

    def take(run_id: str) -> None:
        barrier.wait()
        try:
            exp.take_lease(store, "race", run_id, ttl_s=60)
            results[run_id] = "won"
        except exp.LeaseHeld:
            results[run_id] = "refused"

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["refused"] * 3 + ["won"], results


def test_a_plan_that_fails_leaves_the_lease_free(tmp_path):
    store = open_store(f"file://{tmp_path / 'store'}")
    exp.promote(store, "e", _model(tmp_path, "1"), 1, keep=True)
    store.put_bytes("e/history.json", b"[not json")
    with pytest.raises(StoreError, match="history.json is not valid JSON"):
        _plan(tmp_path, total=4, segment=2, run_id="attempt-1")
    store.put_json("e/history.json", [])
    _plan(tmp_path, total=4, segment=2, run_id="attempt-2")  # the task's retry, with a new id


def test_a_second_run_of_an_experiment_refuses_at_plan_and_cannot_promote(tmp_path):
    config, plan_a, _ = _plan(tmp_path, total=4, segment=2, run_id="run-a")
    with pytest.raises(exp.LeaseHeld, match="in use by another run"):
        _plan(tmp_path, total=4, segment=2, run_id="run-b")
    ws = tmp_path / "ws"
    loop.model_dir(str(ws), 2).mkdir(parents=True)
    (loop.model_dir(str(ws), 2) / "w.bin").write_text("2")
    stolen = json.dumps({**json.loads(plan_a), "run_id": "run-b"})  # a run that does not hold the lease
    with pytest.raises(exp.LeaseHeld, match="no longer holds"):
        loop.promote(config, stolen, 2, str(ws))
    store = open_store(f"file://{tmp_path / 'store'}")
    assert exp.latest_round(store, "e") == (None, 0)
    assert loop.promote(config, plan_a, 2, str(ws)) == {"round": 2.0, "kept": 0.0}


# ---- 6. eval.scales at config load; metrics never index an empty selection ------------------------------------
@pytest.mark.parametrize("scales", ["[[-1, 4], [4, 4]]", "[[100, 100]]", "[[0, 0]]", "[[4, 5]]"])
def test_eval_scales_are_checked_at_load(scales):
    cfg = load_config(None)
    cfg.eval.k_code, cfg.eval.k_test, cfg.eval.scales = 2, 2, [(2, 2)]  # field by field, checked at load
    with pytest.raises(ConfigError, match=r"^config: eval.scales entry .*eval.k_code \(4\)"):
        load_config(None, ["eval.k_code=4", "eval.k_test=4", f"eval.scales={scales}"])


def test_summarize_refuses_an_empty_best_of_n():
    from cure.metrics import summarize

    with pytest.raises(ValueError, match="at least 1 program"):
        summarize([([[True]], [[True]])], scales=[(0, 0)])
    with pytest.raises(ValueError, match="at least 1 program"):
        summarize([([[True]], [[True]])], scales=[(-1, 4)])


# ---- 7. non-finite numbers: standard JSON, flagged in reports --------------------------------------------------
def test_nonfinite_history_is_standard_json_and_flagged(tmp_path):
    from cure.report import format_round_table, write_report

    store = LocalStore(tmp_path / "store")
    history = [{"round": 0, "code_acc": 0.25, "p01": 0.5}, {"round": 2, "code_acc": 0.5, "p01": 0.25},
               {"round": 4, "code_acc": math.nan, "p01": math.inf}]
    for h in history:
        exp.upsert_record(store, "e", exp.HISTORY, h)
    text = (tmp_path / "store" / "e" / "history.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    stored = exp.read_history(store, "e")
    assert stored[2]["code_acc"] == "NaN" and stored[2]["p01"] == "Infinity"
    table = format_round_table(stored)
    assert "nan!" in table and "inf!" in table
    md = write_report(stored, tmp_path / "report")["markdown"].read_text()
    assert "Non-finite values" in md and "code_acc (round 4)" in md
    change = next(line for line in md.splitlines() if line.startswith("| code_acc |"))
    assert "(r4)" in change and "non-finite" in change  # "last" is round 4, not round 2's finite value
    # an older history with JSON's non-standard literals reads the same way
    assert "nan!" in format_round_table(json.loads(json.dumps(history)))


def test_train_refuses_an_empty_rewards_file(tmp_path, capsys):
    data = tmp_path / "rewards.jsonl"
    data.write_bytes(b"")
    out = tmp_path / "ckpt"
    assert main(["train", "--model", str(tmp_path / "model"), "--data", str(data), "--out", str(out)]) == 2
    err = _err(capsys)
    assert "no training examples" in err and str(data) in err
    assert not out.exists()


# ---- 10 and 13. nonsense options refused at config load, one line ------------------------------------------
@pytest.mark.parametrize("override, what", [
    ("execute.wall_factor=1e6", "execute.wall_factor"), ("execute.wall_factor=.inf", "execute.wall_factor"),
    ("execute.workers=-1", "execute.workers"), ("execute.workers=100000", "execute.workers"),
    ("train.learning_rate=.nan", "train.learning_rate"), ("data.default_time_limit_s=1e9", "data.default_time_limit_s"),
    ("execute.job_timeout_s=.inf", "execute.job_timeout_s"), ("rollout.k_code=true", "rollout.k_code"),
    ("eval.k_code=true", "eval.k_code"), ("rollout.api_max_concurrency=0", "rollout.api_max_concurrency"),
])
def test_nonsense_numbers_are_refused_at_load(override, what, tmp_path, capsys):
    with pytest.raises(ConfigError, match=what):
        load_config(None, [override])
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", override]) == 2
    err = _err(capsys)
    assert what in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_duplicate_yaml_keys_are_refused(tmp_path):
    f = tmp_path / "cfg.yaml"
    f.write_text("train:\n  learning_rate: 1.0e-5\n  seed: 1\n  learning_rate: 2.0e-5\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: not valid YAML \(line 4, column 3\): duplicate key 'learning_rate'"):
        load_config(f)
    f.write_text("train:\n  seed: 1\ntrain:\n  seed: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'train'"):
        load_config(f)


def test_a_tampered_rounds_record_fails_once_clearly(tmp_path, capsys):
    out = _fake_experiment(tmp_path)
    store = open_store(f"file://{out / 'store'}")
    exp.upsert_record(store, "local-smoke", exp.ROUNDS, {"round": 1})
    path = out / "store" / "local-smoke" / "rounds.json"
    path.write_text(path.read_text().replace("1", "7"))
    t0 = time.monotonic()
    assert main(["run", "--preset", "smoke", "--out", str(out), "--resume", "--rounds", "1"]) == 2
    err = _err(capsys)
    assert "checksum mismatch" in err and "rounds.json" in err and len(err.splitlines()) == 1
    assert time.monotonic() - t0 < 60 and not (out / "kfp").exists()  # refused before any task


# ---- 12. kfp.local's temporary folders ------------------------------------------------------------------------
def test_the_run_environment_removes_its_temporary_folder(tmp_path, monkeypatch):
    from cure_pipelines.local_run import run_environment

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    with run_environment(CURE_RUN_ID="x") as tmp:
        assert os.environ["TMPDIR"] == str(tmp) and os.environ["CURE_RUN_ID"] == "x"
        subprocess.run(["sh", "-c", 'd=$(mktemp -d); echo x > "$d/ephemeral_component.py"'], check=True)
        assert len(list(tmp.iterdir())) == 1
    assert os.environ["TMPDIR"] == str(tmp_path) and "CURE_RUN_ID" not in os.environ
    assert list(tmp_path.iterdir()) == []


# ---- end to end: lock, --out protection, missing final evaluation, temporary folders ------------------------
FAST = ["--base-model", "tiny:0:40", "--eval-every", "1", "--set", "rollout.max_new_tokens=48",
        "--set", "data.tasks_per_step=2", "--set", "rollout.k_code=2", "--set", "rollout.k_test=2",
        "--set", "eval.k_code=2", "--set", "eval.k_test=2", "--set", "eval.scales=[[2, 2]]"]


@pytest.mark.slow
def test_smoke_run_holds_its_folder_and_resumes_a_missing_final_evaluation(tmp_path, capsys):
    out = tmp_path / "run"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = ["run", "--preset", "smoke", "--rounds", "1", "--out", str(out), *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "cure_cli", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / "run.log").exists():  # the run holds the folder once its console starts
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        t0 = time.monotonic()
        assert main([*cmd, "--resume"]) == 2
        assert time.monotonic() - t0 < 30
        assert "in use by another cure run" in _err(capsys)
        output, _ = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert list(tmp.iterdir()) == []  # kfp.local's mktemp folders went with the run
    store = open_store(f"file://{out / 'store'}")
    assert [h["round"] for h in exp.read_history(store, "local-smoke")] == [0, 1]

    # Started again without --resume: refused, nothing changed.
    before = _tree(out)
    assert main(cmd) == 2
    assert "--resume" in _err(capsys) and _tree(out) == before

    # Killed during the final evaluation, after the promotion: the history lacks round 1. --resume evaluates it.
    store.put_json("local-smoke/history.json", exp.read_history(store, "local-smoke")[:1])
    assert main([*cmd[:3], "--out", str(out), "--resume", *FAST]) == 0
    assert [h["round"] for h in exp.read_history(store, "local-smoke")] == [0, 1]
    assert [h["round"] for h in json.loads((out / "history.json").read_text())] == [0, 1]
    assert exp.latest_round(store, "local-smoke") == ("round-0001", 1)
    assert len(list((out / "kfp").iterdir())) == 2

    # A real kill (SIGKILL of the process group) once round 2's evaluation starts; whether its promotion ran
    # before is up to the orchestrator. Either way the next --resume ends with round 2 promoted and evaluated.
    resume = [*cmd[:3], "--out", str(out), "--resume", *FAST]
    proc = subprocess.Popen([sys.executable, "-m", "cure_cli", *resume, "--rounds", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "round 2/2: evaluate" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert any("round 2/2: evaluate" in line for line in seen), "".join(seen[-40:])
    assert [h["round"] for h in exp.read_history(store, "local-smoke")] == [0, 1]
    assert main(resume) == 0
    assert [h["round"] for h in exp.read_history(store, "local-smoke")] == [0, 1, 2]
    assert exp.latest_round(store, "local-smoke") == ("round-0002", 2)
    assert [r["round"] for r in exp.read_rounds(store, "local-smoke")] == [1, 2]
