"""``cure compile``: the pipelines as YAML for the Kubeflow UI.

KFP embeds each component's code in the YAML, so the pods need only the ``cure`` library of their image.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cure.config import CureConfig

from .training import DEFAULT_SEGMENT, ClusterOptions, build_eval_pipeline, build_training_pipeline

# k8s.io/apimachinery/pkg/api/resource/quantity.go, the grammar of a Quantity:
#   <quantity> ::= <signedNumber><suffix>;  <number> ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
#   <suffix> ::= <binarySI> (Ki Mi Gi Ti Pi Ei) | <decimalSI> (m, "", k M G T P E) | e<signedNumber> | E<signedNumber>
QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?")


def check_quantity(flag: str, value: str) -> str:
    """``value`` if it is a positive Kubernetes quantity (e.g. 16Gi, 500M), else a :class:`CliError` naming ``flag``."""
    from cure.validate import CliError

    if not QUANTITY.fullmatch(value) or value.startswith("-") or not re.search(r"[1-9]", value.split("e")[0].split("E")[0]):
        raise CliError(f"{flag} {value!r}: not a positive Kubernetes quantity (e.g. 16Gi, 300Gi, 500M)")
    return value


ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany")


def cluster_options(gpus: int = 1, nodes: int = 1, rollout_shards: int = 1, store_secret: str | None = None,
                    store_keys: list[str] | None = None, tolerations: list[str] | None = None,
                    node_selector: list[str] | None = None, timeouts: list[str] | None = None,
                    shm_size: str | None = None, workspace_size: str | None = None,
                    workspace_storage_class: str | None = None, workspace_access_mode: str | None = None,
                    rollout_gpus: int | None = None, train_gpus: int | None = None,
                    eval_gpus: int | None = None) -> ClusterOptions:
    """:class:`ClusterOptions` from the ``cure compile`` flags (errors name the flag), with the
    cluster-only graph (evaluation pods on evaluation rounds only, the exit handler) turned on."""
    from cure.validate import CliError

    opts = ClusterOptions(gpus=gpus, nodes=nodes, rollout_shards=rollout_shards, rollout_gpus=rollout_gpus,
                                   train_gpus=train_gpus, eval_gpus=eval_gpus, eval_condition=True, exit_cleanup=True)
    if gpus < 0 or nodes < 1 or rollout_shards < 1:
        raise CliError(f"--gpus must be >= 0 (got {gpus}), --nodes and --rollout-shards >= 1 (got {nodes}, {rollout_shards})")
    for flag, value in (("--rollout-gpus", rollout_gpus), ("--train-gpus", train_gpus), ("--eval-gpus", eval_gpus)):
        if value is not None and value < 0:
            raise CliError(f"{flag} must be >= 0 (got {value})")
    if store_secret is not None:
        opts.store_secret = store_secret
    if store_keys:
        opts.store_keys = {}
        for item in store_keys:
            key, _, env = item.partition(":")
            opts.store_keys[key] = env or key
    if tolerations:
        opts.tolerations = [parse_toleration(item) for item in tolerations]
    for item in node_selector or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--node-selector {item!r}: expected LABEL=VALUE, e.g. nvidia.com/gpu.product=H100")
        opts.node_selector[key] = value
    for item in timeouts or []:
        stage, sep, seconds = item.partition("=")
        if not sep or stage not in opts.timeouts or not seconds.isdigit() or int(seconds) < 1:
            raise CliError(f"--timeout {item!r}: expected STAGE=SECONDS (>= 1) with STAGE one of {', '.join(opts.timeouts)}")
        opts.timeouts[stage] = int(seconds)
    if shm_size is not None:
        opts.shm_size = check_quantity("--shm-size", shm_size)
    if workspace_size is not None:
        opts.workspace_size = check_quantity("--workspace-size", workspace_size)
    if workspace_storage_class:
        opts.workspace_storage_class = workspace_storage_class
    if workspace_access_mode is not None:
        if workspace_access_mode not in ACCESS_MODES:
            raise CliError(f"--workspace-access-mode {workspace_access_mode!r}: expected one of {', '.join(ACCESS_MODES)}")
        opts.workspace_access_mode = workspace_access_mode
    return opts


def parse_toleration(text: str) -> dict[str, Any]:
    """``KEY[=VALUE][:EFFECT]`` -> add_toleration arguments (no value: operator Exists)."""
    head, _, effect = text.partition(":")
    key, sep, value = head.partition("=")
    if not key or (effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
        from cure.validate import CliError

        raise CliError(f"--toleration {text!r}: expected KEY[=VALUE][:NoSchedule|PreferNoSchedule|NoExecute], "
                         "e.g. nvidia.com/gpu:NoSchedule")
    out: dict[str, Any] = {"key": key, "operator": "Equal" if sep else "Exists"}
    if sep:
        out["value"] = value
    if effect:
        out["effect"] = effect
    return out


def cluster_config(cfg: CureConfig, opts: Any) -> CureConfig:
    """The compiled defaults that follow from the pods: the S3 store (a pod's disk does not outlive it), training
    processes per node and nodes. vLLM's tensor parallelism stays 0 (auto): the engine takes the largest size up to
    the pod's GPUs that the model's attention heads divide (4 for Qwen2.5-7B on 8 GPUs)."""
    cfg = cfg.model_copy(deep=True)
    if cfg.pipeline.store_uri == CureConfig().pipeline.store_uri:
        cfg.pipeline.store_uri = "s3://cure"
    gpus = max(1, opts.gpus if opts.train_gpus is None else opts.train_gpus)  # per node
    if cfg.train.nproc_per_node == CureConfig().train.nproc_per_node:
        cfg.train.nproc_per_node = gpus
    if cfg.train.nodes == CureConfig().train.nodes:
        cfg.train.nodes = opts.nodes
    return cfg


def compile_pipelines(out_dir: str | Path, cfg: CureConfig, rounds: int | None = None, eval_every: int | None = None,
                      save_every: int | None = None, gpus: int = 1, base_model: str | None = None,
                      train_data: str | None = None, eval_benchmarks: list[str] | None = None,
                      segment: int | None = None, cluster: Any = None) -> dict[str, Path]:
    """Write ``cure-training.yaml`` and ``cure-evaluation.yaml`` into ``out_dir``."""
    from kfp import compiler

    opts = cluster or cluster_options(gpus=gpus)
    cfg = cluster_config(cfg, opts)
    extra: dict[str, Any] = {}
    if base_model:
        extra["base_model"] = base_model
    if eval_benchmarks:
        extra["eval_benchmarks"] = tuple(eval_benchmarks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_p = build_training_pipeline(
        rounds, eval_every, save_every, segment=segment or DEFAULT_SEGMENT, cluster=opts, cfg=cfg, **extra,
        **({"train_data": train_data} if train_data else {}),
    )
    eval_p = build_eval_pipeline(cluster=opts, cfg=cfg, **extra)
    paths = {"training": out / "cure-training.yaml", "evaluation": out / "cure-evaluation.yaml"}
    compiler.Compiler().compile(train_p, str(paths["training"]))
    compiler.Compiler().compile(eval_p, str(paths["evaluation"]))
    for path in paths.values():
        write_shared(path)
    return paths


def shared_components(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compiled pipeline with each distinct component defined once.

    KFP's compiler writes a component, its executor (the container and the embedded code) and its Kubernetes
    platform config once per *task*: the round slots repeat ten identical copies of each. Tasks reference their
    component by name, so identical definitions (component, executor and platform config alike; sub-DAGs after
    their own tasks are shared) are merged into one and the references renamed, until nothing changes. Every
    task resolves to exactly what it resolved to before (tests/test_pipeline.py checks it).
    """
    import copy
    import json

    spec = copy.deepcopy(docs[0])
    platform = copy.deepcopy(docs[1]) if len(docs) > 1 else None
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    pexec = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    while True:
        seen: dict[str, str] = {}
        rename: dict[str, str] = {}
        for name, comp in spec["components"].items():
            label = comp.get("executorLabel")
            body = {k: v for k, v in comp.items() if k != "executorLabel"}
            key = json.dumps([body, executors.get(label), pexec.get(label)], sort_keys=True)
            if key in seen:
                rename[name] = seen[key]
            else:
                seen[key] = name
        if not rename:
            break
        for name in rename:
            label = spec["components"].pop(name).get("executorLabel")
            if label:
                executors.pop(label, None)
                pexec.pop(label, None)
        for dag in [spec["root"].get("dag", {})] + [c.get("dag", {}) for c in spec["components"].values()]:
            for task in dag.get("tasks", {}).values():
                ref = task["componentRef"]
                ref["name"] = rename.get(ref["name"], ref["name"])
    return [spec] + ([platform] if platform is not None else []) + list(docs[2:])


def write_shared(path: Path) -> None:
    """Rewrite a compiled pipeline file with :func:`shared_components`."""
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    path.write_text(yaml.safe_dump_all(shared_components(docs), sort_keys=True))
