"""How the train step uses the GPUs it was given: one process, ``torchrun`` in its pod, or a multi-node job.

:func:`run_train` is what :func:`cure.stages.train` calls; it picks by ``train.nodes`` x ``train.nproc_per_node``:

* 1 x 1: :func:`cure.train.stage.train_step` in this process (the offline default);
* 1 x N: ``torchrun --standalone --nproc-per-node=N -m cure_cli train ...`` in this pod, one rank per GPU
  (DeepSpeed ZeRO-3 partitions parameters, gradients and optimizer state over the ranks; ``train.offload``
  moves the optimizer state and the parameters to CPU memory so a 7B model fits on fewer or smaller GPUs);
* M x N, M > 1: a Kubeflow Training Operator ``PyTorchJob`` (kubeflow.org/v1, :mod:`cure.train.k8s`; the
  default, ``train.job_api``) or a Kubeflow Trainer v2 ``TrainJob`` (:mod:`cure.train.trainjob`) of M nodes
  with N GPUs each, whose every node runs :func:`node_main` (``python -m cure.train.launch``). The
  replicas live in ``train.namespace`` (``cure``), where a PersistentVolumeClaim of the launching pod (in
  KFP's namespace) cannot be mounted, so the step's inputs and outputs travel through the artifact store under
  ``<experiment>/train-jobs/<job>/``: the launcher uploads model, reference, rewards and config; each replica
  downloads them, runs ``torchrun`` (the operator sets ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``...,
  which torchrun reads); node 0 uploads the checkpoint; the launcher downloads it and deletes the prefix.

Every path returns the same metrics dict as ``train_step`` (from the checkpoint root's ``metrics.json`` when
another process trained).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from cure.cluster import cleanup_on_signals, run_labels
from cure.config import CureConfig, dump_config
from cure.images import image_for
from cure.store import open_store
from cure.tasks import read_jsonl
from cure.train import checkpoint as ckpt
from cure.train import k8s, trainjob

log = logging.getLogger(__name__)

_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
              "ROLE_RANK", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def torchrun_command(model_dir: str, rewards_path: str, out_dir: str, config_path: str, nproc: int, *,
                     nodes: int = 1, ref_model_dir: str | None = None, resume_from: str | None = None,
                     log_dir: str | None = None) -> list[str]:
    """``torchrun ... -m cure_cli train`` for one node of a ``nodes`` x ``nproc`` run.

    One node: ``--standalone`` (a local rendezvous). Several: no rendezvous flags, torchrun takes them from the
    ``PET_*`` variables the training operator sets on every replica.
    """
    argv = [sys.executable, "-m", "torch.distributed.run"]
    argv += ["--standalone"] if nodes == 1 else [f"--nnodes={nodes}"]
    argv += [f"--nproc-per-node={nproc}", "-m", "cure_cli", "train", "--config", config_path,
             "--model", model_dir, "--data", rewards_path, "--out", out_dir]
    for flag, value in (("--ref-model", ref_model_dir), ("--resume", resume_from), ("--log-dir", log_dir)):
        if value:
            argv += [flag, value]
    return argv


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the rendezvous variables of an earlier one-process group."""
    return {**{k: v for k, v in os.environ.items() if k not in _DIST_VARS}, **(extra or {})}


def run_train(model_dir: str, rewards_path: str, cfg: CureConfig, out_dir: str, *, ref_model_dir: str | None = None,
              resume_from: str | None = None, log_dir: str | None = None, api: Any = None,
              poll_s: float = 10.0) -> dict[str, Any]:
    """One training step on ``train.nodes`` x ``train.nproc_per_node`` processes; writes the checkpoint root
    ``out_dir`` and returns the step's metrics (see :func:`cure.train.stage.train_step`). ``api`` and
    ``poll_s``: the Kubernetes CustomObjectsApi and its polling interval, for ``train.nodes`` > 1."""
    nodes, nproc = cfg.train.nodes, cfg.train.nproc_per_node
    if nodes > 1:
        return run_multinode(model_dir, rewards_path, cfg, out_dir, ref_model_dir=ref_model_dir,
                             resume_from=resume_from, log_dir=log_dir, api=api, poll_s=poll_s)
    if nproc == 1:
        from cure.train.stage import train_step

        return train_step(model_dir, read_jsonl(rewards_path), cfg.train, out_dir, ref_model_dir=ref_model_dir,
                          resume_from=resume_from, log_dir=log_dir, separate_training=cfg.reward.separate_training)
    check_gpus(nproc)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cure-launch-") as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(dump_config(cfg))
        cmd = torchrun_command(model_dir, rewards_path, out_dir, str(config_path), nproc, ref_model_dir=ref_model_dir,
                               resume_from=resume_from, log_dir=log_dir)
        log.info("training on %d processes: %s", nproc, " ".join(cmd))
        proc = subprocess.run(cmd, env=clean_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} processes failed (exit {proc.returncode}); the ranks' errors "
                           "are in the log above")
    return read_metrics(out_dir)


def check_gpus(nproc: int, visible: int | None = None) -> None:
    """On a GPU machine, one rank per GPU: refuse more ranks than visible GPUs (CPU runs use gloo, any count)."""
    if visible is None:
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible and nproc > visible:
        raise ValueError(f"train.nproc_per_node={nproc} but this pod sees {visible} GPU(s): request {nproc} GPUs "
                         f"for the train pod (--gpus) or set train.nproc_per_node={visible}")


def read_metrics(out_dir: str | Path) -> dict[str, Any]:
    from cure.train.stage import METRICS_FILE

    path = Path(out_dir) / METRICS_FILE
    if not path.is_file():
        raise RuntimeError(f"training finished but wrote no {path}: rank 0 did not reach the end of the step")
    metrics = json.loads(path.read_text())
    if not Path(metrics.get("checkpoint", "")).is_dir():  # trained elsewhere: the checkpoint is under out_dir

        metrics["checkpoint"] = str(ckpt.resolve_model_dir(out_dir))
    return metrics


# ------------------------------------------------------------------------------------------------ several nodes


def run_multinode(model_dir: str, rewards_path: str, cfg: CureConfig, out_dir: str, *,
                  ref_model_dir: str | None = None, resume_from: str | None = None, log_dir: str | None = None,
                  api: Any = None, image: str | None = None, name: str | None = None,
                  poll_s: float = 10.0) -> dict[str, Any]:
    """Train on a PyTorchJob / TrainJob of ``train.nodes`` nodes; inputs and outputs through the store (module
    docstring). ``api``: a CustomObjectsApi-like object (default: from the in-cluster / kube config)."""
    t = cfg.train
    if t.save_optimizer_state:
        raise ValueError("train.nodes > 1 with train.save_optimizer_state: ZeRO-3 optimizer shards are written on "
                         "each node's local disk and cannot be gathered; turn one of them off")
    if not cfg.pipeline.store_uri.startswith("s3://"):
        raise ValueError(f"train.nodes > 1 needs an s3:// store (pipeline.store_uri={cfg.pipeline.store_uri!r}): "
                         "the replicas get the model and return the checkpoint through it")
    store = open_store(cfg.pipeline.store_uri)
    api = k8s._api(api)
    name = name or f"cure-train-{uuid.uuid4().hex[:8]}"
    prefix = f"{cfg.pipeline.experiment}/train-jobs/{name}"
    start = resume_from or model_dir
    store.put_dir(f"{prefix}/model", start)
    if ref_model_dir:
        store.put_dir(f"{prefix}/ref", ref_model_dir)
    store.put_file(f"{prefix}/rewards.jsonl", rewards_path)
    store.put_bytes(f"{prefix}/config.yaml", dump_config(cfg).encode())
    args = ["--store", cfg.pipeline.store_uri, "--prefix", prefix, "--nodes", str(t.nodes),
            "--nproc-per-node", str(t.nproc_per_node)] + (["--ref"] if ref_model_dir else [])
    command = ["python", "-m", "cure.train.launch", *args]
    timeout_s = job_deadline(t.job_timeout_s)
    # SIGTERM/SIGINT (a cancelled run, the pod's deadline) become SystemExit, so the job is deleted on the way out.
    with cleanup_on_signals():
        try:
            if t.job_api == "trainjob":
                spec = trainjob.build_trainjob(
                    name, t.namespace, image or _own_image(), command, nodes=t.nodes, procs_per_node=t.nproc_per_node,
                    gpus_per_node=t.nproc_per_node, cpu=t.node_cpu, memory=t.node_memory,
                    secret=t.store_secret or None, runtime=t.runtime, labels=run_labels())
                trainjob.run_trainjob(spec, api, timeout_s=timeout_s, poll_s=poll_s)
            else:
                spec = pytorchjob_spec(name, cfg, image or _own_image(), command, timeout_s)
                k8s.run_pytorchjob(spec, timeout_s=timeout_s, poll_s=poll_s, api=api)
            store.get_dir(f"{prefix}/out", out_dir)
        finally:
            store.delete_prefix(prefix)
    metrics = read_metrics(out_dir)
    if log_dir and (Path(out_dir) / "tensorboard").is_dir():
        import shutil

        shutil.copytree(Path(out_dir) / "tensorboard", log_dir, dirs_exist_ok=True)
    return metrics


def job_deadline(job_timeout_s: float, env: dict[str, str] | None = None) -> float:
    """The multi-node job's deadline: ``train.job_timeout_s``, but never past the launching pod's own deadline
    (``CURE_POD_DEADLINE_S``, set by the compiled pipeline from the train stage's timeout) less a minute to clean
    up, so a job cannot outlive the pod that would delete it."""
    env = dict(os.environ) if env is None else env
    pod = env.get("CURE_POD_DEADLINE_S", "")
    if pod.isdigit() and int(pod) > 120:
        return min(float(job_timeout_s), float(int(pod) - 60))
    return float(job_timeout_s)


def pytorchjob_spec(name: str, cfg: CureConfig, image: str, command: list[str],
                    timeout_s: float | None = None) -> dict[str, Any]:
    """The PyTorchJob of a multi-node step: ``train.nodes`` replicas running ``command``, priority ``cure-gpu``,
    scratch space instead of a shared volume, the store Secret as environment, the run's label."""
    t = cfg.train
    spec = k8s.build_pytorchjob(
        name, t.namespace, image, [], nodes=t.nodes, gpus_per_node=t.nproc_per_node, cpu=t.node_cpu,
        memory=t.node_memory, secret_env_from=[t.store_secret] if t.store_secret else None,
        active_deadline_s=int(timeout_s if timeout_s is not None else t.job_timeout_s), labels=run_labels(),
    )
    for replica in spec["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "workspace"]
        pod["volumes"].append({"name": "workspace", "emptyDir": {}})  # per-node scratch: inputs come from the store
        pod["priorityClassName"] = "cure-gpu"
        pod["containers"][0]["command"] = list(command)
    return spec


def _own_image() -> str:
    """The image of the train step itself (``CURE_IMAGE``), else the train image of :mod:`cure.images`."""
    if os.environ.get("CURE_IMAGE"):
        return os.environ["CURE_IMAGE"]

    return image_for("train")


def node_main(argv: list[str] | None = None) -> int:
    """One replica of a multi-node step: fetch the inputs, torchrun this node's ranks, node 0 uploads the result."""
    ap = argparse.ArgumentParser(prog="python -m cure.train.launch")
    ap.add_argument("--store", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--nproc-per-node", type=int, required=True)
    ap.add_argument("--ref", action="store_true", help="a KL reference model was uploaded")
    ap.add_argument("--workdir", default="/workspace")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    store = open_store(args.store)
    work = Path(args.workdir)
    store.get_dir(f"{args.prefix}/model", work / "model")
    if args.ref:
        store.get_dir(f"{args.prefix}/ref", work / "ref")
    store.get_file(f"{args.prefix}/rewards.jsonl", work / "rewards.jsonl")
    store.get_file(f"{args.prefix}/config.yaml", work / "config.yaml")
    cmd = torchrun_command(str(work / "model"), str(work / "rewards.jsonl"), str(work / "out"),
                           str(work / "config.yaml"), args.nproc_per_node, nodes=args.nodes,
                           ref_model_dir=str(work / "ref") if args.ref else None)
    rc = subprocess.run(cmd, env=clean_env(), check=False).returncode
    if rc == 0 and os.environ.get("PET_NODE_RANK", "0") == "0":
        store.put_dir(f"{args.prefix}/out", work / "out")
    return rc


if __name__ == "__main__":
    sys.exit(node_main())
