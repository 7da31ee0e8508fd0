from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def prepare_data(spec: str, tasks: Output[Dataset], metrics: Output[Metrics]):
    """Tasks from a source spec (synthetic:SPLIT:N[:SEED], humaneval[:N], file:PATH, hf:NAME[:SPLIT], or a released CURE dataset NAME[:N])."""
    from cure.stages import prepare_data as step

    for k, v in step(spec, tasks.path).items():
        metrics.log_metric(k, float(v))


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def prepare_benchmarks(specs: list, benchmarks: Output[Dataset], metrics: Output[Metrics]):
    """Evaluation benchmarks: a folder with NAME.jsonl per ``NAME=SPEC`` item."""
    import os

    from cure.stages import prepare_data as step

    os.makedirs(benchmarks.path, exist_ok=True)
    for item in specs:
        name, _, spec = str(item).partition("=")
        out = step(spec, os.path.join(benchmarks.path, name + ".jsonl"))
        metrics.log_metric(name + "_tasks", float(out["tasks"]))
