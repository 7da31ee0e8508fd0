"""The compiled pipelines: a fixed-size graph, its platform spec (credentials, deadlines, /dev/shm, scheduling),
the rollout shards, resources and retries, loaded back with the KFP SDK."""

from __future__ import annotations

import re

import pytest
import yaml

from cure.config import CureConfig
from cure_cli import main

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


@pytest.mark.slow
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
        for stage in ("rollout shard", "execute", "reward", "train", "evaluate", "promote"):
            assert f"slot {slot}: {stage}" in names, (slot, stage)
    assert "slot 0: evaluate" in names and f"slot {SEGMENT + 1}: train" not in names
    # the slots run only when the plan says there are rounds left (a run after the total does nothing)
    [cond] = [t for _, t in _all_tasks(spec) if "has-rounds-Output" in t.get("triggerPolicy", {}).get("condition", "")]
    assert cond["componentRef"]["name"].startswith("comp-condition")
    # models move on the run's workspace (a PVC), passed as a path; KFP >= 2.15 needs its access mode
    assert platform["pipelineConfig"]["workspace"]["size"] == "300Gi"
    assert platform["pipelineConfig"]["workspace"]["kubernetes"]["pvcSpecPatch"] == {"accessModes": ["ReadWriteMany"]}
    by_name = dict(_all_tasks(spec))
    train2 = by_name["train-2"]
    assert train2["inputs"]["parameters"]["workspace"]["runtimeValue"]["constant"] == "{{$.workspace_path}}"
    assert "model" not in train2["inputs"].get("artifacts", {})
    assert set(train2["dependentTasks"]) >= {"reward-2", "evaluate-if-due-2", "promote"}
    # reward scoring is a task of its own: the execute task's tables in, the training examples out
    reward2 = by_name["reward-2"]
    assert {k: v["taskOutputArtifact"] for k, v in reward2["inputs"]["artifacts"].items()} == {
        "rollouts": {"outputArtifactKey": "rollouts", "producerTask": "execute-2"},
        "executions": {"outputArtifactKey": "executions", "producerTask": "execute-2"}}
    assert train2["inputs"]["artifacts"]["rewards"]["taskOutputArtifact"] == {
        "outputArtifactKey": "rewards", "producerTask": "reward-2"}


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


@pytest.mark.slow
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
    from cure_pipelines.params import COMPILE_TIME

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
        elif name in ("evaluate-round", "is-eval-round") and params["config"]["componentInputParameter"] in ("config", "pipelinechannel--config"):
            pass  # inside the evaluate-if-due graph: its own input, which gets the plan's config
        elif "config" in params:
            assert params["config"] == {"componentInputParameter": "pipelinechannel--plan-run-config"}, name
            assert len(params) <= 8, f"{name} takes {len(params)} parameters"


def test_pipeline_config_round_trip():
    from cure_pipelines.params import config_dict, config_parameters

    from cure.stages import config_from_pipeline

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


@pytest.mark.parametrize("flags, what", [
    (["--toleration", "gpu:Sometimes"], "--toleration"), (["--timeout", "bake=10"], "--timeout"),
    (["--shm-size", "lots"], "--shm-size 'lots'"), (["--workspace-size=-5Gi"], "--workspace-size"),
    (["--shm-size", "16GB"], "--shm-size"), (["--workspace-access-mode", "Shared"], "--workspace-access-mode"),
    (["--rollout-gpus", "-1"], "--rollout-gpus"),
])
def test_compile_option_errors(tmp_path, capsys, flags, what):
    """A bad flag: rc 2 and one line on stderr naming it; nothing is written (Kubernetes quantities follow
    k8s.io/apimachinery's grammar: 16GB is not one)."""
    out = tmp_path / "out"
    assert main(["compile", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and what in err[0], err
    assert not out.exists()


def test_compile_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    assert main(["compile", "--out", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "f").read_text() == "keep"


@pytest.mark.parametrize("good", ["16Gi", "500M", "1.5Gi", "2e9", ".5Ti", "128974848", "129e6", "123Mi"])
def test_quantities_kubernetes_accepts(good):
    from cure_pipelines.compile import check_quantity

    assert check_quantity("--shm-size", good) == good


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


# --- what a real cluster needs ---------------------------------------------------------------------------------


BUDGET = 256 * 1024  # bytes of a compiled pipeline (the Kubeflow UI upload, the run's stored spec)


def documented_compiles() -> list[tuple[str, list[str]]]:
    """Every `cure compile ...` command in a fenced code block of README.md and docs/*.md (continuations joined,
    comments dropped, a leading .venv/bin/ allowed): (source, argv after `cure`)."""
    import shlex
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = []
    for doc in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        for block in re.findall(r"```[^\n]*\n(.*?)```", doc.read_text(), re.DOTALL):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"^(\S*/)?cure ", "cure ", line.strip())
                if line.startswith("cure compile"):
                    argv = shlex.split(line, comments=True)[1:]
                    out.append((f"{doc.name}: {line[:80]}", argv))
    return out


@pytest.mark.slow
def test_every_documented_cluster_compile_fits_the_budget(tmp_path):
    commands = documented_compiles()
    assert commands, "no `cure compile` command found in README.md or docs/"
    for i, (source, argv) in enumerate(commands):
        if "--out" in argv:
            argv[argv.index("--out") + 1] = str(tmp_path / str(i))
        else:
            argv += ["--out", str(tmp_path / str(i))]
        assert main(argv) == 0, source
        for name in ("cure-training.yaml", "cure-evaluation.yaml"):
            size = (tmp_path / str(i) / name).stat().st_size
            assert size <= BUDGET, f"{source}: {name} is {size} bytes, over {BUDGET}"


def _resolved(spec, platform):
    """(task path, component, executor, platform config) of every container task, through every sub-DAG."""
    import json

    executors = spec["deploymentSpec"]["executors"]
    pexec = platform.get("deploymentSpec", {}).get("executors", {})
    out = []

    def walk(dag, path):
        for name, task in sorted(dag.get("tasks", {}).items()):
            comp = spec["components"][task["componentRef"]["name"]]
            task_key = json.dumps({k: v for k, v in task.items() if k != "componentRef"}, sort_keys=True)
            if "executorLabel" in comp:
                label = comp["executorLabel"]
                body = {k: v for k, v in comp.items() if k != "executorLabel"}
                out.append((path + name, task_key, json.dumps([body, executors[label], pexec.get(label)], sort_keys=True)))
            else:
                out.append((path + name, task_key, json.dumps({k: v for k, v in comp.items() if k != "dag"}, sort_keys=True)))
                walk(comp["dag"], path + name + "/")

    walk(spec["root"]["dag"], "")
    return out


@pytest.mark.slow
def test_shared_components_change_no_task(tmp_path):
    """Each distinct component is written once; every task still resolves to the same container, code and pod."""
    from cure_pipelines import training
    from cure_pipelines.compile import cluster_config, cluster_options, shared_components
    from kfp import compiler

    opts = cluster_options(gpus=8, rollout_shards=4)
    pipeline = training.build_training_pipeline(cluster=opts, cfg=cluster_config(CureConfig(), opts))
    compiler.Compiler().compile(pipeline, str(tmp_path / "raw.yaml"))
    raw = list(yaml.safe_load_all((tmp_path / "raw.yaml").read_text()))
    shared = shared_components(raw)
    assert len(shared[0]["deploymentSpec"]["executors"]) < len(raw[0]["deploymentSpec"]["executors"]) / 3
    before = _resolved(raw[0], raw[1]["platforms"]["kubernetes"])
    after = _resolved(shared[0], shared[1]["platforms"]["kubernetes"])
    assert before == after


@pytest.mark.slow
def test_gpus_per_stage_and_a_multinode_train_pod_without_gpus(tmp_path):
    assert main(["compile", "--out", str(tmp_path), "--gpus", "8", "--rollout-gpus", "4", "--eval-gpus", "2",
                 "--nodes", "2"]) == 0
    spec, platform = _load(tmp_path / "cure-training.yaml")
    executors = spec["deploymentSpec"]["executors"]
    gpus = {}
    for _, task in _all_tasks(spec):
        ex = _executor(spec, task)
        if ex is not None:
            acc = executors[ex]["container"].get("resources", {}).get("accelerator")
            gpus.setdefault(_stage(ex), set()).add(int(acc["resourceCount"]) if acc else 0)
    assert gpus["rollout"] == {4} and gpus["evaluate-round"] == {2}
    assert gpus["train"] == {0}, "the train pod only launches the PyTorchJob: its GPUs would idle"
    train_conf = platform["deploymentSpec"]["executors"][next(e for e in executors if _stage(e) == "train")]
    assert "emptyDirMounts" not in train_conf
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train__nproc_per_node"]["defaultValue"] == 8 and params["train__nodes"]["defaultValue"] == 2


def test_evaluation_pods_exist_only_on_evaluation_rounds(compiled):
    """Slots 0..segment-1 evaluate inside a condition on is-eval-round; the next slot's train waits for that graph."""
    import json

    from cure.segment import is_eval_slot

    _, spec, _ = compiled
    graph = spec["components"]["comp-evaluate-if-due"]["dag"]["tasks"]
    [cond] = [t for t in graph.values() if "triggerPolicy" in t]
    assert "is-eval-round-Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert [t["componentRef"]["name"] for t in inner.values()] == ["comp-evaluate-round"]
    guarded = [t for _, t in _all_tasks(spec) if t["componentRef"]["name"] == "comp-evaluate-if-due"]
    assert len(guarded) == SEGMENT  # slots 0..9; slot 10's evaluation is the one finish-run waits for
    cfg = CureConfig()
    cfg.pipeline.eval_every = 5
    plan = json.dumps({"active": True, "start": 1, "last": 10, "total": 120})
    due = [slot for slot in range(11) if is_eval_slot(cfg.model_dump_json(), plan, slot)]
    assert due == [0, 5, 10]


def test_exit_handler_cleans_up_the_run(compiled):
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    cleanup = tasks["cleanup-run"]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert cleanup["dependentTasks"] == ["exit-handler-1"]
    params = cleanup["inputs"]["parameters"]
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert params["workflow"]["runtimeValue"]["constant"] == "{{$.pipeline_job_resource_name}}"
    # the store's URI and experiment, and the store Secret: a failed run frees its lease (segment.release_after_run)
    assert params["store_uri"]["componentInputParameter"] == "pipeline__store_uri"
    assert params["experiment"]["componentInputParameter"] == "pipeline__experiment"


def test_launchers_know_their_pod_run_and_region(compiled):
    """Pods that create Jobs get their name, namespace, uid and run id from the downward API; the plan task the run
    id too (the experiment lease's holder: a retried plan must hold the lease its first attempt took); every store
    task the store's region when the Secret has one."""
    _, spec, platform = compiled
    for ex, conf in platform["deploymentSpec"]["executors"].items():
        stage = _stage(ex)
        fields = {f["name"]: f["fieldPath"] for f in conf.get("fieldPathAsEnv", [])}
        if stage in ("execute", "train", "evaluate-round"):
            assert fields == {"CURE_POD_NAME": "metadata.name", "CURE_POD_NAMESPACE": "metadata.namespace",
                              "CURE_POD_UID": "metadata.uid", "CURE_RUN_ID": "metadata.labels['pipeline/runid']"}, ex
        if stage == "plan-run":
            assert fields == {"CURE_RUN_ID": "metadata.labels['pipeline/runid']"}, ex
        if stage in STORE_TASKS:
            region = [s for s in conf["secretAsEnv"] if s["keyToEnv"][0]["envVar"] == "CURE_S3_REGION"]
            assert region and region[0]["optional"] is True, ex


@pytest.mark.slow
def test_evaluation_pipeline_pairing_gets_the_store(tmp_path):
    assert main(["compile", "--out", str(tmp_path)]) == 0
    _, platform = _load(tmp_path / "cure-evaluation.yaml")
    for ex, conf in platform["deploymentSpec"]["executors"].items():
        if _stage(ex) in ("evaluate", "evaluate-pairing"):
            assert any(s["secretName"] == "cure-minio" for s in conf["secretAsEnv"]), ex


def test_finish_records_the_models_store_uri_instead_of_copying_it(tmp_path):
    """The run's Model artifact is a pointer to its promoted checkpoint (a 7B copy per run would be ~15 GB in KFP's
    artifact store, never cleaned up)."""
    import json

    from cure import segment as loop
    from cure.experiment import checkpoint_name

    cfg = CureConfig()
    cfg.pipeline.store_uri = (tmp_path / "store").as_uri()
    cfg.pipeline.experiment = "exp"
    (tmp_path / "store").mkdir()
    workspace = tmp_path / "ws"
    model = loop.model_dir(str(workspace), 2)
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"\0" * 4096)
    plan = json.dumps({"experiment": "exp", "checkpoint": None, "start": 1, "last": 2, "total": 4, "active": True,
                       "fresh": True})
    out = tmp_path / "model-artifact"
    loop.finish(loop.config_json(cfg), plan, str(workspace), str(out), str(tmp_path / "r.html"),
                  str(tmp_path / "r.md"))
    assert [p.name for p in out.iterdir()] == [loop.MODEL_POINTER]
    pointer = json.loads((out / loop.MODEL_POINTER).read_text())
    assert pointer == {"uri": f"{cfg.pipeline.store_uri}/exp/checkpoints/{checkpoint_name(2)}", "round": 2}


@pytest.mark.slow
def test_evaluation_pipeline_cleans_up_its_sandbox_jobs(tmp_path):
    assert main(["compile", "--out", str(tmp_path)]) == 0
    spec, _ = _load(tmp_path / "cure-evaluation.yaml")
    cleanup = spec["root"]["dag"]["tasks"]["cleanup-run"]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert cleanup["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
