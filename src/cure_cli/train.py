"""``cure train``: one policy-gradient step on the reward data -> checkpoint (:mod:`cure.train.stage`); with
more than one process per node, the same command again under ``torchrun``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from cure.config import CureConfig
from cure_cli.flags import config_flag

# One process's rendezvous settings, dropped before relaunching under torchrun.
_DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="policy to train: a save_pretrained folder or a checkpoint root")
    parser.add_argument("--data", required=True, help="reward records (JSON Lines: prompt, response, reward, role, task_id)")
    parser.add_argument("--out", required=True, help="checkpoint root: writes OUT/step-N, OUT/latest, OUT/metrics.json")
    config_flag(parser, "train.engine")
    config_flag(parser, "train.zero_stage", choices=[0, 1, 2, 3])
    parser.add_argument("--ref-model", help="KL reference for train.reference=initial (the initial policy)")
    parser.add_argument("--resume", help="continue from this checkpoint (weights, step counter, optimizer state if saved)")
    parser.add_argument("--log-dir", help="TensorBoard folder (default OUT/tensorboard)")
    config_flag(parser, "train.layout")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT/step-N if it exists (else an error)")
    parser.add_argument(
        "--nproc-per-node", type=int, default=None,
        help="processes on this machine (default train.nproc_per_node); >1 relaunches through torchrun",
    )


def torchrun_argv(args: argparse.Namespace, nproc: int) -> list[str]:
    """The same ``cure train`` command under ``torchrun --standalone`` with ``nproc`` processes."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "cure_cli", "train", "--model", args.model, "--data", args.data, "--out", args.out]
    for flag, value in (("--engine", args.engine), ("--zero-stage", args.zero_stage), ("--ref-model", args.ref_model),
                        ("--resume", args.resume), ("--log-dir", args.log_dir), ("--layout", args.layout),
                        ("--config", args.config)):
        if value is not None:
            argv += [flag, str(value)]
    if args.overwrite:
        argv.append("--overwrite")
    for item in args.overrides:
        argv += ["--set", item]
    if args.verbose:
        argv.append("-v")
    return argv


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    from cure.tasks import read_jsonl

    nproc = args.nproc_per_node or cfg.train.nproc_per_node
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Not yet distributed: relaunch under torchrun, without any one-process rendezvous settings we inherited.
        env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
        proc = subprocess.Popen(torchrun_argv(args, nproc), env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: torchrun passes it on to its workers
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    from cure.train.stage import train_step

    if args.engine is not None:
        cfg.train.engine = args.engine
    if args.zero_stage is not None:
        cfg.train.zero_stage = args.zero_stage
    from cure.validate import CliError, check_output_path

    data = Path(args.data)
    if not data.is_file():
        raise CliError(f"--data {data} does not exist (the reward stage writes it)")
    records = read_jsonl(data)
    if not records:
        raise CliError(f"--data {data}: no training examples ({'empty file' if data.stat().st_size == 0 else '0 records'}); "
                       "a step without data would write an unchanged checkpoint with 0 updates. (The reward stage writes "
                       "none when every task's rewards are equal: keep the current model.)")
    check_output_path(args.out, folder=True)
    metrics = train_step(
        args.model,
        records,
        cfg.train,
        args.out,
        ref_model_dir=args.ref_model,
        resume_from=args.resume,
        log_dir=args.log_dir,
        separate_training=cfg.reward.separate_training,
        layout=args.layout,
        overwrite=args.overwrite,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {k: v for k, v in metrics.items() if k != "per_update"}
        print(json.dumps(summary, indent=2))
    return 0
