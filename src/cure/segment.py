"""The training loop's segment layer: a run trains a segment of round slots on a shared workspace.

Each function here is one task of the training pipeline: it reads the run's plan, finds which global round its
slot trains (or that it has nothing to do), and calls the stage function of :mod:`cure.stages` on that round's
paths in the workspace (evaluation: :func:`cure.evaluate.evaluate_benchmarks`, with the experiment's history
kept in the store).

A compiled training pipeline has a fixed number of round *slots* (``cure compile --segment``, default 10), not
one per round, so its size does not grow with the training. The first task (:func:`plan`) turns the named
pipeline parameters into one config and reads the experiment's state in the store (:mod:`cure.experiment`):
slot ``k`` (1-based) trains the global round ``start + k - 1``, and does nothing once that is past ``last`` =
``min(latest + segment, total_rounds)``. Evaluation and save intervals count global rounds.

Within a run, models stay on the run's workspace (a PVC in a cluster, a folder under ``kfp.local``)::

    <workspace>/models/round-NNNN/    the policy after global round NNNN (the starting model: round latest)
    <workspace>/reference/            the KL reference (train.reference=initial), loaded once per run
    <workspace>/rounds/round-NNNN/    rollout shards and each stage's metrics of that round

Only promoted checkpoints go to the store. Each function returns the numbers its component logs as ``Metrics``
(empty when its slot has nothing to do).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from cure import experiment as exp
from cure import stages
from cure.config import CureConfig
from cure.evaluate import evaluate_benchmarks
from cure.quick_exit import on_success
from cure.report import write_report
from cure.reward import raw_unit_test_rewards
from cure.store import StoreError
from cure.tasks import load_tasks, read_jsonl, write_jsonl

log = logging.getLogger("cure.segment")
STAGES = ("rollout", "execute", "reward", "train")


# --- the run's config and plan ------------------------------------------------------------------------------


def config_json(cfg: CureConfig) -> str:
    return cfg.model_dump_json()


def load_config(text: str) -> CureConfig:
    """The config a plan task assembled (typed JSON, not the pipeline's strings)."""
    return CureConfig.model_validate_json(text)


def assemble_config(values: dict[str, Any] | str) -> str:
    """The evaluation pipeline's first task: its named parameters assembled once, checked, into the config (typed
    JSON) that every other task takes, as :func:`plan` does for a training run."""
    setup_logging()
    return config_json(stages.config_from_pipeline(values))


def plan(values: dict[str, Any] | str, total_rounds: int, segment: int, run_id: str = "") -> tuple[str, str, bool]:
    """(config JSON, plan JSON, active) for the run: the named parameters assembled once, the rounds this run trains.

    The run takes the experiment's lease (:func:`cure.experiment.take_lease`) under ``run_id`` (default
    ``$CURE_RUN_ID``, else a fresh id): a second run of the same experiment stops here, before any work."""
    setup_logging()
    cfg = stages.config_from_pipeline(values)
    cfg.pipeline.rounds = int(total_rounds)
    exp.check_store_uri(cfg.pipeline.store_uri)
    store = exp.open_checked(cfg.pipeline.store_uri)
    run_id = run_id or os.environ.get("CURE_RUN_ID") or uuid.uuid4().hex
    exp.take_lease(store, cfg.pipeline.experiment, run_id, cfg.pipeline.lease_s)
    try:
        p = exp.plan_run(store, cfg.pipeline.experiment, int(total_rounds), int(segment), cfg.pipeline.eval_every)
    except BaseException:  # a retry of this task comes with another run id: leave the lease free for it
        exp.release_lease(store, cfg.pipeline.experiment, run_id)
        raise
    p["segment"] = int(segment)
    p["run_id"] = run_id
    if p["active"]:
        log.info("experiment %s: rounds %d..%d of %d (latest checkpoint: %s)", p["experiment"], p["start"],
                 p["last"], p["total"], p["checkpoint"] or "none, starting from the base model")
    else:  # no task of this run writes: the lease is free again at once (the last task, which releases it, is skipped)
        exp.release_lease(store, cfg.pipeline.experiment, run_id)
        log.info("experiment %s: all %d rounds are done (latest checkpoint %s); nothing to do",
                 p["experiment"], p["total"], p["checkpoint"])
    return config_json(cfg), json.dumps(p), bool(p["active"])


def release_after_run(store_uri: str, experiment: str, run_id: str = "") -> bool:
    """The training pipeline's exit handler: free the experiment's lease if this run still holds it.

    A run that ends well frees it in its last task (:func:`finish`); one that fails (a task out of retries, a
    deleted run) would keep it until it expires (``pipeline.lease_s``, 12 h by default), and every scheduled firing
    until then would stop at its plan task. The lease is this run's when its holder is ``$CURE_RUN_ID`` (the id the
    plan task took it under), else ``run_id``; a lease another run holds is left alone (a conditional write).
    True when released. A store that cannot be reached is logged with the command that frees the lease by hand."""
    setup_logging()
    run_id = os.environ.get("CURE_RUN_ID") or run_id
    if not store_uri or not run_id:
        return False
    try:
        store = exp.open_checked(store_uri)
        released = exp.release_lease(store, experiment, run_id)
    except StoreError as e:
        log.error("could not free experiment %s's lease in %s (%s): if this run held it, the next run waits until "
                  "it expires, or run `cure store unlock --store %s --experiment %s`", experiment, store_uri, e,
                  store_uri, experiment)
        return False
    log.info("experiment %s: %s", experiment,
             f"lease of run {run_id} freed" if released else f"no lease of run {run_id} to free")
    return released


def _plan(text: str | dict[str, Any]) -> dict[str, Any]:
    return json.loads(text) if isinstance(text, str) else dict(text)


def slot_round(plan_: dict[str, Any], slot: int) -> int | None:
    """The global round of a slot, or None when the slot has nothing to do in this run."""
    r = int(plan_["start"]) + int(slot) - 1
    return r if plan_["active"] and r <= int(plan_["last"]) else None


def _slot(config: str, plan_: str, slot: int) -> tuple[CureConfig, dict[str, Any], int | None]:
    """A slot task's start: logging, the run's config and plan, and the slot's global round (None: no round)."""
    setup_logging()
    p = _plan(plan_)
    return load_config(config), p, slot_round(p, slot)


def model_dir(workspace: str, round_: int) -> Path:
    return Path(workspace) / "models" / exp.checkpoint_name(round_)


def round_dir(workspace: str, round_: int) -> Path:
    d = Path(workspace) / "rounds" / exp.checkpoint_name(round_)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _stage_metrics(workspace: str, round_: int, stage: str, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    (round_dir(workspace, round_) / f"{stage}.json").write_text(json.dumps({"metrics": metrics, "seconds": seconds}))
    return metrics


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _log_stage(round_: int, stage: str) -> None:
    # The console parses this line (global round numbers).
    logging.getLogger("cure").info("round %d: %s", round_, stage)


# --- tasks --------------------------------------------------------------------------------------------------


@on_success
def init_models(base_model: str, config: str, plan_: str, workspace: str) -> dict[str, Any]:
    """Put the run's starting model (latest checkpoint, else the base model) and the reference on the workspace."""
    setup_logging()
    cfg, p = load_config(config), _plan(plan_)
    if not p["active"]:
        return {}
    start_dir = model_dir(workspace, p["start"] - 1)
    if start_dir.exists():
        shutil.rmtree(start_dir)
    start_dir.parent.mkdir(parents=True, exist_ok=True)
    if p["checkpoint"]:
        store = exp.open_checked(cfg.pipeline.store_uri)
        store.fetch_checkpoint(cfg.pipeline.experiment, p["checkpoint"], start_dir)
        log.info("continuing experiment %s from %s (round %d)", p["experiment"], p["checkpoint"], p["start"] - 1)
    else:
        stages.init_model(base_model, str(start_dir))
    reference = 0
    if cfg.train.use_kl_loss and cfg.train.reference == "initial":
        ref = Path(workspace) / "reference"
        if p["checkpoint"]:
            stages.init_model(base_model, str(ref))  # the experiment's initial model, not this run's start
        elif not ref.exists():
            stages._copy_model(start_dir, ref)
        reference = 1
    return {"resumed": float(bool(p["checkpoint"])), "start_round": float(p["start"]), "reference": float(reference)}


@on_success
def rollout(config: str, plan_: str, slot: int, shard: int, shards: int, tasks_path: str, workspace: str) -> dict[str, Any]:
    cfg, _, r = _slot(config, plan_, slot)
    if r is None:
        return {}
    _log_stage(r, "rollout")
    t0 = time.monotonic()
    out = round_dir(workspace, r) / f"rollouts-{shard:03d}.jsonl"
    m = stages.rollout(str(model_dir(workspace, r - 1)), tasks_path, cfg, r, str(out), shard=shard, shards=shards)
    name = "rollout" if shards == 1 else f"rollout-{shard:03d}"
    return _stage_metrics(workspace, r, name, m, time.monotonic() - t0)


def merge_rollouts(workspace: str, round_: int, shards: int, out_path: str) -> int:
    """The shards' rollouts concatenated in shard order (= the round's task order)."""
    records = []
    for i in range(shards):
        path = round_dir(workspace, round_) / f"rollouts-{i:03d}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"round {round_}: rollout shard {i} of {shards} wrote no {path}")
        records.extend(read_jsonl(path))
    write_jsonl(out_path, records)
    return len(records)


def execute(config: str, plan_: str, slot: int, shards: int, workspace: str, rollouts_out: str,
            executions_out: str) -> dict[str, Any]:
    """The round's rollout shards merged into ``rollouts_out``, run in the sandbox -> ``executions_out`` (pass tables)."""
    cfg, _, r = _slot(config, plan_, slot)
    if r is None:
        for path in (rollouts_out, executions_out):
            write_jsonl(path, [])
        return {}
    _log_stage(r, "execute")
    t0 = time.monotonic()
    merge_rollouts(workspace, r, shards, rollouts_out)
    if shards > 1:  # one record per round: the shards' metrics summed
        parts = [json.loads((round_dir(workspace, r) / f"rollout-{i:03d}.json").read_text()) for i in range(shards)]
        total = {k: sum(x["metrics"].get(k, 0) for x in parts) for k in parts[0]["metrics"]}
        (round_dir(workspace, r) / "rollout.json").write_text(
            json.dumps({"metrics": total, "seconds": max(x["seconds"] for x in parts)}))
    m = stages.execute(rollouts_out, cfg, executions_out)
    return _stage_metrics(workspace, r, "execute", m, time.monotonic() - t0)


def reward(config: str, plan_: str, slot: int, workspace: str, rollouts: str, executions: str,
           rewards_out: str) -> dict[str, Any]:
    """CURE rewards from the round's rollouts and pass tables -> ``rewards_out`` (the training examples); the
    metrics carry the mean rewards before normalisation too (keys ``reward_*``)."""
    cfg, _, r = _slot(config, plan_, slot)
    if r is None:
        write_jsonl(rewards_out, [])
        return {}
    _log_stage(r, "reward")
    t0 = time.monotonic()
    rm = {**stages.reward(rollouts, executions, cfg, rewards_out, seed=r),
          **raw_reward_means(read_jsonl(executions), cfg.reward.post_stage)}
    _stage_metrics(workspace, r, "reward", rm, time.monotonic() - t0)
    return {f"reward_{k}": v for k, v in rm.items()}


def raw_reward_means(executions: list[dict[str, Any]], post_stage: bool = False) -> dict[str, float]:
    """Mean rewards before normalisation over the round's tasks: the coder's ground-truth pass rate and the
    tester's Eq. 4 (tasks where it is defined), what the z-normalised training rewards hide."""
    import numpy as np

    code, test = [], []
    for rec in executions:
        table = np.asarray(rec["passed"], dtype=bool)
        n = int(rec["num_gt"])
        if table.ndim != 2 or table.shape[0] == 0 or n == 0:
            continue
        code.extend(table[:, :n].mean(axis=1))
        raw = raw_unit_test_rewards(table[:, :n], table[:, n:], post_stage)
        if raw is not None:
            test.extend(raw)
    return {"coder_reward_mean": float(np.mean(code)) if code else 0.0,
            "tester_reward_mean": float(np.mean(test)) if test else 0.0}


@on_success
def train(config: str, plan_: str, slot: int, workspace: str, rewards: str, log_dir: str | None = None) -> dict[str, Any]:
    """One training step on the workspace: ``models/round-(r-1)`` -> ``models/round-r``; records the round."""
    cfg, p, r = _slot(config, plan_, slot)
    if r is None:
        return {}
    _log_stage(r, "train")
    t0 = time.monotonic()
    ref = Path(workspace) / "reference"
    out = model_dir(workspace, r)
    m = stages.train(str(model_dir(workspace, r - 1)), rewards, cfg, str(out), str(ref) if ref.is_dir() else None, r, log_dir)
    _stage_metrics(workspace, r, "train", m, time.monotonic() - t0)
    record = round_record(workspace, r)
    store = _leased_store(cfg, p)
    exp.upsert_record(store, cfg.pipeline.experiment, exp.ROUNDS, record)
    # Every reader of round r-2's model (its evaluation and promotion) finished before this task started.
    old = model_dir(workspace, r - 2)
    if r - 2 >= p["start"] - 1 and old.is_dir():
        shutil.rmtree(old)
    return flat_round_metrics(record)


def round_record(workspace: str, round_: int) -> dict[str, Any]:
    """``{"round", "rollout", "execute", "reward", "train", "seconds"}`` from the stages' files of the round."""
    record: dict[str, Any] = {"round": round_, "seconds": {}}
    for stage in STAGES:
        path = round_dir(workspace, round_) / f"{stage}.json"
        data = json.loads(path.read_text()) if path.is_file() else {"metrics": {}, "seconds": 0.0}
        record[stage] = data["metrics"]
        record["seconds"][stage] = round(float(data["seconds"]), 3)
    return record


def flat_round_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The round's numbers as ``stage_name`` keys (the train task's ``Metrics``), plus tokens per second."""
    out: dict[str, float] = {"round": float(record["round"])}
    for stage in (*STAGES, "seconds"):
        for k, v in record.get(stage, {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{stage}_{k}"] = float(v)
    tokens, secs = record["train"].get("tokens"), record["seconds"].get("train")
    if tokens and secs:
        out["train_tokens_per_s"] = float(tokens) / secs
    return out


def _leased_store(cfg: CureConfig, p: dict[str, Any]) -> Any:
    """The store, after checking (and renewing) that this run still holds the experiment's lease."""
    store = exp.open_checked(cfg.pipeline.store_uri)
    exp.check_lease(store, cfg.pipeline.experiment, str(p.get("run_id", "")), cfg.pipeline.lease_s)
    return store


def _eval_round(p: dict[str, Any], cfg: CureConfig, slot: int) -> int | None:
    if slot == 0:  # the run's starting model: round 0, or a promoted round whose evaluation is missing
        start_eval = p.get("evaluate_start", p["start"] == 1)
        return int(p["start"]) - 1 if p["active"] and start_eval else None
    r = slot_round(p, slot)
    if r is None or not (r % cfg.pipeline.eval_every == 0 or r == p["total"]):
        return None
    return r


def is_eval_slot(config: str, plan_: str, slot: int) -> bool:
    """Whether a slot evaluates in this run (the condition of its evaluation pod in the cluster pipeline)."""
    return _eval_round(_plan(plan_), load_config(config), slot) is not None


def evaluate(config: str, plan_: str, slot: int, seeds: list[int], benchmarks: dict[str, str], workspace: str,
             report_dir: str, run_name: str = "") -> dict[str, Any]:
    """Evaluate a slot's model when its global round is an evaluation round; upsert the experiment's history in
    the store and rewrite its report (also in ``report_dir``)."""
    setup_logging()
    cfg, p = load_config(config), _plan(plan_)
    r = _eval_round(p, cfg, slot)
    if r is None:
        return {}
    _log_stage(r, "evaluate")
    if r > 0:  # slot 0 gets the noise seeds for round 0; a re-evaluation of a later round samples its first only
        seeds = list(seeds)[:1]
    tasks = {name: load_tasks(path)[0] for name, path in benchmarks.items()}
    entry = evaluate_benchmarks(str(model_dir(workspace, r if slot else p["start"] - 1)), tasks, cfg, r, seeds,
                                out_dir=Path(report_dir) / f"round-{r:03d}")
    store = _leased_store(cfg, p)
    history = exp.upsert_record(store, cfg.pipeline.experiment, exp.HISTORY, entry)
    write_experiment_report(store, cfg.pipeline.experiment, report_dir, run_name, history)
    primary = entry["benchmarks"][entry["primary_benchmark"]]
    return {k: float(v) for k, v in primary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@on_success
def evaluate_component(config: str, plan_: str, slot: int, seeds: list[Any], benchmarks_dir: str, workspace: str,
                       run_name: str, report_html: str, report_md: str) -> dict[str, Any]:
    """:func:`evaluate` with the component's artifacts: a benchmarks folder in, the report (plots embedded) out."""
    benchmarks = {p.name[: -len(".jsonl")]: str(p) for p in sorted(Path(benchmarks_dir).glob("*.jsonl"))}
    report_dir = Path(report_html + ".files")
    out = evaluate(config, plan_, slot, [int(float(s)) for s in seeds], benchmarks, workspace, str(report_dir), run_name)
    if out:
        shutil.copyfile(report_dir / "report.html", report_html)
        Path(report_md).write_text(embed_images((report_dir / "report.md").read_text(), report_dir))
        shutil.rmtree(report_dir)
    else:
        for path in (report_html, report_md):
            Path(path).write_text("not an evaluation round\n")
    return out


def write_experiment_report(store: Any, experiment: str, report_dir: str, run_name: str = "",
                            history: list[dict[str, Any]] | None = None) -> Path | None:
    """The experiment's one report (all runs) from its history in the store (``history`` when the caller has just
    read or written it), into ``report_dir`` and the store."""
    history = exp.read_history(store, experiment) if history is None else history
    if not history:
        return None
    noise = history[0].get("noise", {}).get(history[0].get("primary_benchmark", ""), None)
    write_report(history, report_dir, title=f"CURE training, experiment {experiment}", noise=noise,
                 rounds=exp.read_rounds(store, experiment))
    for name in ("report.md", "report.html"):
        store.put_file(f"{experiment}/report/{name}", Path(report_dir) / name)
    return Path(report_dir)


def promote(config: str, plan_: str, slot: int, workspace: str) -> dict[str, Any]:
    """Promote the slot's model when its round is a save point, the last round, or the end of this run's segment."""
    cfg, p, r = _slot(config, plan_, slot)
    if r is None:
        return {}
    keep = r % cfg.pipeline.save_every == 0 or r == p["total"]
    if not (keep or r == p["last"]):
        return {}
    _log_stage(r, "promote")
    store = _leased_store(cfg, p)
    exp.promote(store, cfg.pipeline.experiment, model_dir(workspace, r), r, keep)
    return {"round": float(r), "kept": float(keep)}


MODEL_POINTER = "cure-model.json"  # in finish's Model artifact: {"uri": the checkpoint in the store, "round"}


@on_success
def finish(config: str, plan_: str, workspace: str, model_out: str, report_html: str, report_md: str) -> dict[str, Any]:
    """The run's outputs: its last model as a ``Model`` artifact, the experiment's report (images embedded)."""
    import tempfile

    setup_logging()
    cfg, p = load_config(config), _plan(plan_)
    store = exp.open_checked(cfg.pipeline.store_uri)
    out: dict[str, Any] = {"first_round": float(p["start"]), "last_round": float(p["last"]), "total_rounds": float(p["total"])}
    # The Model artifact records where the run's last model is (its promoted checkpoint), not a copy of it: a 7B
    # model is ~15 GB, and KFP's artifact store keeps every run's artifacts.
    Path(model_out).mkdir(parents=True, exist_ok=True)
    if p["active"]:
        key = store.checkpoint_key(cfg.pipeline.experiment, exp.checkpoint_name(p["last"]))
        (Path(model_out) / MODEL_POINTER).write_text(json.dumps({"uri": f"{store.uri}/{key}", "round": p["last"]}))
    history = exp.read_history(store, cfg.pipeline.experiment)
    with tempfile.TemporaryDirectory(prefix="cure-report-") as tmp:
        if write_experiment_report(store, cfg.pipeline.experiment, tmp, history=history) is not None:
            shutil.copyfile(Path(tmp) / "report.html", report_html)
            Path(report_md).write_text(embed_images((Path(tmp) / "report.md").read_text(), Path(tmp)))
        else:
            Path(report_html).write_text("<p>no evaluation yet</p>")
            Path(report_md).write_text("no evaluation yet\n")
    if history:
        last = history[-1]
        out.update({f"final_{k}": float(v) for k, v in last.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "round"})
        out["final_eval_round"] = float(last["round"])
    exp.release_lease(store, cfg.pipeline.experiment, str(p.get("run_id", "")))
    return out


def embed_images(markdown: str, folder: Path) -> str:
    """``![alt](plot.png)`` -> a data URI, so the Markdown viewer of the KFP UI shows the plots."""

    def sub(m: re.Match[str]) -> str:
        path = folder / m.group(2)
        if not path.is_file():
            return m.group(0)
        return f"![{m.group(1)}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s:]+\.png)\)", sub, markdown)
