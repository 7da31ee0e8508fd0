from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def execute(config: str, plan: str, slot: int, shards: int, workspace: str, rollouts: Output[Dataset],
            executions: Output[Dataset], rewards: Output[Dataset], metrics: Output[Metrics]):
    """Merged rollout shards -> pass tables (gVisor sandbox; a sandbox Job in a cluster) -> CURE rewards."""
    from cure.rounds import execute_and_reward as step

    for k, v in step(config, plan, slot, shards, workspace, rollouts.path, executions.path, rewards.path).items():
        metrics.log_metric(k, float(v))
