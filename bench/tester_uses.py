"""The trained tester at work, measured offline on the tiny model: pairing, label-free RL, refinement.

    PYTHONPATH=src:. python bench/tester_uses.py --base ~/.cache/cure/tiny-seed0 --out runs/tester-uses

Same step functions as the pipeline (:mod:`cure.steps`), called in-process, so the rounds are the demo's rounds
with a smaller budget (``--rounds``, ``--tasks-per-step``; both printed with every table):

1. **Ground-truth RL**: ``--rounds`` rounds from the base model with the demo's settings -> the trained model.
2. **Label-free RL**: the same start, rounds and tasks, ``reward.code_reward_source=generated_tests``, tests from
   the trained model of 1 held frozen (``reward.tester_model``): the coder never sees a ground-truth verdict.
3. **Evaluation** of the base, ground-truth-trained and label-free-trained models on held-out tasks, several seeds
   (the spread is the noise).
4. **Pairing**: the base model as the coder, served by ``python -m cure.rollout.serve`` and reached through the
   OpenAI-compatible engine; testers: the base model and the trained one.
5. **Refinement**: the trained model with ``eval.refine_rounds``.

Writes ``results.json`` and ``tables.md`` under ``--out``. Model-written code runs in gVisor (``runsc``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cure import steps
from cure.config import CureConfig, load_config
from cure.local_run import PRESETS
from cure.tasks import load_tasks

log = logging.getLogger("tester_uses")


def demo_config(extra: list[str]) -> CureConfig:
    return load_config(None, list(PRESETS["demo"]["set"]) + extra)


def train_run(base: str, tasks: str, cfg: CureConfig, rounds: int, work: Path) -> tuple[str, list[dict[str, Any]]]:
    """``rounds`` rounds of rollout -> execute -> reward -> train; returns (final model folder, per-round counts)."""
    model, log_rows = base, []
    for r in range(1, rounds + 1):
        d = work / f"round-{r:03d}"
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        ro = steps.rollout(model, tasks, cfg, r, str(d / "rollouts.jsonl"))
        ex = steps.execute(str(d / "rollouts.jsonl"), cfg, str(d / "executions.jsonl"))
        rw = steps.reward(str(d / "rollouts.jsonl"), str(d / "executions.jsonl"), cfg, str(d / "rewards.jsonl"), r)
        steps.train(model, str(d / "rewards.jsonl"), cfg, str(d / "model"), base, r)
        model = str(d / "model")
        row = {"round": r, "train_code_acc": ex["train_code_acc"], "train_unit_test_acc": ex["train_unit_test_acc"],
               "coder_examples": rw["coder_examples"], "tester_examples": rw["tester_examples"],
               "seconds": round(time.monotonic() - t0, 1), "programs_extracted": ro.get("programs_extracted")}
        log_rows.append(row)
        log.info("%s round %d: %s", work.name, r, row)
    return model, log_rows


def evaluate(model: str, heldout: str, cfg: CureConfig, seeds: list[int]) -> dict[str, Any]:
    from cure.evaluate import evaluate_tasks

    tasks = load_tasks(heldout)[0]
    runs = [evaluate_tasks(model, tasks, cfg, s)[0] for s in seeds]
    keys = ["code_acc", "unit_test_acc", "p01"] + [k for k in runs[0] if k.startswith("bon_") and "accumulate" not in k]
    return {k: {"mean": sum(r[k] for r in runs) / len(runs), "runs": [r[k] for r in runs]} for k in keys}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pairing(coder: str, testers: dict[str, str], heldout: str, cfg: CureConfig, seeds: list[int], out: Path) -> dict[str, Any]:
    """The coder served over HTTP (the API path), each tester local."""
    from cure.pairing import evaluate_pairing

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cure.rollout.serve", "--model", coder, "--served-model-name",
                             "coder-round0", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError("the local OpenAI-compatible server exited")
            time.sleep(0.5)
        c = cfg.model_copy(deep=True)
        c.rollout.api_base_url = f"http://127.0.0.1:{port}/v1"
        c.rollout.api_mode = "chat"  # the server applies the model's own chat template
        c.rollout.api_rpm_limit = 100000
        os.environ.setdefault(c.rollout.api_key_env, "EMPTY")
        tasks = {"heldout": load_tasks(heldout)[0]}
        return {name: evaluate_pairing(path, "coder-round0", tasks, c, seeds, out / f"pairing-{name}", "openai")
                for name, path in testers.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="round-0 model folder (tiny:0)")
    p.add_argument("--out", required=True)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tasks-per-step", type=int, default=16)
    p.add_argument("--train-tasks", type=int, default=512)
    p.add_argument("--heldout-tasks", type=int, default=32)
    p.add_argument("--seeds", type=int, nargs="+", default=[101, 102])
    p.add_argument("--refine-rounds", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides (all runs)")
    p.add_argument("--parts", nargs="+", default=["train", "labelfree", "eval", "pairing", "refine"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2))

    train_tasks, heldout = str(out / "train.jsonl"), str(out / "heldout.jsonl")
    steps.prepare_data(f"synthetic:train:{args.train_tasks}:0", train_tasks)
    steps.prepare_data(f"synthetic:heldout:{args.heldout_tasks}:1", heldout)
    common = [f"data.tasks_per_step={args.tasks_per_step}", *args.overrides]
    results["setting"] = {"base": args.base, "rounds": args.rounds, "tasks_per_step": args.tasks_per_step,
                          "heldout_tasks": args.heldout_tasks, "seeds": args.seeds, "preset": "demo",
                          "overrides": args.overrides, "load": os.getloadavg()}
    gt_model = str(out / "gt" / f"round-{args.rounds:03d}" / "model")
    lf_model = str(out / "labelfree" / f"round-{args.rounds:03d}" / "model")
    if "train" in args.parts:
        t0 = time.monotonic()
        gt_model, results["gt_rounds"] = train_run(args.base, train_tasks, demo_config(common), args.rounds, out / "gt")
        results["gt_seconds"] = round(time.monotonic() - t0)
        save()
    if "labelfree" in args.parts:
        t0 = time.monotonic()
        cfg = demo_config(common + ["reward.code_reward_source=generated_tests", f"reward.tester_model={gt_model}"])
        lf_model, results["labelfree_rounds"] = train_run(args.base, train_tasks, cfg, args.rounds, out / "labelfree")
        results["labelfree_seconds"] = round(time.monotonic() - t0)
        save()
    ev_cfg = demo_config(list(args.overrides))
    if "eval" in args.parts:
        results["eval"] = {name: evaluate(m, heldout, ev_cfg, args.seeds)
                           for name, m in (("base", args.base), ("gt", gt_model), ("labelfree", lf_model))
                           if Path(m).is_dir()}
        save()
    if "pairing" in args.parts:
        testers = {"round0": args.base, f"gt_round{args.rounds}": gt_model}
        results["pairing"] = pairing(args.base, {k: v for k, v in testers.items() if Path(v).is_dir()}, heldout,
                                     ev_cfg, args.seeds[:1], out)
        save()
    if "refine" in args.parts:
        from cure.evaluate import evaluate_tasks
        from cure.refine import rows_from_metrics

        cfg = demo_config([f"eval.refine_rounds={args.refine_rounds}", *args.overrides])
        results["refine"] = {}
        for name, m in (("base", args.base), ("gt", gt_model)):
            if Path(m).is_dir():
                metrics = evaluate_tasks(m, load_tasks(heldout)[0], cfg, args.seeds[0])[0]
                results["refine"][name] = rows_from_metrics(metrics)
        save()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
