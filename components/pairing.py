from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("rollout"), install_kfp_package=False)
def evaluate_pairing(
    config: str,
    seeds: list,
    model: Input[Model],
    benchmarks: Input[Dataset],
    coder_model: str,
    coder_engine: str,
    pairing: Output[Dataset],
    metrics: Output[Metrics],
    report_md: Output[Markdown],
):
    """Pairing: ``coder_model`` writes the programs, ``model`` (the tester) the tests; BoN vs the coder's own tests."""
    import glob
    import logging
    import os
    import shutil

    from cure.pairing import pairing_step
    from cure.segment import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    paths = {os.path.basename(p)[: -len(".jsonl")]: p for p in sorted(glob.glob(os.path.join(benchmarks.path, "*.jsonl")))}
    out = pairing_step(model.path, paths, load_config(config), [int(float(s)) for s in seeds],
                       coder_model, coder_engine, pairing.path)
    for k, v in out.items():
        metrics.log_metric(k, float(v))
    shutil.copyfile(os.path.join(pairing.path, "pairing.md"), report_md.path)
