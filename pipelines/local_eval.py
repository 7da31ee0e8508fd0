"""``cure run --pipeline evaluation``: the evaluation pipeline on this machine, through ``kfp.local``.

The same graph as the cluster's evaluation pipeline (:func:`cure_pipelines.training.build_eval_pipeline`): prepare the
preset's held-out benchmarks, copy the model in, then either evaluate it alone (with ``eval.refine_rounds`` K the
agentic refinement rows too, :mod:`cure.refine`) or, with ``--coder-model``, evaluate it as the tester paired with
that coder (:mod:`cure.pairing`; ``--coder-engine openai`` reaches an OpenAI-compatible server at
``rollout.api_base_url``, key from ``rollout.api_key_env`` in this environment, where a cluster maps a Secret).

The run folder gets the evaluation's ``history.json`` (self-evaluation) and ``refine.md`` (with refinement), or
``pairing.md`` and ``pairing.json`` (pairing), besides the store and KFP's outputs (``kfp/``). The console shows
the tasks and the evaluation's tables (:class:`cure.console.RunConsole`); the orchestrator's output goes to
``run.log``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from .local_run import (
    RunLock,
    pipeline_arguments,
    preset_and_config,
    remove_run_files,
    run_environment,
    run_folder_state,
)

log = logging.getLogger("cure.run")

# What an evaluation run creates in its folder: replaced by the next evaluation there (anything else is left alone).
EVAL_FILES = ("store", "kfp", "sandbox", "run.json", "config.json", "run.log", "history.json", "refine.md",
              "pairing.md", "pairing.json")


def run_local_eval(preset: str, out_dir: str | Path, cfg_file: str | None = None, overrides: list[str] | None = None,
                   base_model: str | None = None, coder_model: str = "", coder_engine: str = "openai",
                   seeds: list[int] | None = None, runner: str = "subprocess") -> dict[str, Any]:
    """Run the evaluation pipeline once on the preset's benchmarks; returns {"run_dir", "seconds", "files"}.

    ``base_model``: the model to evaluate (the tester when pairing); default the preset's. ``seeds``: default the
    preset's noise seeds."""
    from cure.validate import CliError

    p, cfg = preset_and_config(preset, cfg_file, overrides, runner)
    model = base_model or p["base_model"]
    run_dir = Path(out_dir).resolve()
    store_uri, experiment = f"file://{run_dir / 'store'}", f"local-{preset}-evaluation"
    run_folder_state(run_dir)  # a folder of other things is refused before anything is written
    with RunLock(run_dir):
        state = run_folder_state(run_dir)
        if state is not None and state["experiment"] != experiment:
            raise CliError(f"--out {run_dir} holds experiment {state['experiment']!r}, not this evaluation "
                           f"({experiment}); nothing was changed: choose another --out")
        remove_run_files(run_dir, EVAL_FILES)  # an earlier evaluation in this folder: its results are replaced
        (run_dir / "run.json").write_text(json.dumps({"preset": preset, "experiment": experiment,
                                                      "pipeline": "evaluation", "base_model": model}))
        with run_environment():
            return _run_eval(preset, p, cfg, run_dir, store_uri, experiment, model, coder_model, coder_engine, seeds,
                             runner)


def _run_eval(preset: str, p: dict[str, Any], cfg: Any, run_dir: Path, store_uri: str, experiment: str, model: str,
              coder_model: str, coder_engine: str, seeds: list[int] | None, runner: str) -> dict[str, Any]:
    from kfp import local

    from cure.console import RunConsole
    from cure.container_runner import make_runner

    from .training import ClusterOptions, build_eval_pipeline

    pipeline = build_eval_pipeline(cluster=ClusterOptions(gpus=0, store_secret=""), base_model=model,
                                   eval_benchmarks=tuple(p["eval_benchmarks"]), cfg=cfg,
                                   name=f"cure-{preset}-evaluation")
    run = {"base_model": model, "eval_benchmarks": list(p["eval_benchmarks"]), "use_latest": False,
           "seeds": list(seeds or p["noise_seeds"]), "coder_model": coder_model or "", "coder_engine": coder_engine}
    arguments = pipeline_arguments(cfg, run, store_uri, experiment)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    what = f"pairing (coder {coder_model}, {coder_engine})" if coder_model else "self-evaluation"
    what += f" of {model}, seeds {', '.join(map(str, run['seeds']))}"
    t0 = time.monotonic()
    with RunConsole(run_dir, 0, title=f"cure run --pipeline evaluation --preset {preset}", what=what):
        local.init(runner=make_runner(runner, run_dir, model), pipeline_root=str(run_dir / "kfp"), raise_on_error=True)
        log.info("evaluation pipeline: %s -> %s", what, run_dir)
        pipeline(**arguments)
    seconds = time.monotonic() - t0
    files = collect_outputs(run_dir)
    if not files:
        raise RuntimeError(f"the evaluation pipeline finished but left no history or pairing report under {run_dir}")
    for f in files:
        if f.suffix == ".md":
            print(f.read_text())
    print(f"finished in {seconds / 60:.1f} min; results: {', '.join(str(f) for f in files)}")
    return {"run_dir": run_dir, "seconds": seconds, "files": files}


def collect_outputs(run_dir: Path) -> list[Path]:
    """Copy the run's results to the top of ``run_dir``: the self-evaluation's history (from the store) with its
    refinement table, or the pairing report (from the KFP outputs)."""
    from cure.refine import write_tables

    files: list[Path] = []
    for h in sorted((run_dir / "store").glob("*/runs/*/history.json")):
        history = json.loads(h.read_text())
        (run_dir / "history.json").write_text(json.dumps(history, indent=2))
        files.append(run_dir / "history.json")
        if history and any(k.startswith("refine") for k in history[-1].get("benchmarks", {}).get(
                history[-1].get("primary_benchmark", ""), {})):
            write_tables(history[-1], run_dir / "refine.md")
            files.append(run_dir / "refine.md")
    for name in ("pairing.md", "pairing.json"):
        found = sorted((run_dir / "kfp").glob(f"*/evaluate-pairing/pairing/{name}"))
        if found:
            shutil.copyfile(found[-1], run_dir / name)
            files.append(run_dir / name)
    return files
