"""The cluster path: the Job spec (validated offline against the Kubernetes schemas), sharding, and the
launcher's whole flow against an in-memory stand-in for the Kubernetes API whose "pods" run the real shard entry
point (the pod is the sandbox there, so the workload's own trusted programs run with isolation none)."""

from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest

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
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["resources"]["limits"] == {"cpu": "3", "memory": "6Gi"}
    assert not any(e["name"].endswith(("KEY", "SECRET", "TOKEN")) for e in c.get("env", []))
    assert "envFrom" not in c
    vols = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in vols["tmp"] and {m["mountPath"] for m in c["volumeMounts"]} == {"/tmp", "/shard"}
    assert [s["configMap"]["name"] for s in vols["shard"]["projected"]["sources"]] == ["cm-0", "cm-1", "cm-2"]


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
        workers=1, apis=(cluster, cluster), poll_s=0,
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
