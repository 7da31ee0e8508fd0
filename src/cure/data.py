"""The dataset-preparation stage: ``cure data prepare --source {file,hf,humaneval,synthetic} ... --out tasks.jsonl``.

Every source yields validated :class:`cure.tasks.Task` records. Bad rows are never dropped silently: by default
the first one aborts with its file, row, field and problem; with ``--skip-bad`` the good rows are written and every
bad row is listed on stderr and counted in the summary (and in ``--report`` when given).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cure.config import CureConfig
from cure.tasks import BadRow, Task, TaskFormatError, load_hf_tasks, load_tasks, write_jsonl

log = logging.getLogger(__name__)
SOURCES = ("file", "hf", "humaneval", "synthetic")


def prepare(
    source: str,
    *,
    path: str | None = None,
    split: str = "train",
    n: int = 64,
    seed: int = 0,
    families: list[str] | None = None,
    on_error: str = "raise",
    limit: int | None = None,
) -> tuple[list[Task], list[BadRow]]:
    """Load tasks from one source; returns (tasks, bad rows)."""
    bad: list[BadRow] = []
    if source == "file":
        if not path:
            raise TaskFormatError("--source file needs --path FILE (CURE-format .json or .jsonl)")
        tasks, bad = load_tasks(path, on_error=on_error)  # type: ignore[arg-type]
    elif source == "hf":
        if not path:
            raise TaskFormatError("--source hf needs --path NAME_OR_DIR (hub name, save_to_disk folder or data file)")
        tasks, bad = load_hf_tasks(path, split=split, on_error=on_error)  # type: ignore[arg-type]
    elif source == "humaneval":
        from cure.humaneval import load_humaneval_tasks

        tasks = load_humaneval_tasks()
    elif source == "synthetic":
        from cure.synthetic import generate_tasks

        tasks = generate_tasks(n, seed=seed, split=split, families=families)
    else:
        raise TaskFormatError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if limit is not None:
        tasks = tasks[:limit]
    return tasks, bad


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=SOURCES)
    p.add_argument("--path", help="file: CURE .json/.jsonl; hf: hub name, save_to_disk folder or data file")
    p.add_argument("--split", default="train", help="hf: dataset split; synthetic: train or heldout")
    p.add_argument("--n", type=int, default=64, help="synthetic: number of tasks")
    p.add_argument("--seed", type=int, default=0, help="synthetic: generator seed")
    p.add_argument("--families", nargs="*", help="synthetic: restrict to these families")
    p.add_argument("--limit", type=int, help="keep only the first N tasks")
    p.add_argument("--skip-bad", action="store_true", help="write the good rows and report the bad ones, instead of rejecting the file")
    p.add_argument("--report", help="write a JSON summary (counts and bad rows) here")
    p.add_argument("--out", required=True, help="output tasks.jsonl")


def run_cli(args: argparse.Namespace, cfg: CureConfig) -> int:
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
        )
    except TaskFormatError as e:
        hint = "" if args.skip_bad else "; fix the record, or pass --skip-bad to write the good rows and list the bad ones"
        raise CliError(f"{e}{hint}") from e
    for b in bad:
        print(f"bad row: {b}", file=sys.stderr)
    n = write_jsonl(args.out, tasks)
    summary = {"source": args.source, "written": n, "bad": len(bad), "bad_rows": [str(b) for b in bad]}
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2))
    print(f"wrote {n} tasks to {args.out}" + (f"; {len(bad)} bad rows skipped (listed above)" if bad else ""))
    return 0
