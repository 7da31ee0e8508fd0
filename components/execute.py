from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def execute(config: dict, round: int, rollouts: Input[Dataset], executions: Output[Dataset], metrics: Output[Metrics]):
    """Run every program on every test in the gVisor sandbox (a sandbox Job in a cluster) -> pass tables."""
    import logging

    from cure.steps import config_from_pipeline
    from cure.steps import execute as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cure").info("round %d: execute", round)
    out = step(rollouts.path, config_from_pipeline(config), executions.path)
    for k, v in out.items():
        metrics.log_metric(k, float(v))
