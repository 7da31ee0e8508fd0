"""The PyTorchJob spec (validated offline against a schema from the Training Operator CRD) and its lifecycle.

The lifecycle test drives the real ``kubernetes`` client against a small HTTP server on loopback that plays the
custom-objects API of a cluster with the Training Operator (create, status progression, delete).
"""

from __future__ import annotations

import copy

import pytest
import yaml

from cure.train import k8s

ARGS = ["--model", "/workspace/model", "--data", "/workspace/rewards.jsonl", "--out", "/workspace/ckpt",
        "--engine", "deepspeed", "--zero-stage", "3"]


def _job(**kw):
    return k8s.build_pytorchjob("cure-train-step-3", "cure", "ghcr.io/example/cure-train:0.1", ARGS, **kw)


def test_generated_spec_validates():
    spec = _job(
        nodes=3,
        gpus_per_node=8,
        env={"NCCL_DEBUG": "WARN"},
        secret_env_from=["minio-credentials"],
        service_account="cure-pipeline",
        node_selector={"nvidia.com/gpu.product": "H100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        active_deadline_s=6 * 3600,
    )
    k8s.validate_pytorchjob(spec)
    replicas = spec["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    container = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["command"][:4] == ["torchrun", "-m", "cure_cli", "train"] and container["command"][4:] == ARGS
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert spec["spec"]["nprocPerNode"] == "8"
    # a manifest written as YAML (what `kubectl apply` would get) reads back identically and still validates
    k8s.validate_pytorchjob(yaml.safe_load(yaml.safe_dump(spec)))


def test_single_node_and_cpu_job():
    spec = _job(nodes=1, gpus_per_node=0)
    k8s.validate_pytorchjob(spec)
    assert set(spec["spec"]["pytorchReplicaSpecs"]) == {"Master"}
    limits = spec["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def _set(path, value):
    def mutate(spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


MASTER = ["spec", "pytorchReplicaSpecs", "Master"]
CONTAINER = [*MASTER, "template", "spec", "containers", 0]


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (_set(["kind"], "TFJob"), "PyTorchJob"),
        (_set(["metadata", "name"], "Cure_Train"), "does not match"),
        (_set([*MASTER, "replicas"], 2), "1 was expected"),
        (_set([*MASTER, "restartPolicy"], "Sometimes"), "Sometimes"),
        (_set(["spec", "pytorchReplicaSpecs", "Chief"], {"replicas": 1, "template": {}}), "Chief"),
        (_set(["spec", "runPolicy", "cleanPodPolicy"], "Everything"), "Everything"),
        (_set(["spec", "nprocPerNode"], 8), "not of type"),
        (_set([*CONTAINER, "name"], "trainer"), "named 'pytorch'"),
        (_set([*CONTAINER, "resources"], {"limits": {"cpu": [1]}}), "limits/cpu"),
        (_set([*CONTAINER, "volumeMount"], []), "volumeMount"),
    ],
)
def test_broken_specs_are_rejected(mutate, expect):
    spec = copy.deepcopy(_job())
    mutate(spec)
    with pytest.raises(ValueError, match=expect):
        k8s.validate_pytorchjob(spec)


def test_bad_arguments():
    with pytest.raises(ValueError, match="DNS-1123"):
        k8s.build_pytorchjob("Bad_Name", "ns", "img", [])
    with pytest.raises(ValueError, match="nodes"):
        k8s.build_pytorchjob("ok", "ns", "img", [], nodes=0)


def test_rbac_rules_cover_the_calls():
    verbs = {(g, r): set(rule["verbs"]) for rule in k8s.RBAC_RULES for g in rule["apiGroups"] for r in rule["resources"]}
    assert {"create", "get", "delete"} <= verbs[(k8s.GROUP, k8s.PLURAL)]


class Operator:
    """The Training Operator's part behind tests/fake_k8s.py: Running for two reads, then the final condition."""

    def __init__(self, final: str):
        self.final, self.gets, self.deleted = final, 0, []

    def create(self, body: dict) -> None:
        k8s.validate_pytorchjob(body)

    def status(self, obj: dict) -> dict:
        self.gets += 1
        cond = {"type": "Running", "status": "True"} if self.gets < 3 else {
            "type": self.final, "status": "True", "message": f"job {self.final.lower()}"}
        return {"conditions": [{"type": "Created", "status": "True"}, cond]}

    def delete(self, obj: dict) -> None:
        self.deleted.append(obj["metadata"]["name"])


class FakeCluster:
    """tests/fake_k8s.py with the RBAC of manifests/, the job in namespace cure, KFP's runner account calling."""

    def __init__(self, final: str, tmp_path):
        from fake_k8s import FakeKubernetes

        self.operator = Operator(final)
        self.fake = FakeKubernetes(tmp_path, controller=self.operator).__enter__()

    @property
    def gets(self) -> int:
        return self.operator.gets

    @property
    def deleted(self) -> list[str]:
        return self.operator.deleted

    @property
    def jobs(self) -> dict:
        return self.fake.custom

    def api(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.fake.api_client())

    def close(self):
        assert not self.fake.forbidden, self.fake.forbidden
        self.fake.__exit__()


@pytest.mark.parametrize("final", ["Succeeded", "Failed"])
def test_run_creates_waits_and_cleans_up(final, tmp_path):
    cluster = FakeCluster(final, tmp_path)
    try:
        spec = _job(nodes=2)
        if final == "Succeeded":
            obj = k8s.run_pytorchjob(spec, poll_s=0.01, api=cluster.api())
            assert k8s.job_phase(obj) == "Succeeded"
        else:
            with pytest.raises(RuntimeError, match="job failed"):
                k8s.run_pytorchjob(spec, poll_s=0.01, api=cluster.api())
        assert cluster.gets == 3  # polled through Running to the final condition
        assert cluster.deleted == ["cure-train-step-3"] and not cluster.jobs
    finally:
        cluster.close()


def test_wait_times_out_and_still_cleans_up(tmp_path):
    cluster = FakeCluster("Succeeded", tmp_path)
    cluster.operator.gets = -10**6  # stays Running
    try:
        with pytest.raises(TimeoutError, match="did not finish"):
            k8s.run_pytorchjob(_job(), timeout_s=0.05, poll_s=0.01, api=cluster.api())
        assert cluster.deleted == ["cure-train-step-3"]
        k8s.delete_pytorchjob("cure-train-step-3", "cure", api=cluster.api())  # already gone: fine
    finally:
        cluster.close()
