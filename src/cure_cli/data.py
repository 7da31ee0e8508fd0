"""``cure data prepare``: tasks from a source (file, hf, humaneval, synthetic, a released CURE dataset) -> tasks.jsonl."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cure.config import CureConfig
from cure.data import SOURCES, extra_fields, prepare
from cure.tasks import TaskFormatError, unlabeled, write_jsonl


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--path", help="file: CURE .json/.jsonl; hf: hub name, save_to_disk folder or data file; "
                   "a released dataset's name: a local copy of its file instead of the hub")
    p.add_argument("--split", default="train", help="hf: dataset split; synthetic: train or heldout")
    p.add_argument("--n", type=int, default=64, help="synthetic: number of tasks")
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    p.add_argument("--families", nargs="*", help="synthetic: restrict to these families")
    p.add_argument("--hub-repo", help="a released dataset's hub repository instead of its usual one (OWNER/NAME)")
    p.add_argument("--hub-file", help="a released dataset's file in the hub repository instead of its usual one")
    p.add_argument("--limit", type=int, help="keep only the first N tasks")
    p.add_argument("--skip-bad", action="store_true", help="write the good rows and report the bad ones, instead of rejecting the file")
    p.add_argument("--report", help="write a JSON summary (counts and bad rows) here")
    p.add_argument("--out", required=True, help="output tasks.jsonl")


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    from cure.validate import CliError, check_output_path

    if args.limit is not None and args.limit < 0:
        raise CliError(f"--limit {args.limit}: must be 0 or more (the number of tasks to keep)")
    check_output_path(args.out)
    if args.report:
        check_output_path(args.report, "--report", create=False)
    try:
        tasks, bad = prepare(
            args.source,
            path=args.path,
            split=args.split,
            n=args.n,
            seed=args.seed,
            families=args.families,
            on_error="skip" if args.skip_bad else "raise",
            limit=args.limit,
            hub_repo=args.hub_repo,
            hub_file=args.hub_file,
        )
    except TaskFormatError as e:
        hint = "" if args.skip_bad else "; fix the record, or pass --skip-bad to write the good rows and list the bad ones"
        raise CliError(f"{e}{hint}") from e
    for b in bad:
        print(f"bad row: {b}", file=sys.stderr)
    n = write_jsonl(args.out, tasks)
    bare = len(unlabeled(tasks))
    extra = extra_fields(tasks)
    summary = {"source": args.source, "written": n, "bad": len(bad), "bad_rows": [str(b) for b in bad],
               "unlabeled": bare, "extra_fields": extra}
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2))
    kept = ", ".join(f"{k} ({c})" for k, c in extra.items())
    print(f"wrote {n} tasks to {args.out}" + (f"; {len(bad)} bad rows skipped (listed above)" if bad else "")
          + (f"; {bare} without ground-truth tests (label-free RL only)" if bare else "")
          + (f"; other fields kept in the records: {kept}" if extra else ""))
    return 0
