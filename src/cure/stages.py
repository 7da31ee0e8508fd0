"""The stage functions: one per stage of the pipeline, paths in and paths out, called alike by every component.

``prepare_data``, ``init_model``, ``rollout``, ``execute``, ``reward``, ``train``, ``evaluate`` and
``promote_checkpoint`` each read their inputs from files (the component's input artifacts), write their outputs
to files (its output artifacts) and return a small dict of numbers that the component logs as its ``Metrics``
artifact. They take the run's config as a :class:`cure.config.CureConfig` (:func:`config_from_pipeline` builds it
from the pipeline's nested dict of parameters). Where a stage's programs run is the execution backend's business
(:mod:`cure.backends`); how the training loop strings these stages into round slots is :mod:`cure.segment`'.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

from cure.backends import run_programs
from cure.config import CureConfig, _parse_value
from cure.data import RELEASED, prepare
from cure.evaluate import evaluate_benchmarks
from cure.execute import summarize_executions
from cure.metrics import summarize, tables_from_executions
from cure.model_settings import SETTINGS_FILE
from cure.quick_exit import on_success
from cure.report import write_report
from cure.reward_stage import write_rewards
from cure.rollout.registry import make_engine
from cure.rollout.stage import default_prompt_dir, policy_tokenizer, rollout_tasks
from cure.rollout.stage import summarize as summarize_rollouts
from cure.store import open_store
from cure.tasks import Task, load_tasks, read_jsonl, require_labeled, unlabeled, write_jsonl
from cure.tiny import tiny_model
from cure.train.launch import run_train

log = logging.getLogger("cure.stages")


def config_from_pipeline(values: dict[str, Any] | str) -> CureConfig:
    """The run's config from the pipeline's nested dict of parameters.

    KFP hands parameters inside a dict over as strings ("3.0", "true", "[[4, 4]]"), so string values are parsed as
    YAML before validation.
    """
    if isinstance(values, str):
        values = json.loads(values)

    def parse(section: str, field: str, v: Any) -> Any:
        info = getattr(CureConfig.model_fields.get(section), "annotation", None)
        info = getattr(info, "model_fields", {}).get(field)
        if isinstance(v, str) and info is not None and info.annotation is str:
            return v  # a text field keeps its text: "2" stays the CPU quantity "2", not the number 2
        return _parse_value(v) if isinstance(v, str) else v

    # an empty string is an unset parameter: the field keeps its default
    return CureConfig.model_validate({
        sec: {k: parse(sec, k, x) for k, x in fields.items() if x != ""} if isinstance(fields, dict) else fields
        for sec, fields in values.items()
    })


# --- data and models ------------------------------------------------------------------------------------


def prepare_data(spec: str, out_path: str) -> dict[str, Any]:
    """Tasks from a source spec: ``synthetic:SPLIT:N[:SEED]``, ``humaneval[:N]``, ``file:PATH``, ``hf:NAME[:SPLIT]``,
    or a released CURE dataset ``NAME[@OWNER/REPO[/FILE]][:N]`` (``codecontests_train``, ``codecontests``, ``livebench``,
    ...; ``@`` names another hub repository, and file in it, for the dataset)."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind == "synthetic":
        split = parts[0] if parts else "train"
        n = int(parts[1]) if len(parts) > 1 else 64
        seed = int(parts[2]) if len(parts) > 2 else 0
        tasks, bad = prepare("synthetic", split=split, n=n, seed=seed)
    elif kind == "humaneval":
        tasks, bad = prepare("humaneval", limit=int(parts[0]) if parts else None)
    elif kind == "file":
        tasks, bad = prepare("file", path=rest)
    elif kind == "hf":
        tasks, bad = prepare("hf", path=parts[0], split=parts[1] if len(parts) > 1 else "train")
    elif kind.partition("@")[0] in RELEASED:  # a dataset released with CURE, from the hub (cure.data.RELEASED)
        name, _, where = kind.partition("@")  # NAME@OWNER/REPO[/FILE]: the hub repository (and file) moved
        repo_parts = where.split("/") if where else []
        repo = "/".join(repo_parts[:2]) if where else None
        hub_file = "/".join(repo_parts[2:]) or None
        tasks, bad = prepare(name, limit=int(parts[0]) if parts else None, hub_repo=repo, hub_file=hub_file)
    else:
        raise ValueError(f"unknown data spec {spec!r}: use synthetic:SPLIT:N[:SEED], humaneval[:N], file:PATH, "
                         f"hf:NAME[:SPLIT] or a released dataset NAME[@OWNER/REPO[/FILE]][:N] ({', '.join(RELEASED)})")
    write_jsonl(out_path, tasks)
    return {"tasks": len(tasks), "bad_rows": len(bad), "unlabeled": len(unlabeled(tasks))}


def _copy_model(src: str | Path, dst: str | Path) -> None:
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


@on_success
def init_model(base_model: str, out_dir: str, store_uri: str = "", experiment: str = "", resume: bool = False) -> dict[str, Any]:
    """The starting policy: the experiment's latest checkpoint when ``resume`` and one exists, else ``base_model``.

    ``base_model`` is a model folder, ``tiny[:SEED[:STEPS]]`` (the offline tiny model: ``tiny:0`` is shipped with the package, others are built once and cached under ``$CURE_CACHE``), or a
    hub name (needs a network). The model is copied into ``out_dir`` (the component's Model artifact).
    """
    if resume and store_uri:
        store = open_store(store_uri)
        latest = store.latest_checkpoint(experiment)
        if latest:
            store.fetch_checkpoint(experiment, latest, out_dir)
            log.info("resuming experiment %s from checkpoint %s", experiment, latest)
            return {"resumed": 1, "checkpoint": latest}
    if base_model.startswith("tiny"):
        _copy_model(tiny_model(base_model), out_dir)
    elif Path(base_model).is_dir():
        _copy_model(base_model, out_dir)
    else:
        from huggingface_hub import snapshot_download

        snapshot_download(base_model, local_dir=out_dir)
    return {"resumed": 0, "checkpoint": base_model}


def promote_checkpoint(model_dir: str, store_uri: str, experiment: str, name: str) -> dict[str, Any]:
    """Store a checkpoint under the experiment and move its ``latest`` pointer (only once the upload is complete)."""
    key = open_store(store_uri).commit_checkpoint(experiment, name, model_dir)
    return {"key": key}


# --- one training round ---------------------------------------------------------------------------------


def select_tasks(tasks: list[Task], n: int, seed: int) -> list[Task]:
    """The step's tasks: ``n`` drawn without replacement (all when fewer), seeded by the round."""
    if n >= len(tasks):
        return list(tasks)
    return random.Random(seed).sample(tasks, n)


def shard_slice(n: int, shard: int, shards: int) -> slice:
    """Contiguous share ``shard`` of ``shards`` of ``n`` items (sizes differ by at most one); concatenating the
    shards in order gives the items in order."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return slice(shard * n // shards, (shard + 1) * n // shards)


def shard_seed(round_seed: int, shard: int) -> int:
    """The sampling seed of one rollout shard: shard 0 keeps the round's seed (one shard = unsharded)."""
    return round_seed + 100_003 * shard


def rollout(model_dir: str, tasks_path: str, cfg: CureConfig, round_: int, out_path: str,
            shard: int = 0, shards: int = 1) -> dict[str, Any]:
    """Sample the round's tasks (or shard ``shard`` of ``shards`` of them); seeds derive from the global round."""
    all_tasks = load_tasks(tasks_path)[0]
    if cfg.reward.code_reward_source == "ground_truth":
        require_labeled(all_tasks, tasks_path, "ground-truth rewards need them: set reward.code_reward_source="
                        "generated_tests for label-free RL, or remove those tasks")
    tasks = select_tasks(all_tasks, cfg.data.tasks_per_step, seed=1000 * cfg.rollout.seed + round_)
    tasks = tasks[shard_slice(len(tasks), shard, shards)]
    if not tasks:
        write_jsonl(out_path, [])
        return {"tasks": 0, "seconds": 0.0}
    c = cfg.model_copy(deep=True)
    c.rollout.seed = shard_seed(1000 * cfg.rollout.seed + round_, shard)
    c.rollout.prompt_dir = c.rollout.prompt_dir or default_prompt_dir(model_dir)
    engine = make_engine(c.rollout.engine, model_dir, c.rollout)
    # Label-free RL with a frozen tester (reward.tester_model): it writes the tests, the policy the programs.
    tester = make_engine(cfg.reward.tester_engine or c.rollout.engine, cfg.reward.tester_model, c.rollout) \
        if cfg.reward.tester_model else engine
    t0 = time.monotonic()
    records = rollout_tasks(tasks, engine, tester, c, policy_tokenizer(engine, model_dir))
    for rec in records if cfg.reward.tester_model else []:
        rec["tester_model"] = cfg.reward.tester_model
    write_jsonl(out_path, records)
    stats = summarize_rollouts(records)
    stats["seconds"] = time.monotonic() - t0
    return {k: v for k, v in stats.items() if isinstance(v, (int, float))}


def execute(rollouts_path: str, cfg: CureConfig, out_path: str) -> dict[str, Any]:
    t0 = time.monotonic()
    records = run_programs(read_jsonl(rollouts_path), cfg)
    write_jsonl(out_path, records)
    m = summarize(tables_from_executions(records), cfg.eval.scales)
    m.update(summarize_executions(records))  # executions requested vs run (shared programs and inputs run once)
    m["seconds"] = time.monotonic() - t0
    return {f"train_{k}" if k != "seconds" else k: v for k, v in m.items()}


def reward(rollouts_path: str, executions_path: str, cfg: CureConfig, out_path: str, seed: int = 0) -> dict[str, Any]:
    return write_rewards(rollouts_path, executions_path, cfg, out_path, seed)


def train(model_dir: str, rewards_path: str, cfg: CureConfig, out_dir: str, ref_model_dir: str | None, round_: int,
          log_dir: str | None = None) -> dict[str, Any]:
    """One training step; ``out_dir`` receives a flat ``save_pretrained`` folder (with the trainer state and the
    model's prompt templates), loadable by the rollout engines as it is."""
    import tempfile

    records = read_jsonl(rewards_path)
    if not records:
        log.warning("round %d: no training examples (every task's rewards were all equal); the model is unchanged", round_)
        _copy_model(model_dir, out_dir)
        return {"examples": 0}
    ref = ref_model_dir if cfg.train.reference == "initial" else None
    with tempfile.TemporaryDirectory(prefix="cure-train-", dir=Path(out_dir).parent) as tmp:
        # With save_optimizer_state the AdamW moments travel with the model from round to round.
        resume = model_dir if cfg.train.save_optimizer_state else None
        metrics = run_train(model_dir, rewards_path, cfg, tmp, ref_model_dir=ref, log_dir=log_dir, resume_from=resume)
        _copy_model(metrics["checkpoint"], out_dir)
    for extra in ("prompts", SETTINGS_FILE):  # how the model wants to be prompted travels with it
        src, dst = Path(model_dir) / extra, Path(out_dir) / extra
        if src.exists() and not dst.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    metrics["examples"] = len(records)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# --- evaluation and history -----------------------------------------------------------------------------


@on_success
def evaluate(
    model_dir: str,
    benchmark_paths: dict[str, str],
    cfg: CureConfig,
    round_: int,
    seeds: list[int],
    history_in: str | None,
    history_out: str,
    report_dir: str,
    store_uri: str = "",
    experiment: str = "",
    run_name: str = "",
) -> dict[str, Any]:
    """Evaluate, append to the run's history, rewrite the report; also saves the history to the store."""
    benchmarks = {name: load_tasks(p)[0] for name, p in benchmark_paths.items()}
    entry = evaluate_benchmarks(model_dir, benchmarks, cfg, round_, seeds, out_dir=Path(report_dir) / f"round-{round_:03d}")
    history = json.loads(Path(history_in).read_text()) if history_in else []
    history.append(entry)
    Path(history_out).parent.mkdir(parents=True, exist_ok=True)
    Path(history_out).write_text(json.dumps(history, indent=2))
    noise = history[0].get("noise", {}).get(history[0].get("primary_benchmark", ""), None)
    write_report(history, report_dir, title=f"CURE training run {run_name or experiment}".strip(), noise=noise)
    if store_uri:
        open_store(store_uri).put_json(f"{experiment}/runs/{run_name or 'run'}/history.json", history)
    primary = entry["benchmarks"][entry["primary_benchmark"]]
    return {k: v for k, v in primary.items() if isinstance(v, (int, float))}
