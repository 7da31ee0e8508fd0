from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("rollout"), install_kfp_package=False)
def rollout(config: dict, round: int, model: Input[Model], tasks: Input[Dataset], rollouts: Output[Dataset], metrics: Output[Metrics]):
    """Sample k_code programs and k_test unit tests per task (vLLM on GPU, transformers on CPU)."""
    import logging

    from cure.steps import config_from_pipeline
    from cure.steps import rollout as step

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("cure").info("round %d: rollout", round)
    out = step(model.path, tasks.path, config_from_pipeline(config), round, rollouts.path)
    for k, v in out.items():
        metrics.log_metric(k, float(v))
