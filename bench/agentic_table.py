"""The agentic frameworks (MPSC, AlphaCodium, S*) on the demo's models, through the evaluation pipeline.

    cure run --preset demo --out runs/demo          # the demo (already done by `make demo`)
    PYTHONPATH=src:. python bench/agentic_table.py --demo-run runs/demo --out runs/agentic-table [--tasks 16]

From a finished demo run folder this takes round 0 (the preset's base model; ``--base`` names the folder) and the
last round (the store's latest checkpoint), the demo's held-out benchmark (its first ``--tasks`` tasks: the
benchmark spec of the preset with that count) and its noise seeds, and runs the evaluation pipeline
(``cure run --pipeline evaluation``, through ``kfp.local``) once per (setting, framework):

* **round 0** and **round N**: self-evaluation with ``eval.framework=FW`` (coder and tester the same model);
* **API coder**: round 0 served by ``python -m cure.rollout.serve`` and reached through the OpenAI-compatible engine
  as the coder (``--coder-model``, ``--coder-engine openai``), round N as the tester (the pipeline's pairing task).

Each run evaluates every seed; one-shot and Best-of-N come from the same runs. Writes ``results.json`` (every
seed's numbers, wall times, load) and ``table.md`` (mean ± sample SD over the seeds, :func:`cure.evaluate.noise_of`)
under ``--out``; a cell already in ``results.json`` is skipped unless ``--redo``. Model-written code runs in the
configured sandbox (gVisor by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cure_pipelines.local_run as local_run

from bench.tester_uses import free_port, mean_sd, read_demo
from cure.config import CureConfig, dump_config, read_preset

FRAMEWORKS = ("mpsc", "alphacodium", "sstar")
ATTEMPTS = 3  # runs of one cell before giving up (a sandbox that fails to start fails the run)
METRICS = ("code_acc", "unit_test_acc", "final_tests_per_task", "prompt_tokens_per_task",
           "completion_tokens_per_task", "executions_per_task", "fallbacks_per_task")


def run_section(preset: str) -> dict[str, Any]:
    """What ``cure run`` reads of the preset besides the config (rounds, benchmarks, seeds)."""
    return dict(local_run.read_preset(preset)["run"])


def limit_tasks(preset: str, tasks: int | None) -> None:
    """In this process only, the local runs read ``preset`` with its first benchmark cut to ``tasks`` tasks (the
    benchmark spec's count); its config sections are untouched."""
    if not tasks:
        return
    name, _, spec = read_preset(preset)["run"]["eval_benchmarks"][0].partition("=")
    parts = spec.split(":")  # synthetic:heldout:COUNT:SEED
    parts[2] = str(tasks)

    def limited(n: str) -> dict[str, Any]:
        data = read_preset(n)
        if n == preset:
            data["run"] = {**data["run"], "eval_benchmarks": [f"{name}={':'.join(parts)}"]}
        return data

    local_run.read_preset = limited


def pipeline_run(preset: str, demo: dict[str, Any], model: str, out: Path, overrides: list[str], seeds: list[int],
                 coder_model: str = "") -> dict[str, Any]:
    """One evaluation pipeline run; returns its ``history.json`` (last entry) or ``pairing.json``, and wall time."""
    from cure_pipelines.local_eval import run_local_eval

    cfg_file = out.parent / "demo-config.yaml"
    cfg_file.write_text(dump_config(CureConfig.model_validate(demo["config"])))
    load0 = os.getloadavg()[0]
    failures = []
    for attempt in range(ATTEMPTS):
        try:
            res = run_local_eval(preset, out, str(cfg_file), overrides, base_model=model, coder_model=coder_model,
                                 coder_engine="openai", seeds=seeds)
            break
        except Exception as e:  # a failed run is rerun whole; the failure is kept in the results
            failures.append(f"{type(e).__name__}: {str(e)[:300]}")
            logging.warning("pipeline run %s failed (attempt %d): %s", out.name, attempt + 1, e)
            if attempt == ATTEMPTS - 1:
                raise
    result = json.loads((out / ("pairing.json" if coder_model else "history.json")).read_text())
    return {"seconds": round(res["seconds"]), "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "failed_attempts": failures, "result": result if coder_model else result[-1]}


def per_seed(cell: dict[str, Any], fw: str) -> list[dict[str, float]]:
    """Per seed: one-shot code and unit-test accuracy, BoN at the largest scale, and the framework's metrics."""
    r = cell["result"]
    rows = []
    if "benchmarks" in r and isinstance(next(iter(r["benchmarks"].values())), list):  # pairing.json
        for rep in next(iter(r["benchmarks"].values())):
            s = rep["scales"][-1]
            row = {"code_acc": rep["code_acc"], "unit_test_acc": rep["tester_unit_test_acc"],
                   "bon": s["bon_paired"], "bon_own": s["bon_own"], "bon_scale": f"{s['programs']}x{s['tests']}"}
            row.update({f"fw_{k}": rep["agentic"][f"{fw}_{k}"] for k in METRICS})
            rows.append(row)
        return rows
    bench = r["primary_benchmark"]
    runs = r.get("repeats", {}).get(bench) or [r["benchmarks"][bench]]
    for m in runs:
        scale = max((k for k in m if k.startswith("bon_") and not k.endswith("_accumulate")),
                    key=lambda k: int(k[4:].split("x")[0]))
        row = {"code_acc": m["code_acc"], "unit_test_acc": m["unit_test_acc"], "bon": m[scale], "bon_scale": scale[4:]}
        row.update({f"fw_{k}": m[f"{fw}_{k}"] for k in METRICS})
        rows.append(row)
    return rows


def fmt(s: dict[str, Any], digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def render(res: dict[str, Any]) -> str:
    st = res["setting"]
    lines = [
        f"Demo run `{st['demo_run']}` (round 0 and round {st['round']}), {st['tasks']} held-out tasks "
        f"(`{st['heldout']}`), seeds {', '.join(map(str, st['seeds']))}, `eval.k_code`={st['k_code']}, "
        f"`eval.k_test`={st['k_test']}, `eval.framework_iterations`={st['iterations']}; {st['machine']}; "
        f"commit {st['commit']}; started {st['started']}, load average {st['load_start']} at the start.",
        "",
        "Mean ± sample SD over the seeds. One-shot and BoN are the same runs' (the pairing rows: the API coder's "
        "one-shot accuracy, BoN with the tester's tests, the tester's unit-test accuracy). Tokens, executions and "
        "fallbacks are the framework's, per task.",
        "",
        "| setting | framework | one-shot code | one-shot unit-test | BoN | framework code | framework unit-test "
        "| final tests | prompt tokens | completion tokens | executions | fallbacks | pipeline wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting in res.get("cells", {}):
        for fw, cell in res["cells"][setting].items():
            rows = per_seed(cell, fw)
            col = lambda key, rows=rows: mean_sd([r[key] for r in rows])  # noqa: E731
            # the unit-test accuracy of no tests is undefined (the metric reads 0.0 then): seeds without final tests
            # are left out, and the cell says over how many seeds it is
            tested = [r["fw_unit_test_acc"] for r in rows if r["fw_final_tests_per_task"] > 0]
            test_acc = "— (no final tests)" if not tested else fmt(mean_sd(tested)) + (
                f" ({len(tested)} of {len(rows)} seeds)" if len(tested) < len(rows) else "")
            lines.append(
                f"| {setting} | {fw} | {fmt(col('code_acc'))} | {fmt(col('unit_test_acc'))} | "
                f"{fmt(col('bon'))} ({rows[0]['bon_scale']}) | {fmt(col('fw_code_acc'))} | {test_acc} | "
                f"{fmt(col('fw_final_tests_per_task'), 2)} | {fmt(col('fw_prompt_tokens_per_task'), 0)} | "
                f"{fmt(col('fw_completion_tokens_per_task'), 0)} | {fmt(col('fw_executions_per_task'), 1)} | "
                f"{fmt(col('fw_fallbacks_per_task'), 2)} | {cell['seconds']} s (load {cell['load'][0]}-{cell['load'][1]}) |")
    return "\n".join(lines) + "\n"


def serve(model: str, out: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The model behind the local OpenAI-compatible server; returns (process, port) once it listens."""
    import socket

    port = free_port()
    log_file = open(out / "serve.log", "w")  # noqa: SIM115 (kept open for the server's life)
    proc = subprocess.Popen([sys.executable, "-m", "cure.rollout.serve", "--model", model, "--served-model-name",
                             "coder-round0", "--port", str(port)], stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the local OpenAI-compatible server did not come up; see {out / 'serve.log'}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-run", required=True, help="folder of a finished `cure run --preset demo` (e.g. runs/demo)")
    p.add_argument("--out", required=True, help="results folder (results.json, table.md, the pipeline runs)")
    p.add_argument("--base", help="round-0 model folder (default: the preset's base model)")
    p.add_argument("--tasks", type=int, help="held-out tasks (default: the preset's count)")
    p.add_argument("--seeds", type=int, nargs="+", help="evaluation seeds (default: the preset's noise seeds)")
    p.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    p.add_argument("--settings", nargs="+", default=["round 0", "last round", "API coder"],
                   choices=["round 0", "last round", "API coder"])
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override (every run)")
    p.add_argument("--redo", action="store_true", help="measure cells already in results.json again")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from cure import stages
    from cure.store import open_store

    demo = read_demo(args.demo_run)
    out = Path(args.out).resolve()
    (out / "models").mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    res: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}
    preset = demo["preset"]
    limit_tasks(preset, args.tasks)
    base = str(Path(args.base).resolve()) if args.base else str(out / "models" / "round-0")
    if not args.base and not (out / "models" / "round-0" / "config.json").is_file():
        stages.init_model(run_section(preset)["base_model"], base)
    trained = out / "models" / demo["latest"]
    if not (trained / "config.json").is_file():
        open_store(demo["store_uri"]).fetch_checkpoint(demo["experiment"], demo["latest"], trained)
    seeds = args.seeds or list(run_section(preset)["noise_seeds"])
    cfg = CureConfig.model_validate(demo["config"])
    spec = run_section(preset)["eval_benchmarks"][0].partition("=")[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    res["setting"] = {
        "demo_run": demo["dir"], "round": demo["round"], "base": base, "trained": str(trained), "heldout": spec,
        "tasks": int(spec.split(":")[2]), "seeds": seeds, "k_code": cfg.eval.k_code, "k_test": cfg.eval.k_test,
        "iterations": cfg.eval.framework_iterations, "overrides": args.overrides, "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    cells = res.setdefault("cells", {})

    def save() -> None:
        res["setting"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
        results_path.write_text(json.dumps(res, indent=2))
        (out / "table.md").write_text(render(res))

    models = {"round 0": base, "last round": str(trained)}
    server = None
    try:
        for setting in args.settings:
            for fw in args.frameworks:
                if fw in cells.get(setting, {}) and not args.redo:
                    continue
                over = [f"eval.framework={fw}", *args.overrides]
                run_dir = out / f"{setting.replace(' ', '-')}-{fw}"
                if setting == "API coder":
                    if server is None:
                        server = serve(base, out)
                        os.environ.setdefault(cfg.rollout.api_key_env, "EMPTY")
                    # chat with the model's own (system, user) messages (api_request=full): the served model
                    # applies its chat template; the reference's request (one user message holding the rendered
                    # prompt under a fixed system message) is a prompt this model was never trained on
                    over += [f"rollout.api_base_url=http://127.0.0.1:{server[1]}/v1", "rollout.api_mode=chat",
                             "rollout.api_request=full", "rollout.api_rpm_limit=100000"]
                    cell = pipeline_run(preset, demo, str(trained), run_dir, over, seeds, "coder-round0")
                else:
                    cell = pipeline_run(preset, demo, models[setting], run_dir, over, seeds)
                cells.setdefault(setting, {})[fw] = cell
                save()
                print(render(res), flush=True)
    finally:
        if server is not None:
            server[0].terminate()
            server[0].wait(timeout=30)
    save()
    print(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
