from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def train(config: str, plan: str, slot: int, workspace: str, rewards: Input[Dataset], metrics: Output[Metrics],
          tensorboard: Output[Artifact]):
    """One policy-gradient step on the workspace's model; logs the round's metrics of every stage."""
    from cure.segment import train as step

    for k, v in step(config, plan, slot, workspace, rewards.path, tensorboard.path).items():
        metrics.log_metric(k, v)
