from kfp import dsl
from kfp.dsl import Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def init_model(base_model: str, config: str, resume: bool, model: Output[Model], metrics: Output[Metrics]):
    """The model to evaluate: the experiment's latest checkpoint when ``resume``, else the base model."""
    from cure.segment import load_config
    from cure.stages import init_model as step

    cfg = load_config(config)
    out = step(base_model, model.path, cfg.pipeline.store_uri, cfg.pipeline.experiment, resume)
    metrics.log_metric("resumed", float(out["resumed"]))
    model.metadata["checkpoint"] = out["checkpoint"]


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def promote(config: str, plan: str, slot: int, workspace: str, metrics: Output[Metrics]):
    """Promote the slot's model to the store when its round is a save point or ends the run's segment."""
    from cure.segment import promote as step

    for k, v in step(config, plan, slot, workspace).items():
        metrics.log_metric(k, v)
