"""The CURE training pipeline and the evaluation-only pipeline (KFP v2).

A training run is a *segment* of round slots (compile option ``segment``, default 10), so the graph's size does not
depend on the number of rounds; ``total_rounds`` is a run-time parameter (default: the paper's 120) and a training
is a chain of runs of one experiment (``cure submit --until-done``, a recurring run, or ``cure run`` locally).

``plan-run`` (first task) assembles the named parameters into one config and reads the experiment's state in the
store: slot ``k`` trains global round ``latest + k`` and does nothing past ``min(latest + segment, total_rounds)``;
a run started after the total was reached skips everything and succeeds. Each slot is rollout (one task per
shard, a ``ParallelFor`` when ``rollout_shards > 1``) -> execute (the sandbox) -> reward -> train on the run's workspace, then
evaluate (on evaluation rounds) and promote (on save points and at the end of the segment). Models move between
tasks on the workspace; the store gets promoted checkpoints, the history, ``rounds.json`` and the report
(:mod:`cure.segment`, :mod:`cure.experiment`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cure_components import (
    assemble_config,
    cleanup_run,
    evaluate,
    evaluate_pairing,
    evaluate_round,
    execute,
    finish_run,
    has_rounds,
    init_model,
    init_models,
    is_eval_round,
    plan_run,
    prepare_benchmarks,
    prepare_data,
    promote,
    reward,
    rollout,
    train,
)
from kfp import dsl
from kfp import kubernetes as k8s
from kfp.dsl import Dataset, Input

from cure.config import CureConfig
from cure.data import PAPER_BENCHMARKS, TRAIN_DATA

from .params import config_dict, with_config_signature

DEFAULT_ACCELERATOR = "nvidia.com/gpu"
DEFAULT_SEGMENT = 10
DEFAULT_STORE = "s3://cure"
# The Secret the store reads its endpoint and keys from (manifests/minio/secret.yaml); key -> environment variable.
DEFAULT_STORE_SECRET = "cure-minio"
DEFAULT_STORE_KEYS = {"CURE_S3_ENDPOINT": "CURE_S3_ENDPOINT", "CURE_S3_ACCESS_KEY": "CURE_S3_ACCESS_KEY",
                      "CURE_S3_SECRET_KEY": "CURE_S3_SECRET_KEY"}
# Pod deadlines (activeDeadlineSeconds) per stage: generous for a 7B model, finite so that a hung vLLM or NCCL
# step fails the run instead of holding GPUs forever.
DEFAULT_TIMEOUTS = {"prepare": 3600, "plan": 900, "init": 7200, "rollout": 4 * 3600, "execute": 2 * 3600, "reward": 3600, "train": 6 * 3600, "evaluate": 4 * 3600, "promote": 7200, "finish": 7200}


@dataclass
class ClusterOptions:
    """What ``cure compile`` sets about pods: GPUs, scheduling, credentials, deadlines, the workspace."""

    gpus: int = 1
    nodes: int = 1
    accelerator: str = DEFAULT_ACCELERATOR
    rollout_shards: int = 1
    store_secret: str = DEFAULT_STORE_SECRET
    store_keys: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STORE_KEYS))
    tolerations: Sequence[dict[str, Any]] = ()
    node_selector: dict[str, str] = field(default_factory=dict)
    timeouts: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    shm_size: str = "16Gi"
    workspace_size: str = "300Gi"
    workspace_storage_class: str = ""
    # KFP >= 2.15 refuses a run whose workspace names no access mode (backend/src/v2/compiler/argocompiler/argo.go);
    # ReadWriteMany lets the tasks of a run land on any node.
    workspace_access_mode: str = "ReadWriteMany"
    # GPUs per pod of each stage (None: ``gpus``): vLLM's tensor parallelism divides the model's attention heads
    # (4 for Qwen2.5-7B), so a rollout pod wants fewer GPUs than a train pod.
    rollout_gpus: int | None = None
    train_gpus: int | None = None
    eval_gpus: int | None = None
    # Cluster-only graph (`cure compile` turns them on; kfp.local runs without them): evaluation pods only on
    # evaluation rounds (a check task and a condition per slot), and an exit handler that deletes what the run
    # left in the cluster (sandbox Jobs, PyTorchJobs, TrainJobs by the run label; the workspace PVC).
    eval_condition: bool = False
    exit_cleanup: bool = False

    def stage_gpus(self, stage: str) -> int:
        """GPUs of a pod of ``stage``: the train pod of a multi-node step only launches the job (0 GPUs)."""
        if stage == "train" and self.nodes > 1:
            return 0
        own = {"rollout": self.rollout_gpus, "train": self.train_gpus, "evaluate": self.eval_gpus}.get(stage)
        return self.gpus if own is None else own


def _platform(task: Any, opts: ClusterOptions, stage: str, store: bool = True, gpu: bool = False,
              retries: int = 2) -> Any:
    """Timeout, retries, store credentials, and for GPU stages resources, /dev/shm and scheduling."""
    k8s.set_timeout(task, int(opts.timeouts[stage]))
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="600s")
    if store and opts.store_secret:
        k8s.use_secret_as_env(task, opts.store_secret, dict(opts.store_keys))
        if "CURE_S3_REGION" not in opts.store_keys.values():  # the store's region, where the Secret has one
            k8s.use_secret_as_env(task, opts.store_secret, {"CURE_S3_REGION": "CURE_S3_REGION"}, optional=True)
    # The run's id (KFP labels every pod of a run pipeline/runid): the experiment lease's holder (a retried plan
    # task holds the same lease) and the label of the Jobs a stage creates, for the exit handler.
    k8s.use_field_path_as_env(task, "CURE_RUN_ID", "metadata.labels['pipeline/runid']")
    if stage in ("execute", "train", "evaluate"):
        # The sandbox Job's owner is this pod (cure.sandbox.k8s.launcher_pod), from the downward API.
        for env, path in (("CURE_POD_NAME", "metadata.name"), ("CURE_POD_NAMESPACE", "metadata.namespace"),
                          ("CURE_POD_UID", "metadata.uid")):
            k8s.use_field_path_as_env(task, env, path)
        task.set_env_variable("CURE_POD_DEADLINE_S", str(int(opts.timeouts[stage])))
    gpus = opts.stage_gpus(stage) if gpu else 0
    if gpu and not (stage == "train" and opts.nodes > 1):
        if gpus > 0:
            task.set_accelerator_type(opts.accelerator).set_accelerator_limit(gpus)
        k8s.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=opts.shm_size)
        for t in opts.tolerations:
            k8s.add_toleration(task, **t)
        for key, value in opts.node_selector.items():
            k8s.add_node_selector(task, key, value)
    return task.set_caching_options(False)


def run_fields(kw: dict[str, Any]) -> dict[str, Any]:
    """Pipeline inputs that are not config fields."""
    return {k: v for k, v in kw.items() if "__" not in k}


def build_training_pipeline(
    rounds: int | None = None,
    eval_every: int | None = None,
    save_every: int | None = None,
    *,
    segment: int = DEFAULT_SEGMENT,
    gpus: int = 1,
    accelerator: str = DEFAULT_ACCELERATOR,
    cluster: ClusterOptions | None = None,
    base_model: str = "Qwen/Qwen2.5-7B-Instruct",
    train_data: str = TRAIN_DATA,
    eval_benchmarks: tuple[str, ...] = PAPER_BENCHMARKS,
    cfg: CureConfig | None = None,
    name: str = "cure-training",
) -> Callable[..., Any]:
    """Build the training pipeline: ``segment`` round slots; ``rounds`` (the default of the ``total_rounds``
    parameter), ``eval_every`` and ``save_every`` default to the config's pipeline section and count global rounds."""
    cfg = (cfg or CureConfig()).model_copy(deep=True)
    opts = cluster or ClusterOptions(gpus=gpus, accelerator=accelerator)
    total = cfg.pipeline.rounds if rounds is None else rounds
    if eval_every is not None:
        cfg.pipeline.eval_every = eval_every
    if save_every is not None:
        cfg.pipeline.save_every = save_every
    if total < 0 or segment < 1 or opts.rollout_shards < 1:
        raise ValueError(f"rounds must be >= 0 (got {total}), segment and rollout_shards >= 1 (got {segment}, {opts.rollout_shards})")
    shards = opts.rollout_shards
    workspace = dsl.WORKSPACE_PATH_PLACEHOLDER

    def evaluate_task(**args: Any) -> Any:
        ev = evaluate_round(**args, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        return _platform(ev, opts, "evaluate", gpu=True).set_cpu_limit("8").set_memory_limit("64G")

    def eval_if_due(config, plan, slot, seeds, benchmarks, workspace):  # type: ignore[no-untyped-def]
        """The evaluation pod only on an evaluation round (a graph component, so the next slot can wait for it)."""
        due = _platform(is_eval_round(config=config, plan=plan, slot=slot), opts, "plan", store=False)
        with dsl.If(due.output == True, name="evaluation-round"):  # noqa: E712 (a KFP condition)
            evaluate_task(config=config, plan=plan, slot=slot, seeds=seeds, benchmarks=benchmarks, workspace=workspace)

    if opts.eval_condition:  # KFP traces a graph component when it is built: only when the graph uses it
        # Real types, not this module's postponed (string) annotations: KFP reads them to build the inputs.
        eval_if_due.__annotations__ = {"config": str, "plan": str, "slot": int, "seeds": list,
                                       "benchmarks": Input[Dataset], "workspace": str}
        evaluate_if_due = dsl.pipeline(name="evaluate-if-due")(eval_if_due)

    def pipeline_body(**kw: Any) -> None:
        if opts.exit_cleanup:
            # With the store (its Secret): a failed run frees the experiment's lease here, not 12 h later.
            cleanup = _platform(cleanup_run(
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, workflow=dsl.PIPELINE_JOB_RESOURCE_NAME_PLACEHOLDER,
                namespaces=[kw["execute__namespace"], kw["train__namespace"]], store_uri=kw["pipeline__store_uri"],
                experiment=kw["pipeline__experiment"]), opts, "plan")
            with dsl.ExitHandler(cleanup.set_display_name("clean up the run's Jobs and workspace"), name="run"):
                run_body(**kw)
        else:
            run_body(**kw)

    def run_body(**kw: Any) -> None:
        run = run_fields(kw)
        plan = _platform(plan_run(config=config_dict(kw), total_rounds=run["total_rounds"], segment=segment), opts, "plan")
        plan.set_display_name("plan run: config and rounds")
        config, plan_text = plan.outputs["config"], plan.outputs["plan"]
        # A single-output task for the condition: kfp.local resolves `<task>-Output`, not a named output.
        active = _platform(has_rounds(plan=plan_text), opts, "plan", store=False).set_display_name("rounds left?")
        with dsl.If(active.output == True, name="rounds-to-train"):  # noqa: E712 (a KFP condition)
            data = _platform(prepare_data(spec=run["train_data"]), opts, "prepare", store=False)
            data.set_display_name("prepare training tasks")
            benches = _platform(prepare_benchmarks(specs=run["eval_benchmarks"]), opts, "prepare", store=False)
            benches.set_display_name("prepare benchmarks")
            init = _platform(init_models(base_model=run["base_model"], config=config, plan=plan_text, workspace=workspace),
                             opts, "init")
            init.set_display_name("starting model and reference -> workspace")

            def evaluate_slot(slot: int, seeds: Any, after: list[Any]) -> Any:
                args = {"config": config, "plan": plan_text, "slot": slot, "seeds": seeds,
                        "benchmarks": benches.outputs["benchmarks"], "workspace": workspace}
                if opts.eval_condition and slot < segment:  # the segment's last slot: finish waits for it
                    ev = evaluate_if_due(**args)
                else:
                    ev = evaluate_task(**args)
                return ev.after(*after).set_display_name(f"slot {slot}: evaluate")

            def rollout_shard(slot: int, shard: Any, after: Any, label: str) -> Any:
                ro = rollout(config=config, plan=plan_text, slot=slot, shard=shard, shards=shards,
                             tasks=data.outputs["tasks"], workspace=workspace)
                _platform(ro.after(after), opts, "rollout", store=False, gpu=True).set_cpu_limit("8").set_memory_limit("64G")
                return ro.set_display_name(f"slot {slot}: {label}")

            ev = evaluate_slot(0, run["noise_seeds"], [init])
            prev_train, prev_promote = init, None
            for slot in range(1, segment + 1):
                if shards == 1:
                    ro = rollout_shard(slot, 0, prev_train, "rollout")
                else:
                    with dsl.ParallelFor(list(range(shards)), name=f"rollout-shards-{slot}") as shard:
                        ro = rollout_shard(slot, shard, prev_train, "rollout shard")
                ex = execute(config=config, plan=plan_text, slot=slot, shards=shards, workspace=workspace).after(ro)
                _platform(ex, opts, "execute").set_cpu_limit("2").set_memory_limit("4G")
                ex.set_display_name(f"slot {slot}: execute")
                rw = reward(config=config, plan=plan_text, slot=slot, workspace=workspace,
                            rollouts=ex.outputs["rollouts"], executions=ex.outputs["executions"])
                _platform(rw, opts, "reward", store=False).set_cpu_limit("1").set_memory_limit("4G")
                rw.set_display_name(f"slot {slot}: reward")
                tr = train(config=config, plan=plan_text, slot=slot, workspace=workspace, rewards=rw.outputs["rewards"])
                # One retry: a preempted node is worth one more attempt; a real error (OOM, bad config) fails again.
                tr.after(ev, *([prev_promote] if prev_promote is not None else []))
                _platform(tr, opts, "train", gpu=True, retries=1).set_cpu_limit("16").set_memory_limit("128G")
                tr.set_display_name(f"slot {slot}: train")
                ev = evaluate_slot(slot, [run["eval_seed"]], [tr, ev])
                pr = promote(config=config, plan=plan_text, slot=slot, workspace=workspace).after(tr)
                _platform(pr, opts, "promote").set_display_name(f"slot {slot}: promote")
                prev_train, prev_promote = tr, pr
            fin = finish_run(config=config, plan=plan_text, workspace=workspace).after(ev, prev_promote)
            _platform(fin, opts, "finish").set_display_name("final model and report")

    fixed = [
        ("base_model", str, base_model, "Starting model of a new experiment: a hub name, a folder, or tiny[:SEED] (the offline tiny model)."),
        ("train_data", str, train_data, "Training tasks: synthetic:SPLIT:N[:SEED], humaneval[:N], file:PATH, hf:NAME[:SPLIT] or a released CURE dataset NAME[:N]."),
        ("eval_benchmarks", list, list(eval_benchmarks), "Evaluation benchmarks, NAME=SPEC each; the first is the primary one."),
        ("total_rounds", int, total, "Rounds of the whole training (all runs of the experiment; paper: 120). "
         f"A run trains up to {segment} of them, continuing from the experiment's latest checkpoint."),
        ("eval_seed", int, 0, "Sampling seed of the evaluations after round 0."),
        ("noise_seeds", list, [0, 1], "Seeds of the round-0 evaluation; their spread is the evaluation noise in the report."),
    ]
    doc = (f"CURE training: up to {segment} rounds per run of rollout -> execute -> reward -> train, continuing the "
           "experiment in the store until total_rounds; evaluation and checkpoint intervals count global rounds.")
    body = with_config_signature(pipeline_body, fixed, cfg, doc)
    patch: dict[str, Any] = {"accessModes": [opts.workspace_access_mode]}
    if opts.workspace_storage_class:
        patch["storageClassName"] = opts.workspace_storage_class
    ws = dsl.WorkspaceConfig(size=opts.workspace_size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch))
    return dsl.pipeline(name=name, description=doc, pipeline_config=dsl.PipelineConfig(workspace=ws))(body)


def build_eval_pipeline(
    *,
    gpus: int = 1,
    accelerator: str = DEFAULT_ACCELERATOR,
    cluster: ClusterOptions | None = None,
    base_model: str = "Qwen/Qwen2.5-7B-Instruct",
    eval_benchmarks: tuple[str, ...] = PAPER_BENCHMARKS,
    cfg: CureConfig | None = None,
    name: str = "cure-evaluation",
    api_key_secret: str = "cure-api-key",
) -> Callable[..., Any]:
    """Evaluate one model (or an experiment's latest checkpoint) on the given benchmarks; with ``coder_model`` set,
    evaluate it as the tester paired with that coder (:mod:`cure.pairing`). An API coder's key comes from the
    Secret ``api_key_secret`` (key ``api_key``) as the environment variable ``rollout.api_key_env``."""
    cfg = cfg or CureConfig()
    opts = cluster or ClusterOptions(gpus=gpus, accelerator=accelerator)

    def pipeline_body(**kw: Any) -> None:
        if opts.exit_cleanup:  # the evaluation's sandbox Jobs, whatever ends the run (it has no workspace)
            cleanup = _platform(cleanup_run(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, workflow="",
                                            namespaces=[kw["execute__namespace"]]), opts, "plan", store=False)
            with dsl.ExitHandler(cleanup.set_display_name("clean up the run's Jobs"), name="run"):
                eval_body(**kw)
        else:
            eval_body(**kw)

    def eval_body(**kw: Any) -> None:
        run = run_fields(kw)
        # The first task assembles the named parameters into the config every other task takes (as plan-run does in
        # the training pipeline): the store and the experiment travel in it, in no other channel.
        conf = _platform(assemble_config(config=config_dict(kw)), opts, "plan", store=False)
        conf.set_display_name("config")
        config = conf.output
        benches = _platform(prepare_benchmarks(specs=run["eval_benchmarks"]), opts, "prepare", store=False)
        init = init_model(base_model=run["base_model"], config=config, resume=run["use_latest"])
        _platform(init, opts, "init")
        with dsl.If(run["coder_model"] == "", name="self-evaluation"):
            ev = evaluate(
                config=config, round=0, seeds=run["seeds"], model=init.outputs["model"], benchmarks=benches.outputs["benchmarks"],
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            _platform(ev, opts, "evaluate", gpu=True).set_cpu_limit("8").set_memory_limit("64G")
        with dsl.Else(name="pairing"):
            # Pairing: another coder (an API model: key from the Secret) writes the programs; the model the tests.
            pa = evaluate_pairing(config=config, seeds=run["seeds"], model=init.outputs["model"],
                                  benchmarks=benches.outputs["benchmarks"], coder_model=run["coder_model"],
                                  coder_engine=run["coder_engine"])
            # The store too: the sandbox runs through it (cure.sandbox.k8s writes each shard there).
            _platform(pa, opts, "evaluate", gpu=True).set_cpu_limit("8").set_memory_limit("64G")
            pa.set_display_name("pairing")
            k8s.use_secret_as_env(pa, secret_name=api_key_secret, secret_key_to_env={"api_key": cfg.rollout.api_key_env},
                                  optional=True)

    fixed = [
        ("base_model", str, base_model, "Model to evaluate: a hub name, a folder, or tiny[:SEED]."),
        ("eval_benchmarks", list, list(eval_benchmarks), "Benchmarks, NAME=SPEC each."),
        ("use_latest", bool, False, "Evaluate the experiment's latest checkpoint instead of base_model when one exists."),
        ("seeds", list, [0], "Sampling seeds; more than one measures evaluation noise."),
        ("coder_model", str, "", "Pairing: the coder that writes the programs (API model name, folder or hub name); "
         "empty = evaluate the model alone."),
        ("coder_engine", str, "openai", "Pairing: the coder's engine, hf, vllm or openai (base URL: rollout.api_base_url)."),
    ]
    doc = "CURE evaluation: one-shot code accuracy, unit-test accuracy, p01/p00 and Best-of-N."
    return dsl.pipeline(name=name, description=doc)(with_config_signature(pipeline_body, fixed, cfg, doc))
