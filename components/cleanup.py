from kfp import dsl

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def cleanup_run(run_id: str, workflow: str, namespaces: list):
    """Exit handler: delete the run's sandbox Jobs, PyTorchJobs, TrainJobs and its workspace PVC."""
    from cure.sandbox.k8s import cleanup_after_run

    cleanup_after_run(run_id, workflow, [str(n) for n in namespaces])
