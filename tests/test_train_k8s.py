"""The PyTorchJob spec (validated offline against a schema from the Training Operator CRD) and its lifecycle.

The lifecycle test drives the real ``kubernetes`` client against a small HTTP server on loopback that plays the
custom-objects API of a cluster with the Training Operator (create, status progression, delete).
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from cure.train import k8s

ARGS = ["--model", "/workspace/model", "--data", "/workspace/rewards.jsonl", "--out", "/workspace/ckpt",
        "--engine", "deepspeed", "--zero-stage", "3"]


def _job(**kw):
    return k8s.build_pytorchjob("cure-train-step-3", "kubeflow", "ghcr.io/example/cure-train:0.1", ARGS, **kw)


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
    assert container["command"][:4] == ["torchrun", "-m", "cure.cli", "train"] and container["command"][4:] == ARGS
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


class FakeCluster:
    """Just enough of the Kubernetes API for PyTorchJobs: POST, GET (Running, then a final condition), DELETE."""

    def __init__(self, final: str):
        self.final = final
        self.jobs: dict[str, dict] = {}
        self.gets = 0
        self.deleted: list[str] = []
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == f"/apis/{k8s.GROUP}/{k8s.VERSION}/namespaces/kubeflow/{k8s.PLURAL}"
                cluster.jobs[body["metadata"]["name"]] = body
                self._reply(201, body)

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                if name not in cluster.jobs:
                    return self._reply(404, {"kind": "Status", "code": 404})
                cluster.gets += 1
                job = dict(cluster.jobs[name])
                cond = {"type": "Running", "status": "True"} if cluster.gets < 3 else {
                    "type": cluster.final, "status": "True", "message": f"job {cluster.final.lower()}"}
                job["status"] = {"conditions": [{"type": "Created", "status": "True"}, cond]}
                self._reply(200, job)

            def do_DELETE(self):
                name = self.path.rsplit("/", 1)[-1]
                if name not in cluster.jobs:
                    return self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                cluster.deleted.append(name)
                del cluster.jobs[name]
                self._reply(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def api(self):
        from kubernetes import client

        conf = client.Configuration()
        conf.host = f"http://127.0.0.1:{self.server.server_address[1]}"
        return client.CustomObjectsApi(client.ApiClient(conf))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("final", ["Succeeded", "Failed"])
def test_run_creates_waits_and_cleans_up(final):
    cluster = FakeCluster(final)
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


def test_wait_times_out_and_still_cleans_up():
    cluster = FakeCluster("Succeeded")
    cluster.gets = -10**6  # stays Running
    try:
        with pytest.raises(TimeoutError, match="did not finish"):
            k8s.run_pytorchjob(_job(), timeout_s=0.05, poll_s=0.01, api=cluster.api())
        assert cluster.deleted == ["cure-train-step-3"]
        k8s.delete_pytorchjob("cure-train-step-3", "kubeflow", api=cluster.api())  # already gone: fine
    finally:
        cluster.close()
