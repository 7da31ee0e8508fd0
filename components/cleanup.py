from kfp import dsl

from cure.images import image_for


@dsl.component(base_image=image_for("cpu"), install_kfp_package=False)
def cleanup_run(run_id: str, workflow: str, namespaces: list, store_uri: str = "", experiment: str = ""):
    """Exit handler: delete the run's sandbox Jobs, PyTorchJobs, TrainJobs and its workspace PVC; with a store, free
    the experiment's lease if this run still holds it (a run that failed), so the next run need not wait for it."""
    from cure.sandbox.k8s import cleanup_after_run
    from cure.segment import release_after_run

    cleanup_after_run(run_id, workflow, [str(n) for n in namespaces])
    if store_uri:
        release_after_run(store_uri, experiment, run_id)
