"""A training round's tasks as the pipeline runs them: each task's fixed cost against its real work.

Runs the six tasks of one round slot (rollout, execute, reward, train, evaluate, promote) as ``kfp.local``'s
subprocess runner does: the component's own command (``sh -ec`` writing the function's source to a file, then
``python -m kfp.dsl.executor_main``), its executor input built by ``kfp.local``'s own functions, on a workspace
prepared like the pipeline's (``models/round-0000``, the demo preset's config and a plan at round 1 of 12, so the
evaluate and promote slots have nothing to do, as in 10 of the demo's 12 rounds). Each task process carries a timing
probe (``bench/round_trace/sitecustomize.py``) and is split into:

* ``start``: from spawning the task to its interpreter's site initialisation;
* ``imports``: every module import (kfp, torch, transformers, cure, ...), wherever it happens;
* ``model_load``: building the engine (weights, tokenizer, optimizer; DeepSpeed initialisation when used);
* ``work``: the stage's real work: ``generate`` (rollout), the sandbox (execute), the rewards (reward), the log-probability
  and update passes (train);
* ``save``, ``copy``, ``store``: writing the checkpoint, copying it to the workspace, the experiment's records;
* ``other``: the rest of the task body and the executor (config parsing, tokenising, output files);
* ``exit``: from the end of the executor's work to the process being gone (interpreter teardown).

The overhead of a task is its wall time minus its work; the round's overhead share is the sum over the six tasks.

``--baseline REV`` measures the code at git revision ``REV`` (its ``src/`` and ``components/``, run from a copy)
side by side with the working tree, alternating A B B A ... per repeat, and prints the before/after ratios pair by
pair. Both versions get the same inputs (the train task the same rewards file), and the bench checks that their
rollouts and trained weights are identical.

    python bench/bench_round.py --baseline REV --repeats 3               # the demo's model (tiny:0, built if needed)
    python bench/bench_round.py --model tiny:0:40 --repeats 1            # the tests' 40-step model: quicker

Not a test: it asserts nothing about speed. Results (``--out FILE``) are JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRACE_DIR = Path(__file__).resolve().parent / "round_trace"
TASKS = ("rollout", "execute", "reward", "train", "evaluate_round", "promote")
PHASES = ("start", "imports", "model_load", "work", "save", "copy", "store", "other", "exit")


# --- the round's workspace ----------------------------------------------------------------------------------------


def prepare(tmp: Path, model: str, preset: str, overrides: list[str]) -> dict[str, Any]:
    """Config, plan, tasks, benchmarks and the starting model, as the run's first tasks leave them."""
    from cure_pipelines.local_run import preset_and_config

    from cure import segment as loop
    from cure import stages

    p, cfg = preset_and_config(preset, None, overrides, "subprocess")
    total, segment = int(p["rounds"]), int(p["segment"])
    cfg.pipeline.store_uri = f"file://{tmp / 'store'}"
    cfg.pipeline.experiment = "bench-round"
    cfg.pipeline.eval_every, cfg.pipeline.save_every = int(p["eval_every"]), int(p["save_every"])
    config, plan, _ = loop.plan(cfg.model_dump(mode="json"), total, segment)  # the run's plan task
    stages.prepare_data(p["train_data"], str(tmp / "tasks.jsonl"))
    bench_dir = tmp / "benchmarks"
    bench_dir.mkdir()
    for spec in p["eval_benchmarks"]:
        name, _, source = spec.partition("=")
        stages.prepare_data(source, str(bench_dir / f"{name}.jsonl"))
    workspace = tmp / "workspace"
    start = loop.model_dir(str(workspace), 0)
    start.parent.mkdir(parents=True)
    stages.init_model(model, str(start))
    return {"config": config, "plan": plan, "workspace": str(workspace),
            "tasks": str(tmp / "tasks.jsonl"), "benchmarks": str(bench_dir)}


# --- the tasks' commands, built by kfp.local's own functions --------------------------------------------------


def task_command(component: Any, arguments: dict[str, Any], task_root: Path, pipeline_root: Path) -> list[str]:
    """The command line ``kfp.local.SubprocessRunner(use_venv=False)`` runs for ``component`` with ``arguments``."""
    from kfp.local import (
        executor_input_utils,
        placeholder_utils,
        subprocess_task_handler,
        task_dispatcher,
        utils,
    )

    spec = component.pipeline_spec
    _, comp = list(spec.components.items())[0]
    container = utils.struct_to_executor_spec(task_dispatcher.get_executor_spec(spec, comp.executor_label)).container
    executor_input = executor_input_utils.construct_executor_input(comp, arguments, str(task_root), False)
    command = placeholder_utils.replace_placeholders(
        list(container.command) + list(container.args),
        executor_input_utils.executor_input_to_dict(executor_input, comp),
        "bench-round", task_root.name, str(pipeline_root), "bench")
    return subprocess_task_handler.replace_python_executable(command, sys.executable)


def commands(state: dict[str, Any], kfp_root: Path, rewards: str | None) -> dict[str, list[str]]:
    """Each round task's command; the train task reads ``rewards`` (default: what the reward task writes).

    The components are those of the tree on ``PYTHONPATH`` (its ``components/`` folder, :func:`commands_for`)."""
    from kfp import dsl

    import components as comps

    common = {"config": state["config"], "plan": state["plan"], "slot": 1, "workspace": state["workspace"]}
    out: dict[str, list[str]] = {}

    def add(name: str, component: Any, **kw: Any) -> None:
        root = kfp_root / name
        root.mkdir(parents=True, exist_ok=True)
        out[name] = task_command(component, {**common, **kw}, root, kfp_root)

    add("rollout", comps.rollout, shard=0, shards=1, tasks=dsl.Dataset(name="tasks", uri=state["tasks"]))
    add("execute", comps.execute, shards=1)
    executed = kfp_root / "execute"
    if hasattr(comps, "reward"):
        add("reward", comps.reward, rollouts=dsl.Dataset(name="rollouts", uri=str(executed / "rollouts")),
            executions=dsl.Dataset(name="executions", uri=str(executed / "executions")))
        scored = str(kfp_root / "reward" / "rewards")
    else:  # a tree from before reward scoring was a task of its own: its execute task scores them
        scored = str(executed / "rewards")
    add("train", comps.train, rewards=dsl.Dataset(name="rewards", uri=rewards or scored))
    add("evaluate_round", comps.evaluate_round, seeds=[101], run_name="bench",
        benchmarks=dsl.Dataset(name="benchmarks", uri=state["benchmarks"]))
    add("promote", comps.promote)
    return out


def commands_for(root: Path, state: dict[str, Any], kfp_root: Path, rewards: str | None) -> dict[str, list[str]]:
    """:func:`commands` with the component sources of the tree at ``root`` (in a process that imports that tree)."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import bench_round as b; "
            "print(json.dumps(b.commands(json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] or None)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), json.dumps(state), str(kfp_root),
                           rewards or ""], env=env, capture_output=True, text=True, check=True, cwd=root)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- one task process, measured --------------------------------------------------------------------------------------


def run_task(command: list[str], root: Path, log_path: Path) -> dict[str, float]:
    """Run one task with the probe; its wall time split into :data:`PHASES` (seconds)."""
    trace = log_path.with_suffix(".trace")
    trace.unlink(missing_ok=True)
    env = {**os.environ, "CURE_ROUND_TRACE": str(trace),
           "PYTHONPATH": os.pathsep.join([str(TRACE_DIR), str(root / "src")])}
    t_spawn = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root).returncode
    t_end = time.time()
    if rc != 0:
        raise RuntimeError(f"task failed (exit {rc}); its log: {log_path}")
    return split_phases([json.loads(line) for line in trace.read_text().splitlines()], t_spawn, t_end)


def split_phases(events: list[dict[str, Any]], t_spawn: float, t_end: float) -> dict[str, float]:
    """Seconds per phase of one task process from its probe's events (module docstring)."""
    starts = [e for e in events if e["ev"] == "start"]
    # The probe loads in every Python process of the task; the executor's is the one with a "body" event.
    body = [e for e in events if e["ev"] == "body"]
    t_start = starts[0]["t"]
    out = dict.fromkeys(PHASES, 0.0)
    out["start"] = t_start - t_spawn
    out["imports"] = sum(e["t1"] - e["t0"] for e in events if e["ev"] == "import")
    for label in ("model_load", "work", "save", "copy", "store"):
        out[label] = sum(e["t1"] - e["t0"] - e.get("imports", 0.0) for e in events if e["ev"] == label)
    last = body[-1]["t1"] if body else t_end
    out["exit"] = t_end - last
    out["wall"] = t_end - t_spawn
    out["other"] = out["wall"] - sum(out[p] for p in PHASES if p != "other")
    out["overhead"] = out["wall"] - out["work"]
    return out


# --- outputs that must not change ------------------------------------------------------------------------------------


def fingerprint(state: dict[str, Any], rollouts: bool = True) -> dict[str, str]:
    """Hashes of what the rollout and train tasks wrote (records and weights), to compare two versions."""
    from cure import segment as loop

    def digest(paths: list[Path]) -> str:
        h = hashlib.sha256()
        for p in paths:
            h.update(p.read_bytes())
        return h.hexdigest()[:16]

    ws = state["workspace"]
    model = loop.model_dir(ws, 1)
    out = {"weights": digest(sorted(model.glob("*.safetensors")))}
    if rollouts:
        out["rollouts"] = digest([loop.round_dir(ws, 1) / "rollouts-000.jsonl"])
    return out


# --- the bench -------------------------------------------------------------------------------------------------------


def checkout(rev: str, dest: Path) -> Path:
    """``src/`` and ``components/`` of git revision ``rev`` under ``dest``."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "components"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b) if y > 0) if any(y > 0 for y in b) else float("nan")


def summarize(runs: list[dict[str, dict[str, float]]], tasks: list[str]) -> dict[str, dict[str, float]]:
    """Median per task and phase over the repeats, plus the round (sum of the tasks) and its overhead share."""
    out: dict[str, dict[str, float]] = {}
    for task in (*tasks, "round"):
        rows = [r[task] for r in runs if task in r]
        if not rows:  # a task the tree lacks
            continue
        out[task] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    return out


def round_sum(tasks: dict[str, dict[str, float]]) -> dict[str, float]:
    keys = list(next(iter(tasks.values())))
    total = {k: sum(t[k] for t in tasks.values()) for k in keys}
    total["overhead_share"] = total["overhead"] / total["wall"]
    return total


def print_table(summary: dict[str, dict[str, dict[str, float]]]) -> None:
    versions = list(summary)
    cols = ["wall", "work", "overhead", *PHASES]
    print(f"{'task':<16} {'version':<9} " + " ".join(f"{c:>10}" for c in cols))
    for task in dict.fromkeys(t for v in versions for t in summary[v]):
        for v in versions:
            if task not in summary[v]:
                continue
            row = summary[v][task]
            print(f"{task:<16} {v:<9} " + " ".join(f"{row[c]:10.2f}" for c in cols))
    for v in versions:
        r = summary[v]["round"]
        print(f"{v}: round {r['wall']:.2f} s, work {r['work']:.2f} s, overhead {r['overhead']:.2f} s "
              f"= {100 * r['overhead'] / r['wall']:.0f}% of the round")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny:0", help="starting model: tiny[:SEED[:STEPS]] or a folder (default the demo's)")
    ap.add_argument("--preset", default="demo", help="cure run preset whose config the round uses")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--baseline", help="git revision to measure side by side with the working tree (before/after)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds per version (alternating order)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="which tasks to time (comma-separated)")
    ap.add_argument("--rewards", help="the train task's rewards (default: those of one rollout, execute and reward "
                    "of the round, run first; with this file, choose --tasks without execute and reward)")
    ap.add_argument("--keep", help="keep the workspace and logs in this folder")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    chosen = [t for t in args.tasks.split(",") if t]
    if unknown := set(chosen) - set(TASKS):
        ap.error(f"--tasks: unknown {sorted(unknown)}; choose from {', '.join(TASKS)}")

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cure-bench-round-"))
    if args.keep and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        state = prepare(tmp, args.model, args.preset, args.overrides)
        versions = {"current": ROOT}
        if args.baseline:
            versions = {"baseline": checkout(args.baseline, tmp / "baseline"), "current": ROOT}
        # Both versions' train tasks read the same rewards (the sandbox's timing could differ between executions).
        rewards = tmp / "rewards.jsonl"
        cmds = {v: commands_for(root, state, tmp / "kfp" / v, str(rewards)) for v, root in versions.items()}
        first = next(iter(versions))
        if args.rewards:
            shutil.copyfile(args.rewards, rewards)
        else:
            run_task(cmds[first]["rollout"], versions[first], tmp / "warmup-rollout.log")
            warmup = commands_for(versions[first], state, tmp / "kfp" / "warmup", None)
            for task in ("execute", "reward"):
                if task in warmup:
                    run_task(warmup[task], versions[first], tmp / f"warmup-{task}.log")
            scored = "reward" if "reward" in warmup else "execute"
            shutil.copyfile(tmp / "kfp" / "warmup" / scored / "rewards", rewards)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {v: [] for v in versions}
        prints: dict[str, set[str]] = {}
        order = list(versions)
        for rep in range(args.repeats):
            for v in order if rep % 2 == 0 else order[::-1]:
                tasks = {}
                for task in TASKS:
                    if task in chosen and task in cmds[v]:  # an earlier tree may lack a task (reward)
                        tasks[task] = run_task(cmds[v][task], versions[v], tmp / f"{v}-{rep}-{task}.log")
                        print(f"{v} repeat {rep + 1}: {task} {tasks[task]['wall']:.2f} s "
                              f"(work {tasks[task]['work']:.2f} s)", flush=True)
                tasks["round"] = round_sum(tasks)
                runs[v].append(tasks)
                if "train" in chosen:
                    prints.setdefault(v, set()).add(json.dumps(fingerprint(state, "rollout" in chosen), sort_keys=True))
        summary = {v: summarize(r, chosen) for v, r in runs.items()}
        print()
        print_table(summary)
        result: dict[str, Any] = {"model": args.model, "preset": args.preset, "repeats": args.repeats,
                                  "baseline": args.baseline, "summary": summary, "runs": runs,
                                  "outputs": {v: sorted(p) for v, p in prints.items()},
                                  "load_average": os.getloadavg(), "cpus": os.cpu_count(),
                                  "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if args.baseline:
            a, b = runs["baseline"], runs["current"]
            ratios = {task: {k: median_ratio([r[task][k] for r in a], [r[task][k] for r in b])
                             for k in ("wall", "overhead", "work")} for task in (*TASKS, "round") if task in a[0]}
            result["ratios_baseline_over_current"] = ratios
            print("\nbaseline / current, median of pairs:")
            for task, r in ratios.items():
                print(f"  {task:<16} wall {r['wall']:.2f}x  overhead {r['overhead']:.2f}x  work {r['work']:.2f}x")
            same = len({p for ps in prints.values() for p in ps}) == 1 if prints else None
            result["outputs_identical"] = same
            print(f"rollouts and trained weights identical across versions and repeats: {same}")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
