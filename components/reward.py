from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def reward(config: str, plan: str, slot: int, workspace: str, rollouts: Input[Dataset], executions: Input[Dataset],
           rewards: Output[Dataset], metrics: Output[Metrics]):
    """CURE rewards from the pass tables: coder (ground-truth pass rate), tester (Eq. 4), z-normalised per task."""
    from cure.segment import reward as step

    for k, v in step(config, plan, slot, workspace, rollouts.path, executions.path, rewards.path).items():
        metrics.log_metric(k, float(v))
