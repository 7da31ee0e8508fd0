"""The train step's launcher (cure.train.launch) across nodes: train.nodes=2 submits a PyTorchJob (or, with
train.job_api=trainjob, a Kubeflow Trainer v2 TrainJob) and waits.

No cluster here: the launcher talks to tests/fake_k8s.py with the real ``kubernetes`` client, authorised by the
Role of manifests/ as KFP's runner account; its controller validates the job against its schema and runs its
nodes the way the Training Operator / Trainer would, as processes with the ``PET_*`` rendezvous variables and the store Secret's keys in their
environment, each in its own scratch folder. The store is moto's S3 server on loopback. The replicas train for
real (two gloo ranks on two "nodes", torch engine) and must produce what one process produces.
(The one-node torchrun path is tested in test_train_deepspeed.py through cure.stages.train.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_k8s import RUNNER, FakeKubernetes
from kubernetes import client
from train_fixtures import load_weights, make_records, small_train_config, tiny_model  # noqa: F401

from cure.config import CureConfig
from cure.tasks import write_jsonl
from cure.train import checkpoint as ckpt
from cure.train import k8s, trainjob
from cure.train.launch import clean_env, run_train
from cure.train.stage import train_step

ACCESS, SECRET = "cure-test-access", "cure-test-secret"
RECORDS = make_records(8, seed=3)
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def s3_env():
    from minio import Minio
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    Minio(f"127.0.0.1:{port}", ACCESS, SECRET, secure=False).make_bucket("cure")
    yield {"CURE_S3_ENDPOINT": f"http://127.0.0.1:{port}", "CURE_S3_ACCESS_KEY": ACCESS, "CURE_S3_SECRET_KEY": SECRET}
    server.stop()


class FakeTrainingOperator:
    """The controller behind tests/fake_k8s.py's custom objects: a created PyTorchJob or TrainJob (validated against
    its CRD schema) starts its replicas as local processes; its status follows their exit codes; delete kills them."""

    def __init__(self, workdir: Path, secret_env: dict[str, str]) -> None:
        self.workdir, self.secret_env = workdir, secret_env
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def create(self, body: dict) -> None:
        if body["kind"] == k8s.KIND:  # PyTorchJob: a Master and Workers, the Secret as envFrom
            k8s.validate_pytorchjob(body)
            replicas = body["spec"]["pytorchReplicaSpecs"]
            nodes = 1 + replicas.get("Worker", {}).get("replicas", 0)
            [c] = replicas["Master"]["template"]["spec"]["containers"]
            assert c["envFrom"] == [{"secretRef": {"name": "cure-minio"}}]
            command, nproc = c["command"], body["spec"]["nprocPerNode"]
        else:  # TrainJob: the runtime's trainer container with our command, the Secret's keys as env
            assert body["apiVersion"] == f"{trainjob.GROUP}/{trainjob.VERSION}" and body["kind"] == trainjob.KIND
            trainjob.validate_trainjob(body)
            trainer = body["spec"]["trainer"]
            nodes, command, nproc = trainer["numNodes"], trainer["command"], str(trainer["numProcPerNode"])
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in trainer["env"]}
            assert refs == dict.fromkeys(("CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY",
                                          "CURE_S3_REGION"), "cure-minio")
        self.created.append(body)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for rank in range(nodes):
            cmd = [sys.executable if a == "python" else a for a in command]
            env = clean_env({**self.secret_env, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1",
                             "PET_NNODES": str(nodes), "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": "127.0.0.1",
                             "PET_MASTER_PORT": str(port), "PET_NPROC_PER_NODE": nproc})
            log = open(self.workdir / f"node-{rank}.log", "w")  # noqa: SIM115
            self.procs.append(subprocess.Popen([*cmd, "--workdir", str(self.workdir / f"node-{rank}")], env=env,
                                               stdout=log, stderr=subprocess.STDOUT))

    def status(self, obj: dict) -> dict:
        codes = [p.poll() for p in self.procs]
        if None in codes:
            return {"conditions": [{"type": "Running", "status": "True"}]}
        done = "Succeeded" if obj["kind"] == "PyTorchJob" else "Complete"
        phase = done if all(c == 0 for c in codes) else "Failed"
        return {"conditions": [{"type": phase, "status": "True", "message": f"exit codes {codes}"}]}

    def delete(self, obj: dict) -> None:
        self.deleted.append(obj["metadata"]["name"])
        for p in self.procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("job_api", ["pytorchjob", "trainjob"])
@pytest.mark.slow
def test_two_nodes_train_through_a_training_job_and_the_store(tiny_model, tmp_path, s3_env, monkeypatch, job_api):  # noqa: F811
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, RECORDS)
    train_cfg = small_train_config(policy_update_steps=2)
    baseline = train_step(str(tiny_model), RECORDS, train_cfg, str(tmp_path / "one"))

    cfg = CureConfig(train=small_train_config(policy_update_steps=2, nodes=2, nproc_per_node=1, job_api=job_api))
    cfg.pipeline.store_uri = "s3://cure"
    operator = FakeTrainingOperator(tmp_path, s3_env)
    (tmp_path / "out").mkdir()
    monkeypatch.setenv("CURE_RUN_ID", "run-1")
    with FakeKubernetes(tmp_path / "k8s", controller=operator) as cluster:  # RBAC of manifests/, as KFP's runner
        api = client.CustomObjectsApi(cluster.api_client())
        m = run_train(str(tiny_model), str(data), cfg, str(tmp_path / "out"), api=api, poll_s=0.2)
        assert not cluster.forbidden and not cluster.custom
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("node-*.log")))
    [job] = operator.created
    assert job["metadata"]["labels"]["cure/run"] == "run-1"  # what the run's exit handler deletes by
    assert job["metadata"]["namespace"] == "cure"
    if job_api == "pytorchjob":
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1, logs
        assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["priorityClassName"] == "cure-gpu"
    else:
        assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                             "kind": "ClusterTrainingRuntime"}
        assert job["spec"]["trainer"]["numNodes"] == 2, logs
    assert operator.deleted == [job["metadata"]["name"]]
    assert m["world_size"] == 2, logs
    assert m["loss"] == pytest.approx(baseline["loss"], abs=1e-5)
    got, want = load_weights(ckpt.resolve_model_dir(tmp_path / "out")), load_weights(ckpt.resolve_model_dir(tmp_path / "one"))
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst < 1e-5, f"two nodes trained differently from one process: {worst}"
    from cure.store import open_store

    assert open_store("s3://cure").list("cure/train-jobs") == []  # the step's transfer prefix is gone


def test_multinode_refuses_what_cannot_work(tiny_model, tmp_path):  # noqa: F811
    cfg = CureConfig(train=small_train_config(nodes=2))
    with pytest.raises(ValueError, match="s3:// store"):
        run_train(str(tiny_model), str(tmp_path / "r.jsonl"), cfg, str(tmp_path / "o"), api=object())
    cfg.train.save_optimizer_state = True
    with pytest.raises(ValueError, match="save_optimizer_state"):
        run_train(str(tiny_model), str(tmp_path / "r.jsonl"), cfg, str(tmp_path / "o"), api=object())


def test_torchrun_command_single_and_multi_node():
    from cure.train.launch import torchrun_command

    one = torchrun_command("m", "d", "o", "c.yaml", 4)
    assert one[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert one[5:8] == ["-m", "cure_cli", "train"] and one[one.index("--config") + 1] == "c.yaml"
    multi = torchrun_command("m", "d", "o", "c.yaml", 8, nodes=2, ref_model_dir="r")
    assert "--standalone" not in multi and "--nnodes=2" in multi and multi[-2:] == ["--ref-model", "r"]
    assert os.path.basename(multi[0]).startswith("python")


def test_trainjob_schema_rejects_what_the_api_would():
    good = trainjob.build_trainjob("cure-train-x", "cure", "img:1", ["python"], nodes=2, procs_per_node=8,
                                   gpus_per_node=8, cpu="16", memory="256Gi", secret="cure-minio")
    trainjob.validate_trainjob(good)
    assert good["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    bad = {**good, "metadata": {"name": "9-starts-with-a-digit"}}
    with pytest.raises(ValueError, match="metadata/name"):
        trainjob.validate_trainjob(bad)
    typo = {**good, "spec": {**good["spec"], "trainer": {**good["spec"]["trainer"], "numNode": 2}}}
    with pytest.raises(ValueError, match="numNode"):
        trainjob.validate_trainjob(typo)


def test_more_ranks_than_gpus_is_refused():
    from cure.train.launch import check_gpus

    check_gpus(8, visible=8)
    check_gpus(2, visible=0)  # CPU: gloo ranks
    with pytest.raises(ValueError, match="sees 4 GPU"):
        check_gpus(8, visible=4)


def test_job_deadline_stays_within_the_launching_pods():
    from cure.train.launch import job_deadline

    assert job_deadline(24 * 3600, {"CURE_POD_DEADLINE_S": str(6 * 3600)}) == 6 * 3600 - 60
    assert job_deadline(3600, {"CURE_POD_DEADLINE_S": str(6 * 3600)}) == 3600
    assert job_deadline(24 * 3600, {}) == 24 * 3600


_MULTINODE = """
import sys
from kubernetes import client
from cure.config import CureConfig
from cure.train.launch import run_multinode
cfg = CureConfig()
cfg.train.nodes, cfg.train.nproc_per_node, cfg.train.save_optimizer_state = 2, 1, False
cfg.pipeline.store_uri = "s3://cure"
c = client.Configuration(); c.host = sys.argv[1]; c.api_key = {"authorization": "Bearer " + sys.argv[2]}
run_multinode(sys.argv[3], sys.argv[4], cfg, sys.argv[5], api=client.CustomObjectsApi(client.ApiClient(c)),
              image="registry.example/cure-train:1", poll_s=0.05)
"""


class _NeverDone:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def create(self, body: dict) -> None:
        k8s.validate_pytorchjob(body)

    def status(self, obj: dict) -> dict:
        return {"conditions": [{"type": "Running", "status": "True"}]}

    def delete(self, obj: dict) -> None:
        self.deleted.append(obj["metadata"]["name"])


def test_sigterm_deletes_the_training_job(tmp_path, s3_env, monkeypatch):
    """A cancelled run (SIGTERM to the train pod) deletes its PyTorchJob and the step's transfer prefix: before,
    the job kept its GPUs until its 24 h deadline."""
    import signal
    import time

    from cure.store import open_store

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "rewards.jsonl").write_text("")
    operator = _NeverDone()
    with FakeKubernetes(tmp_path / "k8s", controller=operator) as cluster:
        env = {**os.environ, **s3_env, "PYTHONPATH": str(SRC)}
        proc = subprocess.Popen([sys.executable, "-c", _MULTINODE, cluster.url, cluster.token(*RUNNER), str(model),
                                 str(tmp_path / "rewards.jsonl"), str(tmp_path / "out")], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not cluster.custom and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            assert cluster.custom, proc.communicate(timeout=30)[1][-2000:] if proc.poll() is not None else "no job"
            time.sleep(0.3)  # polling the job now
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert not cluster.custom and len(operator.deleted) == 1 and not cluster.forbidden
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    assert open_store("s3://cure").list("cure/train-jobs") == []
