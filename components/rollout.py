from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("rollout"), install_kfp_package=False)
def rollout(config: str, plan: str, slot: int, shard: int, shards: int, tasks: Input[Dataset], workspace: str,
            metrics: Output[Metrics]):
    """k_code programs and k_test unit tests per task of this shard (vLLM on GPU, transformers on CPU)."""
    from cure.segment import rollout as step

    for k, v in step(config, plan, slot, shard, shards, tasks.path, workspace).items():
        metrics.log_metric(k, float(v))
