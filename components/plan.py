from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Model, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def plan_run(config: dict, total_rounds: int, segment: int) -> NamedTuple("Plan", [("config", str), ("plan", str), ("active", bool)]):
    """The run's config (every named parameter, checked) and its rounds, from the experiment's state in the store."""
    from collections import namedtuple

    from cure.segment import plan

    return namedtuple("Plan", ["config", "plan", "active"])(*plan(config, total_rounds, segment))


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def assemble_config(config: dict) -> str:
    """The evaluation's config (every named parameter, checked), as JSON text for the other tasks."""
    from cure.segment import assemble_config as step

    return step(config)


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def has_rounds(plan: str) -> bool:
    """Whether the run has rounds to train (the condition of the round slots)."""
    import json

    return bool(json.loads(plan)["active"])


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def is_eval_round(config: str, plan: str, slot: int) -> bool:
    """Whether the slot's round is an evaluation round (the condition of its evaluation pod)."""
    from cure.segment import is_eval_slot

    return is_eval_slot(config, plan, slot)


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def init_models(base_model: str, config: str, plan: str, workspace: str, metrics: Output[Metrics]):
    """The starting model (latest checkpoint or base model) and the KL reference, onto the run's workspace."""
    from cure.segment import init_models as step

    for k, v in step(base_model, config, plan, workspace).items():
        metrics.log_metric(k, v)


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def finish_run(config: str, plan: str, workspace: str, model: Output[Model], report: Output[HTML],
               report_md: Output[Markdown], metrics: Output[Metrics]):
    """The run's last model as a Model artifact (its store URI, not a copy), the experiment's report."""
    import json
    import os

    from cure.segment import MODEL_POINTER, finish

    for k, v in finish(config, plan, workspace, model.path, report.path, report_md.path).items():
        metrics.log_metric(k, v)
    pointer = os.path.join(model.path, MODEL_POINTER)
    if os.path.isfile(pointer):
        model.metadata["store_uri"] = json.load(open(pointer))["uri"]
