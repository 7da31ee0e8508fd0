"""The compiled pipelines: a fixed-size graph, its platform spec (credentials, deadlines, /dev/shm, scheduling),
the rollout shards, resources and retries, loaded back with the KFP SDK."""

from __future__ import annotations

import re

import pytest
import yaml

from cure.cli import main
from cure.config import CureConfig
from cure.kfp_compile import import_pipelines

SEGMENT = 10  # the default
# The outside check's command, plus scheduling options.
CONTRACT = ["--rounds", "4", "--gpus", "8", "--rollout-shards", "4"]
SCHEDULING = ["--toleration", "nvidia.com/gpu:NoSchedule", "--node-selector", "nvidia.com/gpu.product=H100"]
STORE_TASKS = ("plan-run", "init-models", "execute", "train", "evaluate-round", "promote", "finish-run")
GPU_TASKS = ("rollout", "train", "evaluate-round")


def _load(path):
    spec, *rest = yaml.safe_load_all(path.read_text())
    return spec, (rest[0]["platforms"]["kubernetes"] if rest else {})


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled")
    assert main(["compile", "--out", str(out), *CONTRACT, *SCHEDULING]) == 0
    return out, *_load(out / "cure-training.yaml")


def _all_tasks(spec):
    """(dag task name, task) over the root and every sub-DAG (condition, ParallelFor)."""
    out = list(spec["root"]["dag"]["tasks"].items())
    for comp in spec["components"].values():
        out += list(comp.get("dag", {}).get("tasks", {}).items())
    return out


def _executor(spec, task):
    return spec["components"][task["componentRef"]["name"]].get("executorLabel")


def _stage(executor: str) -> str:
    return re.sub(r"^exec-|-\d+$", "", executor)


def test_size_does_not_depend_on_rounds(tmp_path):
    sizes = {}
    for rounds in (12, 120):
        assert main(["compile", "--out", str(tmp_path / str(rounds)), "--rounds", str(rounds)]) == 0
        sizes[rounds] = (tmp_path / str(rounds) / "cure-training.yaml").stat().st_size
        spec, _ = _load(tmp_path / str(rounds) / "cure-training.yaml")
        assert spec["root"]["inputDefinitions"]["parameters"]["total_rounds"]["defaultValue"] == rounds
    assert max(sizes.values()) <= 256 * 1024, sizes
    assert abs(sizes[120] - sizes[12]) <= 0.1 * sizes[12], sizes


def test_yaml_loads_back_with_kfp_sdk(compiled):
    from kfp import components

    out, _, _ = compiled
    for name in ("cure-training.yaml", "cure-evaluation.yaml"):
        comp = components.load_component_from_file(str(out / name))
        assert comp.pipeline_spec is not None
        assert "eval__k_code" in comp.component_spec.inputs
    assert "total_rounds" in components.load_component_from_file(str(out / "cure-training.yaml")).component_spec.inputs


def test_a_run_is_a_segment_of_guarded_round_slots(compiled):
    _, spec, platform = compiled
    names = {t["taskInfo"]["name"] for _, t in _all_tasks(spec)}
    for slot in range(1, SEGMENT + 1):
        for stage in ("rollout shard", "execute + reward", "train", "evaluate", "promote"):
            assert f"slot {slot}: {stage}" in names, (slot, stage)
    assert "slot 0: evaluate" in names and f"slot {SEGMENT + 1}: train" not in names
    # the slots run only when the plan says there are rounds left (a run after the total does nothing)
    cond = spec["root"]["dag"]["tasks"]["condition-1"]
    assert "has-rounds-Output" in cond["triggerPolicy"]["condition"]
    # models move on the run's workspace (a PVC), passed as a path
    assert platform["pipelineConfig"]["workspace"]["size"] == "300Gi"
    by_name = dict(_all_tasks(spec))
    train2 = by_name["train-2"]
    assert train2["inputs"]["parameters"]["workspace"]["runtimeValue"]["constant"] == "{{$.workspace_path}}"
    assert "model" not in train2["inputs"].get("artifacts", {})
    assert set(train2["dependentTasks"]) >= {"execute-2", "evaluate-round-2", "promote"}


def test_rollout_shards_are_a_parallel_for(compiled):
    _, spec, _ = compiled
    loops = [t for _, t in _all_tasks(spec) if "parameterIterator" in t]
    assert len(loops) == SEGMENT
    for loop in loops:
        assert yaml.safe_load(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2, 3]
    shard_tasks = [t for _, t in _all_tasks(spec) if t["taskInfo"]["name"].endswith("rollout shard")]
    assert all(t["inputs"]["parameters"]["shards"]["runtimeValue"]["constant"] == 4 for t in shard_tasks)
    assert all("componentInputParameter" in t["inputs"]["parameters"]["shard"] for t in shard_tasks)


def test_platform_spec_credentials_deadlines_shm_scheduling(compiled):
    _, spec, platform = compiled
    executors = platform["deploymentSpec"]["executors"]
    used = {_executor(spec, t) for _, t in _all_tasks(spec)} - {None}
    for ex in used:
        conf = executors.get(ex, {})
        stage = _stage(ex)
        assert int(conf.get("activeDeadlineSeconds", 0)) > 0, f"{ex} has no timeout"
        secrets = conf.get("secretAsEnv", [])
        if stage in STORE_TASKS:
            assert secrets and secrets[0]["secretName"] == "cure-minio", f"{ex} gets no store credentials"
            envs = {m["envVar"] for m in secrets[0]["keyToEnv"]}
            assert envs == {"CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY", "CURE_S3_SECRET_KEY"}
        if stage in GPU_TASKS:
            shm = conf["emptyDirMounts"][0]
            assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
            assert conf["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            assert conf["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "H100"}
        else:
            assert "tolerations" not in conf and "emptyDirMounts" not in conf


def test_no_scheduling_unless_asked(tmp_path):
    assert main(["compile", "--out", str(tmp_path)]) == 0
    _, platform = _load(tmp_path / "cure-training.yaml")
    for conf in platform["deploymentSpec"]["executors"].values():
        assert "tolerations" not in conf and "nodeSelector" not in conf


def test_resources_caching_and_retries(compiled):
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    for _, task in _all_tasks(spec):
        ex = _executor(spec, task)
        if ex is None:
            continue
        res = executors[ex]["container"].get("resources", {})
        stage = _stage(ex)
        assert not task.get("cachingOptions", {}).get("enableCache", False), f"{ex} must not be cached"
        if stage in GPU_TASKS:
            assert res["accelerator"]["resourceType"] == "nvidia.com/gpu" and res["accelerator"]["resourceCount"] == "8"
        else:
            assert "accelerator" not in res
        # train: one retry (a preempted node); a real error fails twice and stops
        assert task["retryPolicy"]["maxRetryCount"] == (1 if stage == "train" else 2), ex


def test_every_config_field_is_a_pipeline_parameter(compiled):
    from pipelines.params import COMPILE_TIME

    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    cfg = CureConfig()
    for section in CureConfig.model_fields:
        for field in type(getattr(cfg, section)).model_fields:
            if f"{section}.{field}" in COMPILE_TIME:
                continue
            assert f"{section}__{field}" in params, f"{section}.{field} missing"
    assert params["train__learning_rate"]["defaultValue"] == 1e-6
    assert "AdamW learning rate" in params["train__learning_rate"]["description"]
    # defaults that follow from the pods: the S3 store, vLLM TP and torchrun over the pod's GPUs
    assert params["pipeline__store_uri"]["defaultValue"] == "s3://cure"
    assert params["rollout__tensor_parallel_size"]["defaultValue"] == 0  # auto: the pod's GPUs the model divides over
    assert params["train__nproc_per_node"]["defaultValue"] == 8 and params["train__nodes"]["defaultValue"] == 1
    assert params["total_rounds"]["defaultValue"] == 4


def test_only_the_plan_task_takes_the_named_parameters(compiled):
    _, spec, _ = compiled
    for name, task in _all_tasks(spec):
        params = task.get("inputs", {}).get("parameters", {})
        if name == "plan-run":
            assert "config" in params  # the one task that gets every hyperparameter, by name
        elif "config" in params:
            assert params["config"] == {"componentInputParameter": "pipelinechannel--plan-run-config"}, name
            assert len(params) <= 8, f"{name} takes {len(params)} parameters"


def test_pipeline_config_round_trip():
    from cure.steps import config_from_pipeline
    from pipelines.params import config_dict, config_parameters

    import_pipelines()
    # KFP hands dict members over as strings; the config parses them back.
    as_strings = {"rollout__k_code": "4.0", "train__learning_rate": "0.0003", "eval__scales": "[[2, 2]]",
                  "execute__isolation": "none", "reward__post_stage": "true", "rollout__prompt_dir": ""}
    cfg = config_from_pipeline(config_dict(as_strings))
    assert cfg.rollout.k_code == 4 and cfg.train.learning_rate == 3e-4 and cfg.eval.scales == [(2, 2)]
    assert cfg.reward.post_stage is True and cfg.rollout.prompt_dir is None
    # Text fields keep their text even when it reads as a number (Kubernetes quantities).
    cfg = config_from_pipeline(config_dict({"execute__pod_cpu": "2", "train__node_cpu": "16", "train__node_memory": "1e3"}))
    assert (cfg.execute.pod_cpu, cfg.train.node_cpu, cfg.train.node_memory) == ("2", "16", "1e3")
    # The default config survives the trip through the pipeline's parameters.
    defaults = {name: default for name, _, _, _, default, _ in config_parameters()}
    assert config_from_pipeline(config_dict({k: str(v) if not isinstance(v, str) else v for k, v in defaults.items()})) == CureConfig()


def test_compile_option_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--toleration"):
        main(["compile", "--out", str(tmp_path), "--toleration", "gpu:Sometimes"])
    with pytest.raises(SystemExit, match="--timeout"):
        main(["compile", "--out", str(tmp_path), "--timeout", "bake=10"])


def test_every_component_image_is_built_by_a_dockerfile(compiled):
    from pathlib import Path

    from cure.images import FAMILIES, image_for

    _, spec, _ = compiled
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    by_image = {image_for(f): f for f in FAMILIES}
    repo = Path(__file__).resolve().parents[1]
    for image in images:
        assert image in by_image, f"{image} is not one of the project's images {sorted(by_image)}"
        assert (repo / "images" / by_image[image] / "Dockerfile").is_file()
