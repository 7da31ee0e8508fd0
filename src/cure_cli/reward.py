"""``cure reward``: CURE rewards from pass tables -> rewards.jsonl (:mod:`cure.reward_stage`)."""

from __future__ import annotations

import argparse
import json

from cure.config import CureConfig
from cure.reward_stage import write_rewards
from cure.validate import check_output_path


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rollouts", required=True)
    p.add_argument("--executions", required=True)
    p.add_argument("--out", required=True, help="rewards.jsonl (coder then tester examples when separate_training)")
    p.add_argument("--summary", help="write counts as JSON here")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    check_output_path(args.out)
    if args.summary:
        check_output_path(args.summary, "--summary")
    counts = write_rewards(args.rollouts, args.executions, cfg, args.out, args.seed)
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(counts, f, indent=2)
    print(json.dumps(counts))
    return 0
