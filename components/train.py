from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def train(config: dict, round: int, model: Input[Model], reference: Input[Model], rewards: Input[Dataset], new_model: Output[Model], metrics: Output[Metrics]):
    """One policy-gradient step (reward as advantage, KL to the reference) -> the next checkpoint."""
    import logging
    import os

    from cure.steps import config_from_pipeline
    from cure.steps import train as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cure").info("round %d: train", round)
    log_dir = os.path.join(os.path.dirname(metrics.path), "tensorboard")
    out = step(model.path, rewards.path, config_from_pipeline(config), new_model.path, reference.path, round, log_dir)
    for k, v in out.items():
        metrics.log_metric(k, float(v))
