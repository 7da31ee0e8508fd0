from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def execute(config: str, plan: str, slot: int, shards: int, workspace: str, rollouts: Output[Dataset],
            executions: Output[Dataset], metrics: Output[Metrics]):
    """Merged rollout shards -> pass tables: every program on every test (gVisor sandbox; a sandbox Job in a cluster)."""
    from cure.segment import execute as step

    for k, v in step(config, plan, slot, shards, workspace, rollouts.path, executions.path).items():
        metrics.log_metric(k, float(v))
