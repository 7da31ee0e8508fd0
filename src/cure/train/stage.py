"""The training stage (``cure train``): one CURE policy-gradient step on the reward data -> a checkpoint.

Flow of :func:`train_step`, in the reference's order (``optimization/train_utils/rl/trainer.py``):

1. tokenise the reward records (:mod:`cure.train.data`), split them into phases: coder then tester data when
   ``separate_training`` (the reference default), else one phase;
2. per phase: pack the sequences into micro batches, shuffle them (seeded, identical on every rank), split them
   into ``policy_update_steps`` updates and deal each update's micro batches round-robin to the ranks;
3. per phase: log-probabilities of the policy at the phase start (the PPO "old" policy, and the KL reference when
   ``reference=step_start``, as the reference code does), or of the initial model (``reference=initial``);
4. ``max_epochs`` x updates: forward, loss (:mod:`cure.train.objective`), backward with weight
   ``world_size / micro_batches_in_update`` (so every update is the mean over its micro batches, whatever their
   split across ranks), then clip + AdamW;
5. save the checkpoint (:mod:`cure.train.checkpoint`), TensorBoard scalars and ``metrics.json``.

Multi-process: run under ``torchrun`` (``cure train --nproc-per-node N`` does that for you); ranks that get
fewer micro batches in an update run a zero-weight copy so every rank makes the same number of passes.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cure.config import TrainConfig
from cure.train import checkpoint as ckpt
from cure.train.data import Layout, MicroBatch, make_micro_batches, split_by_role, tokenize_records
from cure.train.engines import DistInfo, Engine, build_engine, init_distributed
from cure.train.objective import entropy_from_logits, gather_logprobs, micro_batch_loss
from cure.validate import check_reward_range, where_of

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class NonFiniteError(ValueError):
    """A NaN or infinite loss / gradient norm with ``train.nonfinite=stop``, or weights that became non-finite."""


@dataclass
class Item:
    """One micro batch this rank runs in an update, with its loss weight (0 for a padding pass)."""

    mb: MicroBatch
    weight: float


def plan_updates(mbs: list[MicroBatch], updates: int, dist_info: DistInfo) -> list[list[Item]]:
    """Split a phase's micro batches into ``updates`` contiguous updates and deal each across the ranks.

    Every rank gets ``ceil(n / world)`` items per update; missing ones are zero-weight repeats so collectives
    line up. Weights are ``world / n``: engines average gradients over ranks, so the update is the mean of its
    ``n`` micro-batch losses (the reference's gradient accumulation).
    """
    world, rank = dist_info.world_size, dist_info.rank
    n_total = len(mbs)
    bounds = [round(i * n_total / updates) for i in range(updates + 1)]
    plan = []
    for u in range(updates):
        group = mbs[bounds[u] : bounds[u + 1]]
        if not group:
            continue
        per_rank = math.ceil(len(group) / world)
        mine = group[rank::world]
        items = [Item(mb, world / len(group)) for mb in mine]
        items += [Item(group[0], 0.0)] * (per_rank - len(mine))
        plan.append(items)
    return plan


def response_logits(engine: Engine, mb: MicroBatch) -> torch.Tensor:
    """Logits of the positions that predict response tokens, ``[n, V]`` in target order."""
    if mb.input_ids.shape[0] == 1:
        # One packed row: ask the model for only the needed positions (saves the lm_head on prompt tokens).
        logits = engine.forward(mb.input_ids, mb.position_ids, mb.attention_mask, logits_to_keep=mb.target_index)
        return logits[0]
    logits = engine.forward(mb.input_ids, mb.position_ids, mb.attention_mask)
    return logits.reshape(-1, logits.shape[-1])[mb.target_index.to(logits.device)]


@torch.no_grad()
def compute_logprobs(engine: Engine, mbs: list[MicroBatch]) -> dict[int, torch.Tensor]:
    """Response-token log-probabilities per micro batch (keyed by ``id(mb)``), in eval mode."""
    engine.train(False)
    out = {}
    for mb in mbs:
        if id(mb) not in out:
            logits = response_logits(engine, mb)
            out[id(mb)] = gather_logprobs(logits, mb.target_ids.to(logits.device)).cpu()
    return out


def lr_at(cfg: TrainConfig, update_index: int) -> float:
    """Constant learning rate with linear warm-up, as ``transformers``' ``constant_with_warmup`` (reference)."""
    if cfg.warmup_steps and update_index < cfg.warmup_steps:
        return cfg.learning_rate * update_index / cfg.warmup_steps
    return cfg.learning_rate


def _all_reduce_sum(values: list[float], dist_info: DistInfo) -> list[float]:
    if dist_info.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=dist_info.device if dist_info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def check_config(cfg: TrainConfig) -> None:
    """Reject settings the packer cannot honour, with the fix in the message (the reference asserts the same)."""
    cap = min(cfg.packing_max_len, cfg.micro_batch_tokens)
    if cap < cfg.prompt_max_len + cfg.generate_max_len:
        raise ValueError(
            f"train.packing_max_len={cfg.packing_max_len} / train.micro_batch_tokens={cfg.micro_batch_tokens} must be "
            f">= train.prompt_max_len + train.generate_max_len = {cfg.prompt_max_len + cfg.generate_max_len}, "
            "or a full-length sample cannot be packed"
        )


def _run_update(engine: Engine, items: list[Item], old: dict[int, torch.Tensor], ref: dict[int, torch.Tensor] | None,
                cfg: TrainConfig, dist_info: DistInfo) -> dict[str, float]:
    """Forward/backward over this rank's items, then one optimizer step. Returns globally reduced statistics."""
    engine.train(True)
    sums = dict.fromkeys(
        ("loss", "pg_loss", "kl", "ratio", "entropy_tok", "clip_tok", "tokens", "slots", "real", "mbs", "nonfinite"), 0.0
    )
    for j, item in enumerate(items):
        mb = item.mb
        logits = response_logits(engine, mb)
        dev = logits.device
        logprobs = gather_logprobs(logits, mb.target_ids.to(dev))
        parts = micro_batch_loss(
            logprobs,
            old[id(mb)].to(dev),
            ref[id(mb)].to(dev) if ref is not None else None,
            mb.advantages.to(dev),
            clip_eps=cfg.clip_eps,
            use_kl_loss=cfg.use_kl_loss,
            kl_coef=cfg.kl_coef,
            kl_estimator=cfg.kl_estimator,
        )
        if not bool(torch.isfinite(parts.loss.detach())):
            sums["nonfinite"] += 1
        engine.backward(parts.loss * item.weight, is_last=j == len(items) - 1)
        if item.weight > 0:
            share = item.weight / dist_info.world_size  # 1 / micro batches in the update
            sums["loss"] += share * float(parts.loss.detach())
            sums["pg_loss"] += share * float(parts.pg_loss)
            sums["kl"] += share * float(parts.kl)
            sums["ratio"] += share * float(parts.ratio_mean)
            sums["entropy_tok"] += float(entropy_from_logits(logits.detach()).sum())
            sums["clip_tok"] += float(parts.clip_frac) * parts.tokens
            sums["tokens"] += parts.tokens
            sums["slots"] += mb.slots
            sums["real"] += mb.real_tokens
            sums["mbs"] += 1
        del logits, logprobs, parts
    keys = list(sums)
    red = dict(zip(keys, _all_reduce_sum([sums[k] for k in keys], dist_info), strict=True))
    grad_norm = engine.step()
    nonfinite = red["nonfinite"] > 0 or not math.isfinite(grad_norm)
    applied = engine.last_step_applied
    if nonfinite:
        what = "loss" if red["nonfinite"] > 0 else "gradient norm"
        if cfg.nonfinite == "stop":
            raise NonFiniteError(
                f"non-finite {what} (loss={red['loss']}, grad_norm={grad_norm}) in an update"
                + ("" if applied else "; the update was not applied")
                + ". Check the rewards and train.learning_rate; no checkpoint was written "
                "(set train.nonfinite=skip to skip such updates instead)"
            )
        if applied and not engine.weights_finite():
            raise NonFiniteError(
                f"non-finite {what} (grad_norm={grad_norm}) and the engine applied the update: the weights are no "
                "longer finite; no checkpoint was written"
            )
        log.warning("skipped an update: non-finite %s (grad_norm=%s)%s", what, grad_norm,
                    "" if not applied else "; the engine applied it but the weights stayed finite")
    return {
        "nonfinite": nonfinite,
        "applied": applied,
        "loss": red["loss"],
        "pg_loss": red["pg_loss"],
        "kl": red["kl"],
        "ratio": red["ratio"],
        "entropy": red["entropy_tok"] / max(red["tokens"], 1),
        "clip_frac": red["clip_tok"] / max(red["tokens"], 1),
        "grad_norm": grad_norm,
        "tokens": int(red["tokens"]),
        "real_tokens": int(red["real"]),
        "slots": int(red["slots"]),
        "micro_batches": int(red["mbs"]),
    }


def train_step(
    model_dir: str,
    records: list[dict],
    cfg: TrainConfig,
    out_dir: str,
    ref_model_dir: str | None = None,
    resume_from: str | None = None,
    log_dir: str | None = None,
    *,
    separate_training: bool = True,
    layout: Layout | None = None,
    overwrite: bool = False,
) -> dict:
    """One CURE training step on ``records`` (the reward artifact); writes ``out_dir/step-N`` and returns metrics.

    ``model_dir``: a ``save_pretrained`` folder or a checkpoint root (its latest step). ``ref_model_dir``: the
    KL reference when ``cfg.reference == "initial"``. ``resume_from``: a checkpoint (root or step folder) whose
    weights, step counter and (if saved) optimizer state this step continues from, instead of ``model_dir``.
    The step counter continues from the start model's ``trainer_state.json`` when it is a checkpoint this stage
    wrote (so rounds of a pipeline count up), else starts at 1. Micro batches hold at most
    ``min(packing_max_len, micro_batch_tokens)`` tokens.
    ``separate_training``: coder and tester records in separate phases (``RewardConfig.separate_training``).
    ``layout``: ``pack`` (the reference) or ``pad`` (same groups, padded rows); None takes ``cfg.layout``.
    ``overwrite``: replace ``out_dir/step-N`` if it exists (else that is an error, raised before any training).

    Guards (:mod:`cure.validate`): rewards beyond ``cfg.max_abs_reward`` are rejected or clipped and counted
    (``rewards_clipped``); a non-finite loss or gradient norm stops the step or skips the update
    (``cfg.nonfinite``; ``nonfinite_updates``, ``skipped_updates``); a non-finite weight is never saved.

    Returns ``loss, pg_loss, kl, entropy, grad_norm, clip_frac`` (means over the updates), ``tokens`` (response
    tokens trained on), ``time`` (s), plus ``step``, ``updates``, ``checkpoint`` and per-update rows.
    """
    t0 = time.time()
    check_config(cfg)
    layout = layout or cfg.layout
    from cure.train.data import validate_record

    for i, rec in enumerate(records):  # every record, before any model is loaded
        validate_record(rec, where_of(records, i, "training record"))
    clipped = check_reward_range(records, cfg.max_abs_reward, cfg.reward_out_of_range)
    if clipped:
        log.warning("clipped %d reward(s) to +/-%g (train.reward_out_of_range=clip)", clipped, cfg.max_abs_reward)
    if cfg.use_kl_loss and cfg.reference == "initial" and not ref_model_dir:
        raise ValueError("train.reference=initial needs ref_model_dir (--ref-model DIR): the initial policy's folder")
    dist_info = init_distributed(cfg.engine)
    start = ckpt.resolve_model_dir(resume_from or model_dir)
    if not (start / "config.json").is_file():
        raise FileNotFoundError(f"{start}: no config.json; --model must be a save_pretrained folder or a checkpoint root")
    state = ckpt.read_trainer_state(start)
    step = state["step"] + 1
    update_index = state["updates"]
    ckpt.check_step_free(out_dir, step, overwrite)
    torch.manual_seed(cfg.seed + step)
    rng = random.Random(cfg.seed * 1000003 + step)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    samples, data_stats = tokenize_records(records, tokenizer, cfg.prompt_max_len, cfg.generate_max_len)
    cap = min(cfg.packing_max_len, cfg.micro_batch_tokens)
    phases = []
    for name, group in split_by_role(samples, separate_training):
        mbs = make_micro_batches(group, cap, pad_id, layout)
        rng.shuffle(mbs)
        phases.append((name, mbs, plan_updates(mbs, min(cfg.policy_update_steps, len(mbs)), dist_info)))
    if not samples:
        log.warning("no trainable records (all %d empty or none given): the checkpoint is the unchanged model", len(records))
    grad_accum = max([len(items) for _, _, plan in phases for items in plan] or [1])

    def my_mbs(plan: list[list[Item]]) -> list[MicroBatch]:
        return [it.mb for items in plan for it in items]

    ref_lp: dict[int, torch.Tensor] | None = None
    if cfg.use_kl_loss and cfg.reference == "initial" and phases:
        ref_engine = build_engine(str(ckpt.resolve_model_dir(ref_model_dir)), cfg, dist_info, train=False)
        ref_lp = compute_logprobs(ref_engine, [mb for _, _, plan in phases for mb in my_mbs(plan)])
        del ref_engine
        gc.collect()

    engine = build_engine(str(start), cfg, dist_info, train=True, grad_accum=grad_accum)
    if resume_from and ckpt.has_optimizer_state(start):
        engine.load_optimizer(start / ckpt.OPTIMIZER_DIR)
        log.info("resumed optimizer state from %s", start)

    writer = None
    if dist_info.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(log_dir or Path(out_dir) / "tensorboard"))

    rows: list[dict[str, Any]] = []
    t_train, cpu_train = time.time(), time.process_time()
    for name, _, plan in phases:
        old = compute_logprobs(engine, my_mbs(plan))
        ref = (old if cfg.reference == "step_start" else ref_lp) if cfg.use_kl_loss else None
        for epoch in range(cfg.max_epochs):
            for u, items in enumerate(plan):
                lr = lr_at(cfg, update_index)
                engine.set_lr(lr)
                t_u = time.time()
                row = _run_update(engine, items, old, ref, cfg, dist_info)
                row.update(phase=name, epoch=epoch, update=u, global_update=update_index, lr=lr, time=time.time() - t_u)
                rows.append(row)
                if writer is not None:
                    for key in ("loss", "pg_loss", "kl", "entropy", "grad_norm", "clip_frac", "ratio", "lr", "tokens"):
                        writer.add_scalar(f"train/{key}", row[key], update_index)
                    writer.add_scalar(f"train/{name}_loss", row["loss"], update_index)
                if dist_info.is_main:
                    log.info(
                        "step %d %s epoch %d update %d/%d: loss=%.5f pg=%.5f kl=%.2e entropy=%.3f grad_norm=%.3f "
                        "clip=%.3f tokens=%d (%.1fs)", step, name, epoch + 1, u + 1, len(plan), row["loss"],
                        row["pg_loss"], row["kl"], row["entropy"], row["grad_norm"], row["clip_frac"], row["tokens"],
                        row["time"],
                    )
                update_index += 1
    train_time = time.time() - t_train
    train_cpu_time = time.process_time() - cpu_train

    new_state = {
        "step": step,
        "updates": update_index,
        "source_model": str(start),
        "samples": len(samples),
        "engine": cfg.engine,
        "zero_stage": cfg.zero_stage if cfg.engine == "deepspeed" else None,
        "world_size": dist_info.world_size,
    }
    folder = ckpt.save_checkpoint(
        engine, tokenizer, out_dir, new_state, save_optimizer=cfg.save_optimizer_state, is_main=dist_info.is_main,
        overwrite=overwrite,
    )
    del engine
    gc.collect()

    def mean(key: str) -> float:
        vals = [r[key] for r in rows if math.isfinite(r[key])]
        return float(sum(vals) / len(vals)) if vals else 0.0

    tokens = sum(r["tokens"] for r in rows)
    slots = sum(r["slots"] for r in rows)
    metrics = {
        "loss": mean("loss"),
        "pg_loss": mean("pg_loss"),
        "kl": mean("kl"),
        "entropy": mean("entropy"),
        "grad_norm": mean("grad_norm"),
        "clip_frac": mean("clip_frac"),
        "ratio": mean("ratio"),
        "tokens": tokens,
        "time": time.time() - t0,
        "train_time": train_time,
        "train_cpu_time": train_cpu_time,
        "tokens_per_s": tokens / train_time if train_time > 0 else 0.0,
        "padding_fraction": 1 - sum(r["real_tokens"] for r in rows) / slots if slots else 0.0,
        "step": step,
        "updates": len(rows),
        "global_updates": update_index,
        "checkpoint": str(folder),
        "layout": layout,
        "engine": cfg.engine,
        "zero_stage": new_state["zero_stage"],
        "world_size": dist_info.world_size,
        "phases": [name for name, _, _ in phases],
        "micro_batches": sum(len(mbs) for _, mbs, _ in phases),
        **data_stats,
        "samples": len(samples),
        "rewards_clipped": clipped,
        "nonfinite_updates": sum(1 for r in rows if r["nonfinite"]),
        "skipped_updates": sum(1 for r in rows if not r["applied"]),
        "per_update": rows,
    }
    if dist_info.is_main:
        if writer is not None:
            writer.add_scalar("train/step_time", metrics["time"], step)
            writer.close()
        _write_json(Path(out_dir) / METRICS_FILE, metrics)
    return metrics


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
