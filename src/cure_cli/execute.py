"""``cure execute``: every program on every test in the sandbox -> executions.jsonl (:mod:`cure.execute`)."""

from __future__ import annotations

import argparse
import logging

from cure.config import CureConfig
from cure.execute import execute_rollouts, summarize_executions, summarize_status
from cure_cli.flags import apply_config_flags, config_flag

log = logging.getLogger("cure.execute")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rollouts", required=True, help="rollouts.jsonl (from `cure rollout`)")
    parser.add_argument("--out", required=True, help="executions.jsonl to write")
    config_flag(parser, "execute.isolation")
    config_flag(parser, "execute.workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar / progress log lines")


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    from cure.tasks import read_jsonl, write_jsonl
    from cure.validate import check_output_path

    apply_config_flags(args, cfg, ("execute.isolation", "execute.workers"))
    check_output_path(args.out)
    rollouts = read_jsonl(args.rollouts)
    executions = execute_rollouts(rollouts, cfg.execute, progress=not args.no_progress)
    write_jsonl(args.out, executions)
    counts = summarize_status(executions)
    runs = summarize_executions(executions)
    log.info("wrote %d tables to %s; cells: %s; executions requested %d, run %d", len(executions), args.out,
             ", ".join(f"{k}={v}" for k, v in counts.items() if v), runs["executions_requested"], runs["executions_run"])
    return 0
