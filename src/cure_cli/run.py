"""``cure run``: the training pipeline (or ``--pipeline evaluation``) on this machine through ``kfp.local``
(:mod:`cure_pipelines.local_run`, :mod:`cure_pipelines.local_eval`)."""

from __future__ import annotations

import argparse

from cure.config import CureConfig


def run_presets() -> list[str]:
    from cure_pipelines.local_run import run_presets

    return run_presets()


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="demo", choices=run_presets(),
                   help="a preset file of the package with a run section (cure/presets/NAME.yaml); demo: the offline main "
                   "job; smoke: one tiny round")
    p.add_argument("--out", help="run folder (default runs/<preset>)")
    p.add_argument("--rounds", type=int, help="override the preset's number of rounds (with --resume: rounds to add)")
    p.add_argument("--eval-every", type=int, help="override the preset's evaluation interval (global rounds)")
    p.add_argument("--segment", type=int, help="rounds per local run (the compiled graph's round slots)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment kept in --out (from its own base model unless --base-model) instead of starting afresh")
    p.add_argument("--overwrite", action="store_true",
                   help="start the experiment kept in --out afresh, deleting what an earlier run created there")
    p.add_argument("--base-model", help="override the preset's starting model (folder, hub name, tiny[:SEED[:STEPS]])")
    p.add_argument("--runner", default="subprocess", choices=["subprocess", "docker"],
                   help="subprocess: components as local processes; docker: each in its image (make images-local first)")
    p.add_argument("--pipeline", default="training", choices=["training", "evaluation"],
                   help="evaluation: the evaluation pipeline on --base-model and the preset's benchmarks "
                   "(eval.refine_rounds, --coder-model; cure_pipelines.local_eval)")
    p.add_argument("--coder-model", default="", help="evaluation pipeline: pairing, the coder that writes the programs")
    p.add_argument("--coder-engine", default="openai", choices=["hf", "vllm", "openai"],
                   help="evaluation pipeline: the coder's engine (openai: rollout.api_base_url)")
    p.add_argument("--seeds", type=int, nargs="+", help="evaluation pipeline: sampling seeds (default: the preset's noise seeds)")


def run(args: argparse.Namespace, cfg: CureConfig) -> int:
    if args.pipeline == "evaluation":
        from cure_pipelines.local_eval import run_local_eval

        run_local_eval(args.preset, args.out or f"runs/{args.preset}-evaluation", args.config, args.overrides,
                       args.base_model, args.coder_model, args.coder_engine, args.seeds, args.runner)
        return 0
    from cure_pipelines.local_run import run_local

    run_local(args.preset, args.out or f"runs/{args.preset}", args.config, args.overrides, args.rounds, args.eval_every,
              args.base_model, resume=args.resume, segment=args.segment, runner=args.runner, overwrite=args.overwrite)
    return 0
