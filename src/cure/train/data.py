"""From reward records to micro batches: tokenisation, response-only targets, sequence packing or padding.

Tokenisation follows the reference (``_convert_prompts_outputs_to_batch_tensors_packing``): prompt and response
are tokenised separately without special tokens, the prompt truncated to ``prompt_max_len`` tokens and the
response to ``generate_max_len`` (both keep their beginning), and the two are concatenated.

End token: the reference's reward step appends ``<|im_end|>`` to every response that stopped before the
generation limit and leaves a response that hit the limit as it is (no end token: the model did not finish).
Here the reward record's ``truncated`` flag carries that fact and the tokenizer's end-of-sequence id is appended
to the response tokens when ``truncated`` is false (before the ``generate_max_len`` cut, as in the reference).
A record without the flag counts as truncated when its response reaches ``generate_max_len`` tokens.
Records with an empty response are dropped, as the reference does, and counted.

Packing is the reference's greedy, order-preserving scheme: sequences are appended to the current row while it
stays within ``packing_max_len`` tokens, else a new row starts. A packed row is one micro batch; its position ids
restart at 0 for every sequence, which makes the model's attention block-diagonal (transformers derives the
packed-sequence mask from the position ids when no 2-D attention mask is given; flash-attention uses the same
signal). The padding layout puts the same groups of sequences into right-padded rows, so both layouts compute
the same loss and only the padding waste differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

ROLES = ("coder", "tester")
Layout = Literal["pack", "pad"]


class TrainDataError(ValueError):
    """A training record is malformed; the message names the record and the field."""


@dataclass(frozen=True)
class Sample:
    """One tokenised (prompt, response) pair and its reward."""

    index: int
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float
    role: str
    task_id: str
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


@dataclass
class MicroBatch:
    """Model inputs for one forward/backward and the response-token targets inside it.

    ``target_index`` indexes the flattened ``[rows * cols]`` logits: the row predicting each response token.
    ``advantages``, ``target_ids`` and ``sample_index`` have one entry per response token.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    target_index: torch.Tensor
    target_ids: torch.Tensor
    advantages: torch.Tensor
    sample_index: torch.Tensor
    num_sequences: int
    real_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def response_tokens(self) -> int:
        return int(self.target_ids.numel())

    @property
    def slots(self) -> int:
        """Tokens the model computes on, padding included."""
        return int(self.input_ids.numel())


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """Check one reward record's fields; return it. Raises :class:`TrainDataError` naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise TrainDataError(f"{where}: expected a JSON object with prompt/response/reward/role, got {type(record).__name__}")
    for key in ("prompt", "response"):
        if not isinstance(record.get(key), str):
            raise TrainDataError(f"{where}: field {key!r} must be a string (got {type(record.get(key)).__name__})")
    reward = record.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise TrainDataError(f"{where}: field 'reward' must be a finite number (got {reward!r}); rerun `cure reward`")
    if record.get("role") not in ROLES:
        raise TrainDataError(f"{where}: field 'role' must be one of {ROLES} (got {record.get('role')!r})")
    return record


def tokenize_records(
    records: list[dict[str, Any]],
    tokenizer: Any,
    prompt_max_len: int,
    generate_max_len: int,
) -> tuple[list[Sample], dict[str, int]]:
    """Validate and tokenise reward records. Returns the samples and counts (``dropped_empty``, ``truncated``)."""
    for i, rec in enumerate(records):
        validate_record(rec, f"training record {i} (task_id={rec.get('task_id') if isinstance(rec, dict) else None})")
    kept = [(i, r) for i, r in enumerate(records) if len(r["response"]) > 0]
    stats = {"records": len(records), "dropped_empty": len(records) - len(kept), "truncated": 0, "cut": 0}
    if not kept:
        return [], stats
    prompts = tokenizer([r["prompt"] for _, r in kept], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r["response"] for _, r in kept], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    samples = []
    for (i, rec), p_ids, r_ids in zip(kept, prompts, responses, strict=True):
        if not p_ids:
            raise TrainDataError(f"training record {i}: the prompt tokenises to nothing; a response needs a prompt token before it")
        flag = rec.get("truncated")
        truncated = bool(flag) if flag is not None else len(r_ids) >= generate_max_len
        r_ids = list(r_ids)
        if not truncated and eos is not None:
            r_ids.append(eos)
        stats["truncated"] += int(truncated)
        stats["cut"] += int(len(r_ids) > generate_max_len)
        samples.append(
            Sample(
                index=i,
                prompt_ids=list(p_ids[:prompt_max_len]),
                response_ids=list(r_ids[:generate_max_len]),
                reward=float(rec["reward"]),
                role=rec["role"],
                task_id=str(rec.get("task_id", "")),
                truncated=truncated,
            )
        )
    return samples, stats


def group_for_packing(samples: list[Sample], max_len: int) -> list[list[Sample]]:
    """Greedy in-order grouping: each group's total length is at most ``max_len`` (the reference's packer)."""
    groups: list[list[Sample]] = []
    current: list[Sample] = []
    used = 0
    for s in samples:
        if s.length > max_len:
            raise TrainDataError(
                f"training record {s.index}: {s.length} tokens (prompt {len(s.prompt_ids)} + response "
                f"{len(s.response_ids)}) exceed packing_max_len={max_len}; set train.packing_max_len >= "
                "train.prompt_max_len + train.generate_max_len"
            )
        if current and used + s.length > max_len:
            groups.append(current)
            current, used = [], 0
        current.append(s)
        used += s.length
    if current:
        groups.append(current)
    return groups


def _targets(samples: list[Sample], row_offsets: list[int]) -> tuple[list[int], list[int], list[float], list[int]]:
    """Flat logits rows predicting each response token (row t predicts token t+1), with ids and advantages."""
    index, ids, adv, owner = [], [], [], []
    for s, base in zip(samples, row_offsets, strict=True):
        start = base + len(s.prompt_ids) - 1
        index.extend(range(start, start + len(s.response_ids)))
        ids.extend(s.response_ids)
        adv.extend([s.reward] * len(s.response_ids))
        owner.extend([s.index] * len(s.response_ids))
    return index, ids, adv, owner


def pack(samples: list[Sample], pad_token_id: int = 0) -> MicroBatch:
    """One row holding all ``samples`` back to back, position ids restarting per sequence, no padding."""
    del pad_token_id  # a packed row has no padding
    input_ids: list[int] = []
    positions: list[int] = []
    offsets = []
    for s in samples:
        offsets.append(len(input_ids))
        input_ids.extend(s.prompt_ids + s.response_ids)
        positions.extend(range(s.length))
    index, ids, adv, owner = _targets(samples, offsets)
    return MicroBatch(
        input_ids=torch.tensor([input_ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        attention_mask=None,
        target_index=torch.tensor(index, dtype=torch.long),
        target_ids=torch.tensor(ids, dtype=torch.long),
        advantages=torch.tensor(adv, dtype=torch.float32),
        sample_index=torch.tensor(owner, dtype=torch.long),
        num_sequences=len(samples),
        real_tokens=len(input_ids),
    )


def pad(samples: list[Sample], pad_token_id: int) -> MicroBatch:
    """One right-padded row per sample (the baseline layout packing is compared against)."""
    width = max(s.length for s in samples)
    rows, masks, offsets = [], [], []
    for r, s in enumerate(samples):
        seq = s.prompt_ids + s.response_ids
        rows.append(seq + [pad_token_id] * (width - len(seq)))
        masks.append([1] * len(seq) + [0] * (width - len(seq)))
        offsets.append(r * width)
    index, ids, adv, owner = _targets(samples, offsets)
    return MicroBatch(
        input_ids=torch.tensor(rows, dtype=torch.long),
        position_ids=torch.arange(width, dtype=torch.long).expand(len(samples), width).clone(),
        attention_mask=torch.tensor(masks, dtype=torch.long),
        target_index=torch.tensor(index, dtype=torch.long),
        target_ids=torch.tensor(ids, dtype=torch.long),
        advantages=torch.tensor(adv, dtype=torch.float32),
        sample_index=torch.tensor(owner, dtype=torch.long),
        num_sequences=len(samples),
        real_tokens=sum(s.length for s in samples),
    )


def make_micro_batches(
    samples: list[Sample], max_len: int, pad_token_id: int, layout: Layout = "pack"
) -> list[MicroBatch]:
    """Group samples with the packer and lay each group out as one packed row or as padded rows."""
    build = pack if layout == "pack" else pad
    if layout not in ("pack", "pad"):
        raise ValueError(f"make_micro_batches: layout must be 'pack' or 'pad', got {layout!r}")
    return [build(group, pad_token_id) for group in group_for_packing(samples, max_len)]


def split_by_role(samples: list[Sample], separate: bool) -> list[tuple[str, list[Sample]]]:
    """Training phases: coder then tester data when trained separately (the reference's order), else all at once."""
    if not separate:
        return [("all", samples)] if samples else []
    phases = [(role, [s for s in samples if s.role == role]) for role in ROLES]
    return [(name, group) for name, group in phases if group]
