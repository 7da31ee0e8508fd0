"""``cure evaluate``: code / unit-test accuracy, p01/p00, Best-of-N of a model on benchmarks (:mod:`cure.evaluate`);
with ``--coder-model``, the pairing report (:mod:`cure.pairing`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cure.config import CureConfig
from cure.evaluate import evaluate_benchmarks
from cure.tasks import Task, load_tasks


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model folder or hub name")
    p.add_argument("--tasks", nargs="+", required=True, metavar="NAME=FILE", help="benchmarks, e.g. heldout=tasks.jsonl")
    p.add_argument("--engine", choices=["hf", "vllm", "openai"], help="sampling engine (default: rollout.engine)")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="more than one measures evaluation noise")
    p.add_argument("--out", required=True, help="folder: metrics.json, rollouts and executions per benchmark")
    p.add_argument("--coder-model", help="pairing: another coder writes the programs, --model writes the tests "
                   "(report: pairing.md/json, cure.pairing)")
    p.add_argument("--coder-engine", choices=["hf", "vllm", "openai"], help="pairing: the coder's engine (default: rollout.engine)")


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    if args.engine:
        cfg.rollout.engine = args.engine
    from cure.validate import CliError, check_output_path

    check_output_path(args.out, folder=True)
    benchmarks = {}
    for item in args.tasks:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).stem, item
        if name in benchmarks:
            raise CliError(f"--tasks: benchmark name {name!r} is given twice; use NAME=FILE with distinct names")
        benchmarks[name] = load_tasks(path)[0]
        if not benchmarks[name]:
            raise CliError(f"--tasks {item}: no tasks in {path}; a benchmark needs at least one task")
    if getattr(args, "coder_model", None):
        return run_pairing(args, cfg, benchmarks)
    entry = evaluate_benchmarks(args.model, benchmarks, cfg, args.round, args.seeds, args.out)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "metrics.json").write_text(json.dumps(entry, indent=2))
    if cfg.eval.refine_rounds:
        from cure.refine import write_tables

        write_tables(entry, Path(args.out) / "refine.md")
    for name, m in entry["benchmarks"].items():
        print(f"{name}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if not k.endswith("_accumulate")))
    return 0


def run_pairing(args: argparse.Namespace, cfg: CureConfig, benchmarks: dict[str, list[Task]]) -> int:
    """``cure evaluate --model TESTER --coder-model CODER``: the pairing report instead of the self-evaluation."""
    if args.engine:
        cfg.rollout.engine = args.engine
    from cure.pairing import evaluate_pairing

    result = evaluate_pairing(args.model, args.coder_model, benchmarks, cfg, args.seeds, args.out, args.coder_engine)
    print((Path(args.out) / "pairing.md").read_text())
    return 0 if result["benchmarks"] else 1
