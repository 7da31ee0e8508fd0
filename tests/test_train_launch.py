"""The train step's launcher (cure.train.launch) across nodes: train.nodes=2 submits a PyTorchJob (or, with
train.job_api=trainjob, a Kubeflow Trainer v2 TrainJob) and waits.

No cluster here: a stand-in for the CustomObjects API validates the job against its schema and runs its nodes the
way the Training Operator / Trainer would, as processes with the ``PET_*`` rendezvous variables and the store Secret's keys in their
environment, each in its own scratch folder. The store is moto's S3 server on loopback. The replicas train for
real (two gloo ranks on two "nodes", torch engine) and must produce what one process produces.
(The one-node torchrun path is tested in test_train_deepspeed.py through cure.steps.train.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
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
    """create / get / delete of PyTorchJobs; creating one starts its replicas as local processes."""

    def __init__(self, workdir: Path, secret_env: dict[str, str]) -> None:
        self.workdir, self.secret_env = workdir, secret_env
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append(body)
        if plural == k8s.PLURAL:  # PyTorchJob: a Master and Workers, the Secret as envFrom
            assert (group, version) == (k8s.GROUP, k8s.VERSION)
            k8s.validate_pytorchjob(body)
            replicas = body["spec"]["pytorchReplicaSpecs"]
            nodes = 1 + replicas.get("Worker", {}).get("replicas", 0)
            [c] = replicas["Master"]["template"]["spec"]["containers"]
            assert c["envFrom"] == [{"secretRef": {"name": "cure-minio"}}]
            command, nproc = c["command"], body["spec"]["nprocPerNode"]
        else:  # TrainJob: the runtime's trainer container with our command, the Secret's keys as env
            assert (group, version, plural) == (trainjob.GROUP, trainjob.VERSION, trainjob.PLURAL)
            trainjob.validate_trainjob(body)
            trainer = body["spec"]["trainer"]
            nodes, command, nproc = trainer["numNodes"], trainer["command"], str(trainer["numProcPerNode"])
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in trainer["env"]}
            assert refs == dict.fromkeys(("CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY",
                                          "CURE_S3_REGION"), "cure-minio")
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
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        obj = dict(self.created[-1])
        codes = [p.poll() for p in self.procs]
        if None in codes:
            return obj
        done = "Succeeded" if obj["kind"] == "PyTorchJob" else "Complete"
        phase = done if all(c == 0 for c in codes) else "Failed"
        obj["status"] = {"conditions": [{"type": phase, "status": "True", "message": f"exit codes {codes}"}]}
        return obj

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body=None):
        self.deleted.append(name)
        for p in self.procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("job_api", ["pytorchjob", "trainjob"])
def test_two_nodes_train_through_a_training_job_and_the_store(tiny_model, tmp_path, s3_env, monkeypatch, job_api):  # noqa: F811
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "rewards.jsonl"
    write_jsonl(data, RECORDS)
    train_cfg = small_train_config(policy_update_steps=2)
    baseline = train_step(str(tiny_model), RECORDS, train_cfg, str(tmp_path / "one"))

    cfg = CureConfig(train=small_train_config(policy_update_steps=2, nodes=2, nproc_per_node=1, job_api=job_api))
    cfg.pipeline.store_uri = "s3://cure"
    api = FakeTrainingOperator(tmp_path, s3_env)
    (tmp_path / "out").mkdir()
    m = run_train(str(tiny_model), str(data), cfg, str(tmp_path / "out"), api=api, poll_s=0.2)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(tmp_path.glob("node-*.log")))
    [job] = api.created
    assert job["metadata"]["namespace"] == "cure"
    if job_api == "pytorchjob":
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1, logs
        assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["priorityClassName"] == "cure-gpu"
    else:
        assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                             "kind": "ClusterTrainingRuntime"}
        assert job["spec"]["trainer"]["numNodes"] == 2, logs
    assert api.deleted == [job["metadata"]["name"]]
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
    assert one[5:8] == ["-m", "cure.cli", "train"] and one[one.index("--config") + 1] == "c.yaml"
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
