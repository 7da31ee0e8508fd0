"""The trained tester at work, measured offline on a finished demo run: pairing, label-free RL, refinement.

    cure run --preset demo --out runs/demo          # the ground-truth run (already done by `make demo`)
    PYTHONPATH=src:. python bench/tester_uses.py --demo-run runs/demo --out runs/tester-uses

From the demo run folder (``run.json``, ``config.json``, ``history.json`` and its checkpoint store) this takes
round 0 (the preset's base model; ``--base`` names the folder) and round N (the store's latest checkpoint), the
held-out benchmark and the noise seeds of the demo preset, and measures:

1. **Label-free RL vs ground-truth RL.** ``cure run`` of the demo's preset and config, from the same round-0 model,
   for the same rounds and tasks per round, with ``reward.code_reward_source=generated_tests`` and the demo's
   round-N model frozen as ``reward.tester_model``: the coder never sees a ground-truth verdict. The ground-truth
   run with the same start and budget is the demo itself (its history; not retrained). Both round-N models and
   round 0 are evaluated on the held-out tasks with every noise seed; the noise is the sample SD over the seeds
   (:func:`cure.evaluate.noise_of`, as the demo report).
2. **Pairing.** The round-0 model as the coder, served by ``python -m cure.rollout.serve`` and reached through the
   OpenAI-compatible engine (the API path); testers: round 0 and round N (:mod:`cure.pairing`). Each tester is one
   run of the evaluation pipeline with ``--coder-model`` (``cure run --pipeline evaluation``).
3. **Refinement.** ``eval.refine_rounds`` (``--refine-rounds``) on round 0 and round N (:mod:`cure.refine`), one
   evaluation pipeline run per model.

Writes ``results.json`` (everything, per seed) and ``tables.md`` (the README tables) under ``--out``; a part whose
results are already in ``results.json`` is skipped unless named in ``--redo``. Model-written code runs in the
configured sandbox (gVisor by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cure_pipelines.local_run import run_presets

from cure.config import CureConfig, dump_config, read_preset
from cure.tasks import load_tasks

log = logging.getLogger("tester_uses")

PARTS = ("labelfree", "eval", "pairing", "refine")


# --- the demo run folder ----------------------------------------------------------------------------------


def read_demo(run_dir: str | Path) -> dict[str, Any]:
    """What a finished ``cure run`` folder says: preset, experiment, rounds, config, history and the latest
    checkpoint's name and global round. Raises ``SystemExit`` naming what is missing."""
    from cure.experiment import latest_round
    from cure.store import open_store

    d = Path(run_dir).resolve()
    missing = [n for n in ("run.json", "config.json", "history.json", "store") if not (d / n).exists()]
    if missing:
        raise SystemExit(f"error: --demo-run {d}: no {', '.join(missing)}; give the folder of a finished "
                         "`cure run --preset demo --out DIR`")
    run = json.loads((d / "run.json").read_text())
    preset = run.get("preset", "demo")
    if preset not in run_presets():
        raise SystemExit(f"error: --demo-run {d}: run.json names preset {preset!r}, not one of {', '.join(run_presets())}")
    experiment = run.get("experiment", f"local-{preset}")
    store_uri = f"file://{d / 'store'}"
    name, round_n = latest_round(open_store(store_uri), experiment)
    if name is None:
        raise SystemExit(f"error: --demo-run {d}: experiment {experiment!r} has no checkpoint in {d / 'store'}")
    history = json.loads((d / "history.json").read_text())
    return {"dir": str(d), "preset": preset, "experiment": experiment, "store_uri": store_uri,
            "total_rounds": int(run.get("total_rounds", round_n)), "latest": name, "round": round_n,
            "config": json.loads((d / "config.json").read_text()), "history": history}


def history_entry(history: list[dict[str, Any]], round_: int) -> dict[str, Any] | None:
    return next((h for h in history if h.get("round") == round_), None)


def benchmark_runs(entry: dict[str, Any], bench: str) -> list[dict[str, float]]:
    """An evaluation entry's per-seed metrics of ``bench`` (one run when it was evaluated with one seed)."""
    reps = entry.get("repeats", {}).get(bench)
    return list(reps) if reps else [entry["benchmarks"][bench]]


# --- statistics -------------------------------------------------------------------------------------------


def mean_sd(xs: list[float]) -> dict[str, Any]:
    """Mean and sample SD (ddof 1, :func:`cure.evaluate.noise_of`) of per-seed values."""
    from cure.evaluate import noise_of

    m = sum(xs) / len(xs)
    sd = noise_of([{"x": x} for x in xs]).get("x", float("nan"))
    return {"mean": m, "sd": sd, "n": len(xs), "runs": list(xs)}


def gain(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Difference of two seed means and its standard error, sqrt(sd0^2/n0 + sd1^2/n1)."""
    se = math.sqrt(before["sd"] ** 2 / before["n"] + after["sd"] ** 2 / after["n"])
    return {"gain": after["mean"] - before["mean"], "se": se}


def fmt(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


# --- the parts ---------------------------------------------------------------------------------------------


def seed_runs(entry: dict[str, Any] | None, bench: str) -> dict[int, dict[str, float]]:
    """Per seed, the metrics an evaluation entry holds for ``bench`` (all seeds with repeats, else the first)."""
    if not entry or bench not in entry.get("benchmarks", {}):
        return {}
    return dict(zip((int(s) for s in entry["seeds"]), benchmark_runs(entry, bench)))


def evaluate_seeds(model: str, tasks_path: str, cfg: CureConfig, seeds: list[int], round_: int,
                   known: dict[int, dict[str, float]] | None = None) -> tuple[list[dict[str, float]], list[int]]:
    """Per-seed metrics of ``model`` on the held-out tasks; seeds in ``known`` (the run's own evaluation of the same
    model, tasks and config, which is deterministic given the seed) are taken from it. Returns (runs, seeds
    evaluated here)."""
    from cure.evaluate import evaluate_benchmarks

    known = known or {}
    todo = [s for s in seeds if s not in known]
    here: dict[int, dict[str, float]] = {}
    if todo:
        entry = evaluate_benchmarks(model, {"heldout": load_tasks(tasks_path)[0]}, cfg, round_, todo)
        here = dict(zip(todo, benchmark_runs(entry, "heldout")))
    return [known[s] if s in known else here[s] for s in seeds], todo


def labelfree_run(demo: dict[str, Any], base: str, tester: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """``cure run`` of the demo's preset and config, label-free, from ``base`` with ``tester`` frozen."""
    from cure_pipelines.local_run import run_local

    cfg_file = out / "demo-config.yaml"
    cfg_file.write_text(dump_config(CureConfig.model_validate(demo["config"])))
    overrides = ["reward.code_reward_source=generated_tests", f"reward.tester_model={tester}", *extra]
    t0 = time.monotonic()
    res = run_local(demo["preset"], out / "labelfree", str(cfg_file), overrides, rounds=demo["round"], base_model=base,
                    overwrite=True)  # a rerun of the benchmark replaces its own earlier run
    return {"seconds": round(time.monotonic() - t0), "overrides": overrides, "runs": res["runs"],
            "history": res["history"], "rounds": res["rounds"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eval_pipeline(demo: dict[str, Any], model: str, out: Path, overrides: list[str], seeds: list[int],
                  coder_model: str = "", coder_engine: str = "openai") -> dict[str, Any]:
    """One run of the evaluation pipeline (``cure run --pipeline evaluation``, through ``kfp.local``) with the demo's
    preset and config on ``model``; returns its results folder's ``history.json`` or ``pairing.json``."""
    from cure_pipelines.local_eval import run_local_eval

    cfg_file = out.parent / "demo-config.yaml"
    cfg_file.write_text(dump_config(CureConfig.model_validate(demo["config"])))
    res = run_local_eval(demo["preset"], out, str(cfg_file), overrides, base_model=model, coder_model=coder_model,
                         coder_engine=coder_engine, seeds=seeds)
    name = "pairing.json" if coder_model else "history.json"
    return {"seconds": round(res["seconds"]), "result": json.loads((out / name).read_text())}


def pairing(demo: dict[str, Any], coder: str, testers: dict[str, str], seeds: list[int], out: Path,
            extra: list[str]) -> dict[str, Any]:
    """The coder served over HTTP by ``cure.rollout.serve`` (the API path); per tester one evaluation pipeline run
    with ``--coder-model`` (the pipeline's pairing task)."""
    port = free_port()
    log_path = out / "serve.log"
    with open(log_path, "w") as serve_log:
        proc = subprocess.Popen([sys.executable, "-m", "cure.rollout.serve", "--model", coder, "--served-model-name",
                                 "coder-round0", "--port", str(port)], stdout=serve_log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"the local OpenAI-compatible server exited ({proc.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local OpenAI-compatible server did not listen on port {port}; see {log_path}")
            time.sleep(0.5)
        # chat: the server applies the model's own chat template
        api = [f"rollout.api_base_url=http://127.0.0.1:{port}/v1", "rollout.api_mode=chat", "rollout.api_rpm_limit=100000"]
        os.environ.setdefault(CureConfig.model_validate(demo["config"]).rollout.api_key_env, "EMPTY")
        runs = {}
        for i, (name, path) in enumerate(testers.items()):
            runs[name] = eval_pipeline(demo, path, out / f"pairing-{i}", [*api, *extra], seeds, "coder-round0", "openai")
        return {name: {**r["result"], "pipeline_seconds": r["seconds"]} for name, r in runs.items()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def refinement(demo: dict[str, Any], model: str, rounds: int, seeds: list[int], out: Path,
               extra: list[str]) -> dict[str, Any]:
    """Per seed, the refinement rows (round 0 = one-shot) of ``model`` on the held-out tasks, from one evaluation
    pipeline run with ``eval.refine_rounds``."""
    from cure.refine import rows_from_metrics

    r = eval_pipeline(demo, model, out, [f"eval.refine_rounds={rounds}", *extra], seeds)
    entry = r["result"][-1]
    per_seed = seed_runs(entry, entry["primary_benchmark"])
    return {"seeds": [rows_from_metrics(per_seed[s]) for s in seeds], "pipeline_seconds": r["seconds"]}


def _only_benchmark(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-seed runs of a pairing result's one benchmark."""
    (runs,) = result["benchmarks"].values()
    return runs


# --- tables ------------------------------------------------------------------------------------------------


def labelfree_table(res: dict[str, Any]) -> str:
    ev, n = res["eval"], res["setting"]["round"]
    keys = [k for k in ("code_acc", "unit_test_acc") + tuple(f"bon_{a}x{b}" for a, b in res["setting"]["scales"])
            if k in ev["round0"][0]]
    lines = ["| model | " + " | ".join(keys) + " | code_acc gain over round 0 (± SE) |",
             "|---|" + "---|" * (len(keys) + 1)]
    labels = {"round0": "round 0 (start of both)", "ground_truth": f"ground-truth RL, round {n} (the demo)",
              "label_free": f"label-free RL, round {n}"}
    for name, label in labels.items():
        if name not in ev:
            continue
        stats = {k: mean_sd([r[k] for r in ev[name]]) for k in keys}
        if name == "round0":
            g = "—"
        else:
            d = gain(mean_sd([r["code_acc"] for r in ev["round0"]]), stats["code_acc"])
            g = f"{d['gain']:+.3f} ± {d['se']:.3f}"
        lines.append(f"| {label} | " + " | ".join(fmt(stats[k]) for k in keys) + f" | {g} |")
    return "\n".join(lines) + "\n"


def bon_gain_table(res: dict[str, Any]) -> str:
    """Best-of-N minus one-shot code accuracy, paired within each seed (same programs), mean ± SD over the seeds and
    its standard error: whether the model's own tests pick programs better than one sample does."""
    ev, n = res["eval"], res["setting"]["round"]
    bons = [f"bon_{a}x{b}" for a, b in res["setting"]["scales"] if f"bon_{a}x{b}" in ev["round0"][0]]
    lines = ["| model | " + " | ".join(f"{k} - code_acc (SD; SE)" for k in bons) + " |", "|---|" + "---|" * len(bons)]
    labels = {"round0": "round 0", "ground_truth": f"ground-truth RL, round {n} (the demo)",
              "label_free": f"label-free RL, round {n}"}
    for name, label in labels.items():
        if name not in ev:
            continue
        cells = []
        for k in bons:
            d = mean_sd([r[k] - r["code_acc"] for r in ev[name]])
            cells.append(f"{d['mean']:+.3f} ({d['sd']:.3f}; {d['sd'] / math.sqrt(d['n']):.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def training_table(res: dict[str, Any]) -> str:
    """Per round: the ground-truth pass rate of the round's training samples, both runs (the label-free run never
    reads it; its coder reward is the generated-test pass rate)."""
    runs = {"ground truth": res.get("demo_rounds") or [], "label-free": res.get("labelfree_rounds") or []}
    n = max((len(v) for v in runs.values()), default=0)
    if not n:
        return ""
    lines = ["| round | " + " | ".join(f"{k}: train code_acc" for k in runs) + " |", "|---|" + "---|" * len(runs)]
    for i in range(n):
        cells = []
        for rows in runs.values():
            r = rows[i] if i < len(rows) else {}
            cells.append(f"{r['execute']['train_code_acc']:.3f}" if "execute" in r else "")
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def history_table(res: dict[str, Any]) -> str:
    """Held-out metrics at each evaluated round, from each run's own evaluations (all noise seeds at round 0, the
    preset's evaluation seed later): readable while the label-free run is still under way."""
    runs = {"ground truth": res.get("demo_history") or [], "label-free": res.get("labelfree_history") or []}
    rounds = sorted({h["round"] for v in runs.values() for h in v})
    if not runs["label-free"]:
        return ""
    keys = ("code_acc", "unit_test_acc")
    lines = ["| round | seeds | " + " | ".join(f"{k}: {key}" for k in runs for key in keys) + " |",
             "|---|---|" + "---|" * (2 * len(keys))]
    for r in rounds:
        cells, seeds = [], ""
        for hist in runs.values():
            h = history_entry(hist, r)
            per_seed = benchmark_runs(h, h["primary_benchmark"]) if h else []
            seeds = seeds or (", ".join(map(str, h["seeds"])) if h else "")
            cells += [fmt(mean_sd([x[k] for x in per_seed])) if per_seed else "" for k in keys]
        lines.append(f"| {r} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pairing_table(res: dict[str, Any]) -> str:
    pa = res["pairing"]
    lines = ["| tester | programs x tests | coder one-shot | BoN, paired tester | BoN, coder's own tests | gain |",
             "|---|---|---|---|---|---|"]
    for name, result in pa.items():
        runs = _only_benchmark(result)
        one = mean_sd([r["code_acc"] for r in runs])
        for k, s in enumerate(runs[0]["scales"]):
            st = {key: mean_sd([r["scales"][k][key] for r in runs]) for key in ("bon_paired", "bon_own", "gain")}
            lines.append(f"| {name} | {s['programs']} x {s['tests']} | {fmt(one)} | {fmt(st['bon_paired'])} | "
                         f"{fmt(st['bon_own'])} | {st['gain']['mean']:+.3f} ± {st['gain']['sd']:.3f} |")
    lines += ["", "| tester | unit-test acc., tester | unit-test acc., coder | tokens: coder programs | coder own tests | "
              "tester tests | prompts (coder / test) |", "|---|---|---|---|---|---|---|"]
    for name, result in pa.items():
        runs = _only_benchmark(result)
        tok = {k: sum(r["tokens"][k] for r in runs) / len(runs) for k in runs[0]["tokens"]}
        lines.append(f"| {name} | {fmt(mean_sd([r['tester_unit_test_acc'] for r in runs]))} | "
                     f"{fmt(mean_sd([r['coder_unit_test_acc'] for r in runs]))} | {tok['coder_programs']:.0f} | "
                     f"{tok['coder_tests']:.0f} | {tok['tester_tests']:.0f} | {tok['coder_prompts']:.0f} / {tok['test_prompts']:.0f} |")
    return "\n".join(lines) + "\n"


def refine_table(res: dict[str, Any]) -> str:
    parts = []
    for name, measured in res["refine"].items():
        per_seed = measured["seeds"]
        rows0 = per_seed[0]
        bons = [k for k in rows0[0] if k.startswith("bon_")]
        lines = [f"| {name}: round | code acc. | " + " | ".join(f"BoN {k[4:]}" for k in bons) +
                 " | unit-test acc. | programs refined / prompted | tests regenerated / prompted |",
                 "|---|" + "---|" * (4 + len(bons))]
        for r in range(len(rows0)):
            st = {k: mean_sd([seed[r][k] for seed in per_seed]) for k in ("code_acc", "unit_test_acc", *bons)}
            cnt = {k: sum(seed[r].get(k, 0) for seed in per_seed) / len(per_seed)
                   for k in ("programs_refined", "code_prompts", "tests_regenerated", "test_prompts")}
            label = "0 (one-shot)" if r == 0 else str(r)
            lines.append(f"| {label} | {fmt(st['code_acc'])} | " + " | ".join(fmt(st[k]) for k in bons) +
                         f" | {fmt(st['unit_test_acc'])} | {cnt['programs_refined']:.0f} / {cnt['code_prompts']:.0f} | "
                         f"{cnt['tests_regenerated']:.0f} / {cnt['test_prompts']:.0f} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def render(res: dict[str, Any]) -> str:
    s = res["setting"]
    head = [
        "## The trained tester at work: measured tables",
        "",
        f"Demo run `{s['demo_run']}` (preset `{s['preset']}`, {s['round']} rounds of {s['tasks_per_step']} tasks): "
        f"round 0 = `{s['base']}`, round {s['round']} = checkpoint `{s['latest']}`. Held-out: `{s['heldout']}`; "
        f"seeds {', '.join(map(str, s['seeds']))}; values are mean ± SD over the seeds (the evaluation noise of "
        f"one seed); gains carry the standard error of a difference of means. Commit {s.get('commit', '?')}, "
        f"{s.get('machine', '')}, {s.get('started', '')}, load (1/5/15 min) at start {s.get('load_start')}, "
        f"at end {s.get('load_end')}.",
        "",
    ]
    body = []
    if "eval" in res:
        body += [f"### Label-free RL vs ground-truth RL (held-out, {s['round']} rounds each)", "", labelfree_table(res)]
        body += ["Best-of-N over one-shot, paired within each seed (the same programs; the model's own tests pick):",
                 "", bon_gain_table(res)]
    ht = history_table(res)
    if ht:
        body += ["Held-out figures at each evaluated round, from each run's own evaluations:", "", ht]
    tt = training_table(res) if res.get("labelfree_rounds") else ""
    if tt:
        body += ["Training rounds: the ground-truth pass rate of each round's own samples (train code_acc; the "
                 "label-free run never reads it):", "", tt]
    if "pairing" in res:
        body += ["### Pairing: round-0 coder behind the local OpenAI-compatible server", "", pairing_table(res)]
    if "refine" in res:
        body += [f"### Agentic refinement ({s['refine_rounds']} rounds)", "", refine_table(res)]
    if "timing" in res:
        body += ["Wall times (s): " + ", ".join(f"{k} {v}" for k, v in res["timing"].items()), ""]
    return "\n".join(head + body)


# --- main --------------------------------------------------------------------------------------------------


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-run", required=True, help="folder of a finished `cure run --preset demo` (e.g. runs/demo)")
    p.add_argument("--out", required=True, help="results folder (results.json, tables.md, the label-free run)")
    p.add_argument("--base", help="round-0 model folder (default: the preset's base model, via $CURE_CACHE)")
    p.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default: the preset's noise seeds)")
    p.add_argument("--refine-rounds", type=int, default=2)
    p.add_argument("--refine-models", nargs="+", default=["trained", "base"], choices=["trained", "base"],
                   help="models refined: the trained round-N model and/or round 0")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override (every part)")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS, help="none: only rewrite the tables")
    p.add_argument("--redo", nargs="*", default=[], choices=PARTS, help="parts to measure again though recorded")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from cure import stages
    from cure.store import open_store

    demo = read_demo(args.demo_run)
    preset = read_preset(demo["preset"])["run"]
    out = Path(args.out).resolve()
    (out / "models").mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    res: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    previous = dict(res)

    def save() -> None:
        if args.parts:  # a measurement; a rewrite of the tables keeps the measurement's provenance
            res["setting"]["load_end"] = _load()
        results_path.write_text(json.dumps(res, indent=2))
        (out / "tables.md").write_text(render(res))

    base = str(Path(args.base).resolve()) if args.base else str(out / "models" / "round-0")
    if not args.base and not (out / "models" / "round-0" / "config.json").is_file():
        stages.init_model(preset["base_model"], base)
    trained = out / "models" / demo["latest"]
    if not (trained / "config.json").is_file():
        open_store(demo["store_uri"]).fetch_checkpoint(demo["experiment"], demo["latest"], trained)
    bench_name, _, spec = preset["eval_benchmarks"][0].partition("=")
    heldout = str(out / "heldout.jsonl")
    stages.prepare_data(spec, heldout)
    seeds = args.seeds or list(preset["noise_seeds"])
    cfg = CureConfig.model_validate(demo["config"])
    if args.overrides:
        from cure.config import apply_overrides

        data = cfg.model_dump(mode="json")
        apply_overrides(data, args.overrides)
        cfg = CureConfig.model_validate(data)
    res["setting"] = {
        "demo_run": demo["dir"], "preset": demo["preset"], "experiment": demo["experiment"], "round": demo["round"],
        "latest": demo["latest"], "tasks_per_step": cfg.data.tasks_per_step, "base": base, "trained": str(trained),
        "heldout": spec, "demo_benchmark": bench_name, "seeds": seeds, "scales": [list(x) for x in cfg.eval.scales],
        "refine_rounds": args.refine_rounds, "overrides": args.overrides, "commit": _commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU" if not _has_gpu() else platform.machine(),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_start": _load(),
    }
    if not args.parts and "setting" in previous:
        res["setting"].update({k: previous["setting"][k] for k in ("commit", "machine", "started", "load_start", "load_end")
                               if k in previous["setting"]})
    timing = res.setdefault("timing", {})
    todo = lambda part, key: part in args.parts and (key not in res or part in args.redo)  # noqa: E731

    if todo("labelfree", "labelfree"):
        t0 = time.monotonic()
        res["labelfree"] = labelfree_run(demo, base, str(trained), out, args.overrides)
        timing["labelfree_training"] = round(time.monotonic() - t0)
        save()
    rounds_file = Path(demo["dir"]) / "rounds.json"
    res["demo_rounds"] = json.loads(rounds_file.read_text()) if rounds_file.is_file() else []
    res["demo_history"] = demo["history"]
    if (out / "labelfree" / "store").is_dir():
        from cure.experiment import read_history, read_rounds

        lf_st = open_store(f"file://{out / 'labelfree' / 'store'}")
        res["labelfree_history"] = read_history(lf_st, f"local-{demo['preset']}")
        res["labelfree_rounds"] = read_rounds(lf_st, f"local-{demo['preset']}")
    if todo("eval", "eval"):
        t0 = time.monotonic()
        ev: dict[str, Any] = {}
        ev["round0"], ev["round0_evaluated_here"] = evaluate_seeds(
            base, heldout, cfg, seeds, 0, seed_runs(history_entry(demo["history"], 0), bench_name))
        ev["ground_truth"], ev["ground_truth_evaluated_here"] = evaluate_seeds(
            str(trained), heldout, cfg, seeds, demo["round"],
            seed_runs(history_entry(demo["history"], demo["round"]), bench_name))
        lf_store = out / "labelfree" / "store"
        if lf_store.is_dir():
            from cure.experiment import latest_round, read_history

            lf_dir = out / "models" / "label-free"
            st = open_store(f"file://{lf_store}")
            name, lf_round = latest_round(st, f"local-{demo['preset']}")
            if not (lf_dir / "config.json").is_file() or "labelfree" in args.redo:
                st.fetch_checkpoint(f"local-{demo['preset']}", name or "latest", lf_dir)
            lf_hist = history_entry(read_history(st, f"local-{demo['preset']}"), lf_round)
            ev["label_free"], ev["label_free_evaluated_here"] = evaluate_seeds(
                str(lf_dir), heldout, cfg, seeds, lf_round, seed_runs(lf_hist, bench_name))
        res["eval"] = ev
        timing["evaluation"] = round(time.monotonic() - t0)
        save()
    if todo("pairing", "pairing"):
        t0 = time.monotonic()
        res["pairing"] = pairing(demo, base, {"round 0": base, f"round {demo['round']}": str(trained)}, seeds, out,
                                 args.overrides)
        timing["pairing"] = round(time.monotonic() - t0)
        save()
    if "refine" in args.parts:
        t0 = time.monotonic()
        models = {"trained": (f"round {demo['round']}", str(trained)), "base": ("round 0", base)}
        res["refine"] = {} if "refine" in args.redo else res.get("refine", {})
        for key in args.refine_models:
            name, m = models[key]
            if name not in res["refine"]:
                res["refine"][name] = refinement(demo, m, args.refine_rounds, seeds, out / f"refine-{key}",
                                                 args.overrides)
                timing[f"refinement {name}"] = round(time.monotonic() - t0)
                t0 = time.monotonic()
                save()
    save()
    print(render(res))
    return 0


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
