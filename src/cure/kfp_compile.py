"""``cure compile`` and ``cure submit``: the pipelines as YAML for the Kubeflow UI, and runs on a KFP endpoint.

The pipeline definitions live in the repository's ``pipelines/`` and ``components/`` folders (compiled from a
checkout; the images only need the ``cure`` package, since KFP embeds each component's code in the YAML).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cure.config import CureConfig
from cure.data import PAPER_BENCHMARKS, TRAIN_DATA

REPO = Path(__file__).resolve().parents[2]


def import_pipelines() -> Any:
    """Import the repository's ``pipelines`` package (adds the checkout to ``sys.path``)."""
    if not (REPO / "pipelines" / "training.py").is_file():
        raise SystemExit(f"error: pipelines/ not found next to the package ({REPO}); run from a checkout of the repository")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import pipelines.training

    return pipelines.training


def compile_pipelines(out_dir: str | Path, cfg: CureConfig, rounds: int | None = None, eval_every: int | None = None,
                      save_every: int | None = None, gpus: int = 1, base_model: str | None = None,
                      train_data: str | None = None, eval_benchmarks: list[str] | None = None) -> dict[str, Path]:
    """Write ``cure-training.yaml`` and ``cure-evaluation.yaml`` into ``out_dir``."""
    from kfp import compiler

    training = import_pipelines()
    extra: dict[str, Any] = {}
    if base_model:
        extra["base_model"] = base_model
    if eval_benchmarks:
        extra["eval_benchmarks"] = tuple(eval_benchmarks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_p = training.build_training_pipeline(
        rounds, eval_every, save_every, gpus=gpus, cfg=cfg, **extra, **({"train_data": train_data} if train_data else {})
    )
    eval_p = training.build_eval_pipeline(gpus=gpus, cfg=cfg, **extra)
    paths = {"training": out / "cure-training.yaml", "evaluation": out / "cure-evaluation.yaml"}
    compiler.Compiler().compile(train_p, str(paths["training"]))
    compiler.Compiler().compile(eval_p, str(paths["evaluation"]))
    return paths


def configure_parser_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="build/pipelines", help="output folder for the pipeline YAML files")
    p.add_argument("--rounds", type=int, help="training rounds (compile time: the loop is unrolled); default pipeline.rounds")
    p.add_argument("--eval-every", type=int, help="default pipeline.eval_every")
    p.add_argument("--save-every", type=int, help="default pipeline.save_every")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per rollout/train/evaluate pod (0: CPU only)")
    p.add_argument("--base-model", help="default base_model parameter")
    p.add_argument("--train-data", help=f"default train_data parameter (default: {TRAIN_DATA}, the reference's training set)")
    p.add_argument("--eval-benchmarks", nargs="+", help=f"default eval_benchmarks parameter, NAME=SPEC each (default: the paper's five: {' '.join(PAPER_BENCHMARKS)})")


def run_cli_compile(args: argparse.Namespace, cfg: CureConfig) -> int:
    paths = compile_pipelines(args.out, cfg, args.rounds, args.eval_every, args.save_every, args.gpus,
                              args.base_model, args.train_data, args.eval_benchmarks)
    for name, path in paths.items():
        print(f"{name}: {path}")
    print("upload in the Kubeflow UI (Pipelines > Upload pipeline), or: "
          f"kfp pipeline create -p cure-training {paths['training']}")
    return 0


def configure_parser_submit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow:80")
    p.add_argument("--package", default="build/pipelines/cure-training.yaml", help="compiled pipeline YAML")
    p.add_argument("--experiment-name", default="cure", help="KFP experiment")
    p.add_argument("--run-name", help="run name (default: derived by KFP)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter (repeatable)")
    p.add_argument("--recurring", metavar="CRON", help="create a recurring run with this cron schedule instead (max concurrency 1)")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")


def _params(items: list[str]) -> dict[str, Any]:
    from cure.config import _parse_value

    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --param {item!r}: expected NAME=VALUE")
        out[k] = _parse_value(v)
    return out


def run_cli_submit(args: argparse.Namespace, cfg: CureConfig) -> int:
    import kfp

    client = kfp.Client(host=args.host, namespace=args.namespace)
    params = _params(args.param)
    experiment = client.create_experiment(args.experiment_name, namespace=args.namespace)
    if args.recurring:
        job = client.create_recurring_run(
            experiment_id=experiment.experiment_id, job_name=args.run_name or "cure-recurring",
            cron_expression=args.recurring, max_concurrency=1, pipeline_package_path=args.package, params=params,
            no_catchup=True,
        )
        print(f"recurring run {job.recurring_run_id} created (cron {args.recurring}, max concurrency 1)")
        return 0
    run = client.create_run_from_pipeline_package(
        args.package, arguments=params, run_name=args.run_name, experiment_name=args.experiment_name, namespace=args.namespace
    )
    print(f"run {run.run_id} submitted")
    return 0
