"""The supervised warm start: batches of prompt/response pairs, loss on the responses only, AdamW.

See :mod:`cure.tiny` for the whole build."""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Any

from cure.tiny.model import _response_loss, _Rope
from cure.tiny.spec import TinySpec

log = logging.getLogger(__name__)


def warm_start(
    model: Any, examples: list[tuple[list[int], int]], spec: TinySpec, steps: int, seed: int, pad_id: int, dtype: str = "float32"
) -> list[float]:
    """Supervised training on the response tokens; AdamW, linear warm-up then cosine decay. Returns the losses.

    The model's own ``forward`` is not used: :func:`_response_loss` computes the same loss with the same
    parameters (checked against it in the tests) but without padding masks (right padding under a causal mask
    never reaches a real token), with one matrix product for q/k/v and one for gate/up, and with logits only where
    a response token is predicted. Batches are built once, as tensors, before the loop.
    """
    import torch

    if not examples or steps == 0:
        return []
    torch.manual_seed(seed)
    rng = random.Random(seed)
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError):  # a torch without the fused CPU kernel
        opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        frac = (step - spec.warmup_steps) / max(1, steps - spec.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    torch_dtype = getattr(torch, dtype)
    rope = _Rope(model.config, spec.max_positions, torch_dtype)
    batches: list[tuple[Any, Any, Any]] = []
    losses = []
    model.train()
    t0 = time.time()
    for step in range(steps):
        if not batches:
            order = _length_batches([len(ids) for ids, _ in examples], spec.batch_size, rng)
            batches = [_batch_tensors([examples[i] for i in b], pad_id) for b in order]
        ids, where, targets = batches.pop()
        loss = _response_loss(model, ids, where, targets, rope, torch_dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.detach())
        if step % 100 == 0 or step == steps - 1:
            log.info("warm start step %d/%d loss %.3f (%.0f s)", step + 1, steps, losses[-1].item(), time.time() - t0)
    model.eval()
    return [float(x) for x in torch.stack(losses).tolist()]


def _batch_tensors(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    """(ids [B, W] right-padded, boolean [B, W-1] marking positions whose next token is a response token,
    those next tokens) for one batch."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    where = torch.zeros((len(batch), width - 1), dtype=torch.bool)
    for row, (seq, start) in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq)
        where[row, max(0, start - 1) : len(seq) - 1] = True
    return ids, where, ids[:, 1:][where]


def _length_batches(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches of similar lengths (less padding, so less CPU time), in random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for i in range(0, len(order), 16 * size):
        chunk = sorted(order[i : i + 16 * size], key=lengths.__getitem__)
        batches += [chunk[j : j + size] for j in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches
