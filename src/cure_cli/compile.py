"""``cure compile``: the pipelines as YAML for the Kubeflow UI (:mod:`cure_pipelines.compile`)."""

from __future__ import annotations

import argparse

from cure.config import CureConfig
from cure.data import PAPER_BENCHMARKS, TRAIN_DATA


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="build/pipelines", help="output folder for the pipeline YAML files")
    p.add_argument("--rounds", type=int, help="total training rounds over all runs (default of the total_rounds parameter); default pipeline.rounds")
    p.add_argument("--segment", type=int, help="round slots per run (the graph's size; default 10): a run trains up to this many rounds")
    p.add_argument("--eval-every", type=int, help="default of pipeline__eval_every (global rounds)")
    p.add_argument("--save-every", type=int, help="default of pipeline__save_every (global rounds)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per rollout/train/evaluate pod (0: CPU only); also the default of "
                   "train.nproc_per_node (vLLM uses the rollout pod's GPUs: rollout.tensor_parallel_size 0)")
    p.add_argument("--rollout-gpus", type=int, help="GPUs per rollout pod (default --gpus); e.g. 4 for Qwen2.5-7B, whose "
                   "28 attention heads vLLM's tensor parallelism divides over 4, not 8")
    p.add_argument("--train-gpus", type=int, help="GPUs per train pod (default --gpus; with --nodes > 1 the train pod "
                   "only launches the job and gets none)")
    p.add_argument("--eval-gpus", type=int, help="GPUs per evaluation pod (default --gpus)")
    p.add_argument("--nodes", type=int, default=1, help="training nodes (default of train.nodes)")
    p.add_argument("--rollout-shards", type=int, default=1, help="rollout pods per round (data parallel, a ParallelFor)")
    p.add_argument("--store-secret", help="Secret with the store's endpoint and keys, mapped into every task that touches "
                   "the store (default cure-minio; empty: none)")
    p.add_argument("--store-secret-key", dest="store_keys", action="append", metavar="KEY[:ENV]",
                   help="a key of that Secret and the environment variable it becomes (repeatable; default "
                   "CURE_S3_ENDPOINT, CURE_S3_ACCESS_KEY, CURE_S3_SECRET_KEY)")
    p.add_argument("--toleration", action="append", metavar="KEY[=VALUE][:EFFECT]", help="toleration of the GPU pods (repeatable)")
    p.add_argument("--node-selector", action="append", metavar="LABEL=VALUE", help="node selector of the GPU pods (repeatable)")
    p.add_argument("--timeout", action="append", metavar="STAGE=SECONDS", help="a stage's pod deadline (repeatable)")
    p.add_argument("--shm-size", help="memory-backed /dev/shm of GPU pods (default 16Gi)")
    p.add_argument("--workspace-size", help="the run's workspace PVC, where models move between tasks (default 300Gi)")
    p.add_argument("--workspace-storage-class", help="storage class of the workspace PVC (default: the cluster's)")
    p.add_argument("--workspace-access-mode", help="access mode of the workspace PVC (default ReadWriteMany: the tasks "
                   "may land on any node; ReadWriteOnce for storage without RWX, then all tasks share one node). "
                   "KFP >= 2.15 refuses a run whose workspace names none")
    p.add_argument("--base-model", help="default base_model parameter")
    p.add_argument("--train-data", help=f"default train_data parameter (default: {TRAIN_DATA}, the reference's training set)")
    p.add_argument("--eval-benchmarks", nargs="+", help=f"default eval_benchmarks parameter, NAME=SPEC each (default: the paper's five: {' '.join(PAPER_BENCHMARKS)})")


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    from cure_pipelines.compile import cluster_options, compile_pipelines

    from cure.validate import check_output_path

    opts = cluster_options(args.gpus, args.nodes, args.rollout_shards, args.store_secret, args.store_keys,
                           args.toleration, args.node_selector, args.timeout, args.shm_size, args.workspace_size,
                           args.workspace_storage_class, args.workspace_access_mode, args.rollout_gpus,
                           args.train_gpus, args.eval_gpus)
    check_output_path(args.out, "--out", folder=True)  # after the flags: nothing is created for a bad command
    paths = compile_pipelines(args.out, cfg, args.rounds, args.eval_every, args.save_every, args.gpus,
                              args.base_model, args.train_data, args.eval_benchmarks, args.segment, opts)
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print("upload in the Kubeflow UI (Pipelines > Upload pipeline), or: "
          f"kfp pipeline create -p cure-training {paths['training']}")
    return 0
