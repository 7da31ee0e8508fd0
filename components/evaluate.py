
from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("rollout"), install_kfp_package=False)
def evaluate(
    config: str,
    round: int,
    seeds: list,
    model: Input[Model],
    benchmarks: Input[Dataset],
    run_name: str,
    history: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[HTML],
    report_md: Output[Markdown],
    history_in: Input[Dataset] | None = None,
):
    """Code / unit-test accuracy, p01/p00, Best-of-N on each benchmark; appends to the history and the report."""
    import glob
    import logging
    import os
    import shutil

    from cure.segment import load_config
    from cure.stages import evaluate as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cure").info("round %d: evaluate", round)
    paths = {os.path.basename(p)[: -len(".jsonl")]: p for p in sorted(glob.glob(os.path.join(benchmarks.path, "*.jsonl")))}
    report_dir = os.path.join(os.path.dirname(history.path), "report_files")
    cfg = load_config(config)
    out = step(
        model.path, paths, cfg, round, [int(float(s)) for s in seeds], history_in.path if history_in is not None else None,
        history.path, report_dir, cfg.pipeline.store_uri, cfg.pipeline.experiment, run_name,
    )
    for k, v in out.items():
        metrics.log_metric(k, float(v))
    shutil.copyfile(os.path.join(report_dir, "report.html"), report.path)
    shutil.copyfile(os.path.join(report_dir, "report.md"), report_md.path)


@dsl.component(base_image=image_for("rollout"), install_kfp_package=False)
def evaluate_round(config: str, plan: str, slot: int, seeds: list, benchmarks: Input[Dataset], workspace: str,
                   run_name: str, metrics: Output[Metrics], report: Output[HTML], report_md: Output[Markdown]):
    """On an evaluation round: code / unit-test accuracy, p01/p00, Best-of-N; the experiment's history and report."""
    from cure.segment import evaluate_component as step

    for k, v in step(config, plan, slot, seeds, benchmarks.path, workspace, run_name, report.path, report_md.path).items():
        metrics.log_metric(k, v)
