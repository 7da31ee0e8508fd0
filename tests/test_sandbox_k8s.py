"""The cluster path: the Job spec (validated offline against the Kubernetes schemas), sharding, and the
launcher's whole flow against an in-memory stand-in for the Kubernetes API and against a fake API server on
loopback (tests/fake_k8s.py) driven by the real ``kubernetes`` client, whose "pods" run the real shard entry
point (the pod is the sandbox there, so the workload's own trusted programs run with isolation none): owner
references, every execute setting, results over the pod-log limit, and cleanup on SIGTERM/SIGINT."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
from fake_k8s import RUNNER, FakeKubernetes, namespace_pod_security, pod_security_violations

from cure.config import ExecuteConfig
from cure.execute import FINGERPRINT, rollout_fingerprint
from cure.sandbox import k8s, shard, workload

K8S_VERSION = "1.30.0"


def _job(**kw):
    return k8s.build_job("cure-execute-abc", 3, ["cm-0", "cm-1", "cm-2"], image="registry.example/cure-sandbox:1", **kw)


def test_job_validates_against_the_schema():
    kubernetes_validate.validate(_job(), K8S_VERSION, strict=True)


def test_job_is_a_locked_down_gvisor_indexed_job():
    job = _job(cpu="3", memory="6Gi")
    spec = job["spec"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3
    pod = spec["template"]["spec"]
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["automountServiceAccountToken"] is False
    assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "cure-sandbox"
    [c] = pod["containers"]
    sc = c["securityContext"]
    # root inside gVisor with the worker's six capabilities only: it gives each program a uid of its own
    assert sc["runAsUser"] == sc["runAsGroup"] == 0 and sc["runAsNonRoot"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["KILL", "SETUID", "SETGID", "CHOWN", "FOWNER", "DAC_OVERRIDE"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 0 and "fsGroup" not in pod["securityContext"]
    assert pod["shareProcessNamespace"] is False, "the shard process must be pid 1 (it reaps the programs' orphans)"
    assert {"name": "CURE_SANDBOX_OUTER", "value": "gvisor-pod"} in c["env"], "the worker's clean-up by uid"
    assert c["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}
    assert not any(e["name"].endswith(("KEY", "SECRET", "TOKEN")) for e in c.get("env", []))
    assert "envFrom" not in c
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["tmp"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    assert {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]} == {"/tmp": False, "/shard": True}
    assert [s["configMap"]["name"] for s in vols["shard"]["projected"]["sources"]] == ["cm-0", "cm-1", "cm-2"]


def test_job_meets_the_pod_security_level_of_its_namespace():
    """manifests/ enforce "baseline" in namespace cure: it admits the root worker with its six capabilities;
    "restricted" would refuse the sandbox pods (non-root only, no capability but NET_BIND_SERVICE)."""
    assert namespace_pod_security()["enforce"] == "baseline"
    pod = _job()["spec"]["template"]["spec"]
    assert pod_security_violations(pod, "baseline") == []
    refused = pod_security_violations(pod, "restricted")
    assert any("runAsNonRoot" in v for v in refused) and any("capabilities.add" in v for v in refused), refused
    # what baseline refuses: capabilities beyond its list, privileged containers, host paths
    c = pod["containers"][0]
    bad = {**pod, "containers": [{**c, "securityContext": {**c["securityContext"], "privileged": True,
                                                           "capabilities": {"add": ["SYS_ADMIN"]}}}],
           "volumes": [*pod["volumes"], {"name": "h", "hostPath": {"path": "/"}}]}
    assert len(pod_security_violations(bad, "baseline")) == 3


def test_a_job_the_namespace_refuses_fails_the_launcher_and_is_cleaned_up(tmp_path):
    rollouts, _, _ = workload.make_rollouts(2, workload.KINDS_OVERHEAD, n_programs=1, n_gt=1, n_gen=1)
    with FakeKubernetes(tmp_path / "nodes", pod_security={"enforce": "restricted"}) as api:
        with pytest.raises(RuntimeError, match='PodSecurity.*"restricted:latest".*runAsNonRoot'):
            k8s.run_on_cluster(rollouts, _DirStore(tmp_path / "store"), "x/sandbox", shards=1, image=IMAGE,
                               workers=1, api_client=api.api_client(), poll_s=0.05, owner=None)
        assert not api.jobs and not api.configmaps


def test_job_rejects_zero_shards():
    with pytest.raises(ValueError, match="shards"):
        k8s.build_job("x", 0, [], image="i")


def test_rbac_rules_shape():
    for rule in k8s.RBAC_RULES:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
    jobs = [r for r in k8s.RBAC_RULES if r["resources"] == ["jobs"]]
    assert jobs and {"create", "get", "delete"} <= set(jobs[0]["verbs"])


def test_sharding_and_results_block_round_trip():
    rollouts, _, _ = workload.make_rollouts(7, workload.KINDS_OVERHEAD, n_programs=2, n_gt=1, n_gen=1)
    parts = k8s.shard_rollouts(rollouts, 3)
    assert [len(p) for p in parts] == [3, 2, 2]
    assert sorted(r["task_id"] for p in parts for r in p) == sorted(r["task_id"] for r in rollouts)
    assert len(k8s.shard_rollouts(rollouts[:2], 5)) == 2
    block = "noise\n" + shard.results_block(rollouts) + "more noise\n"
    assert shard.parse_results_block(block) == rollouts
    with pytest.raises(ValueError, match="results block"):
        shard.parse_results_block("pod crashed")


class _DirStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put_file(self, key, path):
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(path).read_bytes())

    def get_file(self, key, path):
        Path(path).write_bytes((self.root / key).read_bytes())


class _FakeCluster:
    """Stores ConfigMaps; on Job creation validates the spec and runs each index's pod entry point in-process."""

    def __init__(self, tmp: Path, monkeypatch) -> None:
        self.tmp, self.monkeypatch = tmp, monkeypatch
        self.configmaps: dict[str, dict] = {}
        self.logs: dict[str, str] = {}
        self.jobs: dict[str, dict] = {}
        self.deleted: list[str] = []

    def create_namespaced_config_map(self, namespace, body):
        self.configmaps[body["metadata"]["name"]] = body

    def patch_namespaced_config_map(self, name, namespace, body):
        self.configmaps[name]["metadata"].update(body["metadata"])

    def create_namespaced_job(self, namespace, body):
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        name = body["metadata"]["name"]
        self.jobs[name] = body
        pod = body["spec"]["template"]["spec"]
        mount = self.tmp / "shard"
        mount.mkdir()
        for src in pod["volumes"][1]["projected"]["sources"]:
            for fname, data in self.configmaps[src["configMap"]["name"]]["binaryData"].items():
                (mount / fname).write_bytes(base64.b64decode(data))
        args = pod["containers"][0]["args"]
        for i in range(body["spec"]["completions"]):
            self.monkeypatch.setenv("JOB_COMPLETION_INDEX", str(i))
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert shard.main([a if a != "/shard" else str(mount) for a in args]) == 0
            self.logs[f"{name}-{i}"] = "log line\n" + out.getvalue()
        return {**body, "metadata": {**body["metadata"], "uid": f"uid-{name}"}}

    def read_namespaced_job_status(self, name, namespace):
        n = self.jobs[name]["spec"]["completions"]
        cond = SimpleNamespace(type="Complete", status="True", reason="", message="")
        return SimpleNamespace(status=SimpleNamespace(conditions=[cond], succeeded=n))

    def list_namespaced_pod(self, namespace, label_selector):
        labels = dict(kv.split("=") for kv in label_selector.split(","))
        pod = f"{labels['cure/job']}-{labels['batch.kubernetes.io/job-completion-index']}"
        item = SimpleNamespace(metadata=SimpleNamespace(name=pod), status=SimpleNamespace(phase="Succeeded"))
        return SimpleNamespace(items=[item])

    def read_namespaced_pod_log(self, name, namespace, container):
        return self.logs[name]

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.deleted.append(name)

    def delete_namespaced_config_map(self, name, namespace):
        self.deleted.append(name)


def test_run_on_cluster_end_to_end(tmp_path, monkeypatch):
    rollouts, expected, _ = workload.make_rollouts(5, workload.KINDS_OVERHEAD, n_programs=8, n_gt=2, n_gen=2)
    cluster = _FakeCluster(tmp_path, monkeypatch)
    store = _DirStore(tmp_path / "store")
    got = k8s.run_on_cluster(
        rollouts, store, "runs/r1/execute", shards=2, image="registry.example/cure-sandbox:1",
        workers=1, apis=(cluster, cluster), poll_s=0, owner=None,
    )
    assert [r["task_id"] for r in got] == [r["task_id"] for r in rollouts]
    assert [r["status"] for r in got] == expected
    assert sorted(p.name for p in (tmp_path / "store/runs/r1/execute").iterdir()) == [
        "out-0.jsonl.gz", "out-1.jsonl.gz", "shard-0.jsonl.gz", "shard-1.jsonl.gz"
    ]
    again = k8s.load_outputs(store, "runs/r1/execute", 2)
    assert sorted(r["task_id"] for r in again) == sorted(r["task_id"] for r in rollouts)
    assert len(cluster.deleted) == 3  # the Job and both ConfigMaps


def test_pod_entry_point_needs_only_the_standard_library():
    """The sandbox image installs cure without dependencies: the pod's modules must import with the stdlib alone."""
    import subprocess
    import sys

    src = Path(k8s.__file__).resolve().parents[2]
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); import cure.sandbox.shard, cure.execute; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pydantic', 'yaml', 'numpy', 'tqdm', 'kubernetes')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- namespace, owners, settings, large results, cancellation: the real client against a fake API on loopback ---

IMAGE = "registry.example/cure-sandbox:1"


def test_job_owner_is_the_launching_pod_in_its_own_namespace():
    pod = k8s.PodRef("cure-launcher-xyz", "cure", "1234-uid")
    job = _job(owner=pod)
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    assert job["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "cure-launcher-xyz", "uid": "1234-uid", "blockOwnerDeletion": False}
    ]
    # Kubernetes has no cross-namespace owners (the garbage collector would delete the Job at once): a launcher
    # in kubeflow is recorded, not made the owner.
    other = _job(owner=k8s.PodRef("runner-pod", "kubeflow", "5678-uid"))
    assert "ownerReferences" not in other["metadata"]
    assert other["metadata"]["annotations"] == {"cure.dev/launcher-pod": "kubeflow/runner-pod",
                                                "cure.dev/launcher-uid": "5678-uid"}


def test_launcher_pod_from_downward_api_env_or_hostname():
    env = {"CURE_POD_NAME": "p", "CURE_POD_NAMESPACE": "cure", "CURE_POD_UID": "u"}
    assert k8s.launcher_pod(None, "cure", env) == k8s.PodRef("p", "cure", "u")
    assert k8s.launcher_pod(None, "cure", {}) is None  # not in a pod
    lookups = []

    class Core:
        def read_namespaced_pod(self, name, namespace):
            lookups.append((name, namespace))
            return SimpleNamespace(metadata=SimpleNamespace(uid="from-api"))

    env = {"HOSTNAME": "p2", "CURE_POD_NAMESPACE": "cure"}
    assert k8s.launcher_pod(Core(), "cure", env) == k8s.PodRef("p2", "cure", "from-api")
    assert k8s.launcher_pod(Core(), "elsewhere", env) == k8s.PodRef("p2", "cure", "")  # no owner possible: no read
    assert lookups == [("p2", "cure")]


def test_every_execute_setting_reaches_the_pods():
    cfg = ExecuteConfig(workers=0, memory_mb=512, output_limit_bytes=4096, wall_factor=2.5, shards=3,
                        pod_cpu="3500m", pod_memory="6Gi", job_timeout_s=900, namespace="sandboxes")
    settings = k8s.settings_from_config(cfg)
    assert settings["namespace"] == "sandboxes" and settings["shards"] == 3 and settings["timeout_s"] == 900
    job = k8s.build_job("j", 1, ["cm"], image=IMAGE, namespace=settings["namespace"], cpu=settings["cpu"],
                        memory=settings["memory"], workers=settings["workers"], memory_mb=settings["memory_mb"],
                        output_limit_bytes=settings["output_limit_bytes"], wall_factor=settings["wall_factor"],
                        deadline_s=int(settings["timeout_s"]))
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    [c] = job["spec"]["template"]["spec"]["containers"]
    args = dict(zip(c["args"][::2], c["args"][1::2], strict=True))
    # workers 0 = one sandbox per whole CPU of the pod's limit, not os.cpu_count() of the node
    assert args == {"--dir": "/shard", "--workers": "3", "--memory-mb": "512", "--output-limit": "4096",
                    "--wall-factor": "2.5", "--log-limit": str(k8s.LOG_RESULT_LIMIT)}
    assert c["resources"]["limits"] == {"cpu": "3500m", "memory": "6Gi"}
    assert job["spec"]["activeDeadlineSeconds"] == 900 and job["metadata"]["namespace"] == "sandboxes"
    assert ExecuteConfig().namespace == "cure"
    with pytest.raises(ValueError, match="pod_cpu"):
        k8s.cpu_count("two")


def test_output_limit_is_applied_in_the_pod(tmp_path, capsys):
    noisy = {"task_id": "t", "codes": ["print('x' * 50000)\n"], "gt_tests": [{"input": "", "output": "x"}],
             "tests": [], "time_limit_s": 2.0}
    (tmp_path / "shard-0.jsonl.gz").write_bytes(shard.encode_records([noisy]))
    assert shard.main(["--dir", str(tmp_path), "--index", "0", "--workers", "1", "--output-limit", "4096"]) == 0
    [rec] = shard.parse_results_block(capsys.readouterr().out)
    assert rec["status"] == [["output_limit"]]


def test_loopback_run_owner_references_and_cleanup(tmp_path, monkeypatch):
    rollouts, expected, _ = workload.make_rollouts(4, workload.KINDS_OVERHEAD, n_programs=4, n_gt=2, n_gen=2)
    with FakeKubernetes(tmp_path / "nodes") as api:
        uid = api.add_pod("cure", "launcher-0")
        monkeypatch.setenv("CURE_POD_NAME", "launcher-0")
        monkeypatch.setenv("CURE_POD_NAMESPACE", "cure")
        monkeypatch.delenv("CURE_POD_UID", raising=False)
        patched: list[dict] = []
        route = api.route

        def spy(method, p, query, body):
            if method == "PATCH":
                patched.append(body)
            return route(method, p, query, body)

        api.route = spy  # type: ignore[method-assign]
        got = k8s.run_on_cluster(rollouts, _DirStore(tmp_path / "store"), "x/sandbox", shards=2, image=IMAGE,
                                 workers=1, api_client=api.api_client(), poll_s=0.05)
        assert [r["status"] for r in got] == expected
        [job] = [api_job for kind, _, api_job in api.deleted if kind == "Job"]
        assert ("GET", "/api/v1/namespaces/cure/pods/launcher-0") in api.requests  # uid read from the API
        [created] = api.created_jobs
        assert created["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": "launcher-0", "uid": uid, "blockOwnerDeletion": False}
        ]
        # the Job was owned by the launching pod, the ConfigMaps by the Job; all three deleted at the end
        assert len(patched) == 2
        for body in patched:
            [ref] = body["metadata"]["ownerReferences"]
            assert ref["kind"] == "Job" and ref["name"] == job and ref["uid"]
        assert not api.jobs and not api.configmaps
        assert sorted(k for k, _, _ in api.deleted) == ["ConfigMap", "ConfigMap", "Job"]
        # admitted under the namespace's "baseline"; the "restricted" warning names the root worker's settings
        assert api.pod_security == {"enforce": "baseline", "warn": "restricted"}
        assert any("runAsNonRoot" in w for w in api.warnings)
    creates = [p for m, p in api.requests if m == "POST"]
    assert all(p.startswith(("/api/v1/namespaces/cure/", "/apis/batch/v1/namespaces/cure/")) for p in creates)


def test_results_over_the_log_limit_split_the_shard(tmp_path, monkeypatch):
    """A shard whose results exceed the pod-log limit is re-run as halves until every part fits.

    The limit is lowered to a third of the results here so that a small, fast workload is "large"; in a cluster
    it is 8 MiB."""
    monkeypatch.delenv("CURE_POD_NAME", raising=False)
    rollouts, expected, _ = workload.make_rollouts(6, workload.KINDS_OVERHEAD, n_programs=4, n_gt=3, n_gen=3)
    records = [{"task_id": r["task_id"], "num_gt": 3, "passed": [[c == "pass" for c in row] for row in table],
                "status": table, FINGERPRINT: rollout_fingerprint(r),
                "executions": {"requested": 24, "run": 4 * len({t["input"] for t in r["gt_tests"] + r["tests"]})}}
               for r, table in zip(rollouts, expected, strict=True)]
    limit = max(len(shard.results_block(records)) // 3, max(len(shard.results_block([r])) for r in records))
    with FakeKubernetes(tmp_path / "nodes") as api:
        store = _DirStore(tmp_path / "store")
        got = k8s.run_on_cluster(rollouts, store, "big", shards=1, image=IMAGE, workers=1, owner=None,
                                 api_client=api.api_client(), poll_s=0.05, log_limit_bytes=limit)
        assert [r["status"] for r in got] == expected
        jobs = [name for kind, _, name in api.deleted if kind == "Job"]
        assert len(jobs) >= 3, jobs  # the first Job's single shard was too large, then its halves, ...
        assert not api.jobs and not api.configmaps
    assert sorted(r["task_id"] for r in k8s.load_outputs(store, "big", 64)) == sorted(r["task_id"] for r in rollouts)
    with FakeKubernetes(tmp_path / "nodes2") as api, pytest.raises(RuntimeError, match="log_limit_bytes"):
        k8s.run_on_cluster(rollouts[:1], store, "one", shards=1, image=IMAGE, workers=1, owner=None,
                           api_client=api.api_client(), poll_s=0.05, log_limit_bytes=100)


def test_results_block_of_several_megabytes_round_trips():
    import random

    rng = random.Random(0)
    records = [{"task_id": f"t{i}", "note": rng.randbytes(100_000).hex()} for i in range(20)]  # incompressible
    block = shard.results_block(records)
    assert len(block) > 2 << 20 and max(len(line) for line in block.splitlines()) <= 16384
    assert shard.parse_results_block("noise\n" + block + "more noise\n") == records


_LAUNCHER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from cure.sandbox import k8s, workload
from cure.store import open_store
from kubernetes import client
cfg = client.Configuration(); cfg.host = sys.argv[1]; cfg.api_key = {"authorization": "Bearer " + sys.argv[3]}
rollouts, _, _ = workload.make_rollouts(3, ["right"], n_programs=1, n_gt=1, n_gen=1)
print("launching", flush=True)
k8s.run_on_cluster(rollouts, open_store(sys.argv[2]), "p", shards=2, image="registry.example/cure-sandbox:1",
                   api_client=client.ApiClient(cfg), poll_s=0.05, owner=None)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_deletes_the_job_and_its_configmaps(tmp_path, sig):
    with FakeKubernetes(tmp_path / "nodes", run_pods=False) as api:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(k8s.__file__).resolve().parents[2]),
                                                            os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, api.url, str(tmp_path / "store"),
                                 api.token(*RUNNER)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert api.job_created.wait(60), "the launcher never created its Job"
            deadline = time.monotonic() + 10
            while len([r for r in api.requests if r[0] == "PATCH"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(api.jobs) == 1 and len(api.configmaps) == 2
            time.sleep(0.2)  # now it is polling the Job's status
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + sig, err[-2000:]
        assert not api.jobs and not api.configmaps, api.deleted
        assert sorted(k for k, _, _ in api.deleted) == ["ConfigMap", "ConfigMap", "Job"]
        assert f"signal {int(sig)}: deleting the sandbox Job" in err


def test_fake_api_authorises_every_request_against_the_rendered_rbac(tmp_path):
    """The fake refuses what a real API server refuses: no token (401), an account the manifests do not bind,
    a subresource the Role does not name (``jobs/status`` is not ``jobs``), a namespace the Role is not in."""
    from fake_k8s import rendered_manifests
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    with FakeKubernetes(tmp_path / "nodes", run_pods=False) as api:
        job = _job()
        batch = client.BatchV1Api(api.api_client())
        batch.create_namespaced_job("cure", job)
        batch.read_namespaced_job_status(job["metadata"]["name"], "cure")  # granted by manifests/base/role.yaml
        cases = [
            (client.BatchV1Api(api.api_client(("cure", "cure-sandbox"))), "cure", 403),  # sandbox pods: no rights
            (batch, "default", 403),  # the Role binds in namespace cure only
        ]
        anonymous = client.Configuration()
        anonymous.host = api.url
        cases.append((client.BatchV1Api(client.ApiClient(anonymous)), "cure", 401))
        for b, ns, code in cases:
            with pytest.raises(ApiException) as e:
                b.read_namespaced_job_status(job["metadata"]["name"], ns)
            assert e.value.status == code
        status = api.forbidden[-1]
        assert status["reason"] == "Forbidden" and status["code"] == 403
        assert 'cannot get resource "jobs/status" in API group "batch" in the namespace "default"' in status["message"]
    # A Role without the status subresource (the manifests before it was added) refuses the launcher's poll.
    rbac = [o for o in rendered_manifests("standalone") if o["kind"] in ("Role", "RoleBinding")]
    old = [{**o, "rules": [r for r in o["rules"] if r["resources"] != ["jobs/status"]]} if o["kind"] == "Role" else o
           for o in rbac]
    rollouts, _, _ = workload.make_rollouts(1, workload.KINDS_OVERHEAD, n_programs=1, n_gt=1, n_gen=1)
    with FakeKubernetes(tmp_path / "old", run_pods=False, extra_rbac=()) as api:
        api.rbac = old
        with pytest.raises(Exception, match="jobs/status"):
            k8s.run_on_cluster(rollouts, _DirStore(tmp_path / "store"), "x", shards=1, image=IMAGE, workers=1,
                               api_client=api.api_client(), poll_s=0.05, owner=None)


def test_run_cleanup_deletes_the_runs_jobs_and_workspace_only(tmp_path, monkeypatch):
    """The exit handler's cleanup, as KFP's runner account: the run's sandbox Job, PyTorchJob and TrainJob (by the
    run label) and its workspace PVC go; another run's Job stays."""
    from kubernetes import client

    from cure.train import k8s as pytorchjob
    from cure.train import trainjob

    with FakeKubernetes(tmp_path / "nodes", run_pods=False) as api:
        batch = client.BatchV1Api(api.api_client())
        custom = client.CustomObjectsApi(api.api_client())
        monkeypatch.setenv("CURE_RUN_ID", "run-a")
        batch.create_namespaced_job("cure", _job())
        other = k8s.build_job("cure-execute-other", 1, ["cm"], image=IMAGE, run_id="run-b")
        batch.create_namespaced_job("cure", other)
        pj = pytorchjob.build_pytorchjob("cure-train-a", "cure", IMAGE, [], nodes=2, gpus_per_node=0,
                                         labels=k8s.run_labels())
        custom.create_namespaced_custom_object(pytorchjob.GROUP, pytorchjob.VERSION, "cure", pytorchjob.PLURAL, pj)
        tj = trainjob.build_trainjob("cure-train-b", "cure", IMAGE, ["x"], nodes=2, procs_per_node=1, gpus_per_node=0,
                                     cpu="1", memory="1Gi", labels=k8s.run_labels())
        custom.create_namespaced_custom_object(trainjob.GROUP, trainjob.VERSION, "cure", trainjob.PLURAL, tj)
        api.add_pvc("kubeflow", "cure-training-abc12-kfp-workspace")
        counts = k8s.delete_run_objects("run-a", ["cure", ""], workflow="cure-training-abc12",
                                        workspace_namespace="kubeflow", api_client=api.api_client())
        assert counts == {"jobs": 1, "pytorchjobs": 1, "trainjobs": 1, "workspace": 1}
        assert list(api.jobs) == [("cure", "cure-execute-other")] and not api.custom and not api.pvcs
        assert not api.forbidden
        # again: nothing left, nothing fails
        assert k8s.delete_run_objects("run-a", ["cure"], "cure-training-abc12", "kubeflow",
                                      api_client=api.api_client())["jobs"] == 0


def test_the_stages_sandbox_runs_through_the_cluster_path_as_kfps_runner(tmp_path, monkeypatch):
    """cure.backends.run_programs, which the execute, evaluate, refinement and pairing stages call, with
    execute.backend kubernetes: the client configuration from a kubeconfig (as outside a pod), the execute settings, the store, the RBAC."""
    import yaml

    from cure.backends import run_programs
    from cure.config import CureConfig

    rollouts, expected, _ = workload.make_rollouts(3, workload.KINDS_OVERHEAD, n_programs=2, n_gt=1, n_gen=1)
    cfg = CureConfig()
    cfg.execute.backend, cfg.execute.shards, cfg.execute.workers = "kubernetes", 2, 1
    cfg.execute.namespace = "cure"
    cfg.pipeline.store_uri = (tmp_path / "store").as_uri()
    (tmp_path / "store").mkdir()
    with FakeKubernetes(tmp_path / "nodes") as api:
        kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                      "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
                      "users": [{"name": "runner", "user": {"token": api.token(*RUNNER)}}],
                      "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}]}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        from kubernetes.config import kube_config  # reads KUBECONFIG once, at import

        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.delenv("CURE_POD_NAME", raising=False)
        monkeypatch.setenv("HOSTNAME", "")
        monkeypatch.setenv("CURE_IMAGE_TAG", "1")
        got = run_programs(rollouts, cfg)
        assert [r["status"] for r in got] == expected
        assert not api.forbidden and not api.jobs and not api.configmaps
        assert ("GET", f"/apis/batch/v1/namespaces/cure/jobs/{api.created_jobs[0]['metadata']['name']}/status") \
            in api.requests
