"""CURE's training objective as pure torch functions (no model, no engine, no I/O).

The reference (Gen-Verse/CURE ``optimization/train_utils``, adapted from OpenRLHF / Open-Reasoner-Zero) trains
with a token-level policy gradient:

* the advantage of every response token is the response's (already z-normalised) reward: the reward sits on the
  last response token and the return is summed back with gamma = lambda = 1 and no critic, so each token sees the
  same value; prompt tokens get no loss;
* the ratio is ``exp(logp - logp_old)`` against the policy at the start of the step, clipped PPO-style to
  ``[1 - eps, 1 + eps]``; with one update per step (the paper's setting) the ratio is exactly 1 and this is plain
  REINFORCE with the reward as advantage;
* a KL loss to a reference policy (estimator k3 by default, coefficient 0.01) is added to the loss, not to the
  reward;
* averaging: each micro batch (one packed sequence) takes the mean over all its response tokens, and the micro
  batches of one optimizer update are averaged (gradient accumulation divides by their number, data parallelism
  averages over ranks). :func:`micro_batch_loss` gives the per-micro-batch value; the caller weights it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

KLEstimator = Literal["k1", "k2", "k3"]


def gather_logprobs(logits: torch.Tensor, labels: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Log-probability of ``labels`` under ``logits`` (``[..., V]`` -> ``[...]``), computed in float32.

    Uses ``logit[label] - logsumexp(logits)`` row chunk by row chunk, so the full float32 log-softmax over a large
    vocabulary is never materialised at once (a 20k-token pack x 152k vocabulary would be 12 GB).
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"gather_logprobs: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_labels = labels.reshape(-1)
    out = []
    for start in range(0, flat_logits.shape[0], chunk_rows):
        rows = flat_logits[start : start + chunk_rows].float()
        picked = rows.gather(-1, flat_labels[start : start + chunk_rows, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(rows, dim=-1))
    if not out:
        return flat_logits.new_zeros(labels.shape, dtype=torch.float32)
    return torch.cat(out).reshape(labels.shape)


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Entropy of the softmax over the last dim (float32, no gradient), chunked like :func:`gather_logprobs`."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = []
    for start in range(0, flat.shape[0], chunk_rows):
        rows = flat[start : start + chunk_rows].float()
        logp = torch.log_softmax(rows, dim=-1)
        out.append(-(logp.exp() * logp).sum(-1))
    if not out:
        return flat.new_zeros(logits.shape[:-1], dtype=torch.float32)
    return torch.cat(out).reshape(logits.shape[:-1])


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true (all of them when mask is None); 0 when the mask is empty."""
    if mask is None:
        return values.mean() if dim is None else values.mean(dim)
    mask = mask.to(values.dtype)
    total = (values * mask).sum() if dim is None else (values * mask).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens (Schulman, "Approximating KL divergence").

    With ``log_ratio = logp - logp_ref``: k1 = log_ratio (unbiased, can be negative); k2 = log_ratio^2 / 2;
    k3 = exp(-log_ratio) - 1 + log_ratio (unbiased, never negative; CURE's choice).
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.pow(2)
    if estimator == "k3":
        return torch.exp(-log_ratio) - 1.0 + log_ratio
    raise ValueError(f"kl_estimate: unknown estimator {estimator!r}; use k1, k2 or k3")


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate, per token: ``-min(r * A, clip(r, 1-eps, 1+eps) * A)``.

    Returns ``(loss_per_token, ratio, clipped)`` where ``clipped`` marks tokens whose clipped term was the
    smaller one (so the gradient through them is zero).
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped_obj = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped_obj)
    return loss, ratio, clipped_obj < unclipped


@dataclass
class LossParts:
    """One micro batch's loss and the statistics logged for it (all scalars; ``loss`` carries the gradient)."""

    loss: torch.Tensor
    pg_loss: torch.Tensor
    kl: torch.Tensor
    ratio_mean: torch.Tensor
    clip_frac: torch.Tensor
    tokens: int


def micro_batch_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    *,
    clip_eps: float = 0.2,
    use_kl_loss: bool = True,
    kl_coef: float = 0.01,
    kl_estimator: KLEstimator = "k3",
) -> LossParts:
    """CURE's loss on the response tokens of one micro batch (flat 1-D tensors, one entry per response token).

    ``pg_loss`` and ``kl`` are means over the micro batch's response tokens, as the reference computes them
    (``masked_mean`` over the packed sequence); ``loss = pg_loss + kl_coef * kl``.
    """
    n = logprobs.numel()
    if not (old_logprobs.shape == advantages.shape == logprobs.shape):
        raise ValueError(
            f"micro_batch_loss: shapes differ: logprobs {tuple(logprobs.shape)}, old {tuple(old_logprobs.shape)}, "
            f"advantages {tuple(advantages.shape)}"
        )
    if n == 0:
        raise ValueError("micro_batch_loss: no response tokens in this micro batch")
    pg_tok, ratio, clipped = clipped_policy_loss(logprobs, old_logprobs, advantages, clip_eps)
    pg_loss = pg_tok.mean()
    if use_kl_loss:
        if ref_logprobs is None:
            raise ValueError("micro_batch_loss: use_kl_loss needs ref_logprobs")
        kl = kl_estimate(logprobs, ref_logprobs, kl_estimator).mean()
    else:
        kl = logprobs.new_zeros(())
    loss = pg_loss + kl_coef * kl if use_kl_loss else pg_loss
    return LossParts(
        loss=loss,
        pg_loss=pg_loss.detach(),
        kl=kl.detach(),
        ratio_mean=ratio.detach().mean(),
        clip_frac=clipped.float().mean(),
        tokens=n,
    )
