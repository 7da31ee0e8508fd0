from kfp import dsl
from kfp.dsl import Input, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def init_model(base_model: str, store_uri: str, experiment: str, resume: bool, model: Output[Model], metrics: Output[Metrics]):
    """The starting policy: the experiment's latest checkpoint when resuming, else the base model."""
    from cure.steps import init_model as step

    out = step(base_model, model.path, store_uri, experiment, resume)
    metrics.log_metric("resumed", float(out["resumed"]))
    model.metadata["checkpoint"] = out["checkpoint"]


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def promote_checkpoint(model: Input[Model], store_uri: str, experiment: str, name: str) -> str:
    """Store the checkpoint in the experiment's store prefix and move its latest pointer."""
    from cure.steps import promote_checkpoint as step

    return step(model.path, store_uri, experiment, name)["key"]
