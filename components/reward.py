from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def reward(config: dict, round: int, rollouts: Input[Dataset], executions: Input[Dataset], rewards: Output[Dataset], metrics: Output[Metrics]):
    """CURE's rewards (coder: ground-truth pass rate; tester: Eq. 4), z-normalised per task."""
    from cure.steps import config_from_pipeline
    from cure.steps import reward as step

    out = step(rollouts.path, executions.path, config_from_pipeline(config), rewards.path, seed=round)
    for k, v in out.items():
        metrics.log_metric(k, float(v))
