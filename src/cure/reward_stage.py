"""The reward stage: rollouts + executions -> training examples (``cure reward``).

Each example is ``{prompt, response, reward, role, task_id, truncated}``; ``role`` is ``coder`` or ``tester``.
As in the reference, the training stage appends the end-of-sequence token to a response unless it was truncated at
the generation limit (``truncated``). Tasks whose rewards are all equal, or (tester) with no correct program,
contribute nothing (their rewards are ``None``); the summary counts them.

Label-free mode (``reward.code_reward_source=generated_tests``): the coder's reward is its weighted pass rate on
the generated tests (:func:`cure.reward.label_free_code_rewards`), ground-truth tests unread, so tasks with
``num_gt`` 0 train the coder too. The tester's Eq. 4 needs ground truth: tasks without it give no tester rows.
When the tests came from a frozen tester (``reward.tester_model``, or a rollout record's ``tester_model``), no
tester rows are written at all: those responses are not the policy's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from cure.config import CureConfig, RewardConfig
from cure.execute import check_fingerprints
from cure.reward import label_free_code_rewards, length_regularize, raw_unit_test_rewards, task_rewards
from cure.tasks import read_jsonl, write_jsonl
from cure.validate import check_executions, check_join, check_rollouts

log = logging.getLogger(__name__)


def _truncated(rollout: dict[str, Any], role: str, max_new_tokens: int) -> list[bool]:
    key = "code" if role == "coder" else "test"
    flags = rollout.get(f"{key}_truncated")
    if flags is not None:
        return [bool(x) for x in flags]
    return [n >= max_new_tokens for n in rollout[f"{key}_lengths"]]


def assemble(
    rollouts: Sequence[dict[str, Any]],
    executions: Sequence[dict[str, Any]],
    cfg: RewardConfig,
    max_new_tokens: int,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Build (coder examples, tester examples, counts). Executions are matched to rollouts by ``task_id``.

    The counts also hold the raw (before normalisation) mean rewards of the round, for the training curves:
    ``coder_reward_mean`` (mean ground-truth pass rate over all programs) and ``tester_reward_mean`` (mean of
    Eq. 4 over the tests of tasks where it is defined, i.e. with a correct program).

    Both inputs are checked first (:mod:`cure.validate`): their contracts, unique task ids, every task on both
    sides and table shapes that match the rollouts, and each table's fingerprint against its rollout's rows
    (:func:`cure.execute.check_fingerprints`: a table computed from other rows is refused); a violation raises
    :class:`cure.validate.ArtifactError`.
    """
    check_rollouts(rollouts, for_reward=True)
    check_executions(executions)
    check_join(rollouts, executions)
    if check_fingerprints(rollouts, executions) < len(rollouts):
        log.warning("some execution records carry no rollout fingerprint (written by an older cure): their rows "
                    "cannot be checked against the rollouts'")
    by_id = {e["task_id"]: e for e in executions}
    code_data: list[dict[str, Any]] = []
    test_data: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"tasks": 0, "coder_tasks": 0, "tester_tasks": 0, "coder_none": 0, "tester_none": 0}
    raw_code: list[float] = []
    raw_test: list[float] = []
    for r in rollouts:
        e = by_id[r["task_id"]]
        counts["tasks"] += 1
        passed = np.asarray(e["passed"], dtype=bool).reshape(len(e["passed"]), len(e["passed"][0]) if e["passed"] else 0)
        t = e["num_gt"]
        if passed.size and t:
            raw_code += passed[:, :t].mean(axis=1).tolist()
            raw = raw_unit_test_rewards(passed[:, :t], passed[:, t:], post_stage=cfg.post_stage)
            raw_test += [] if raw is None else raw.tolist()
        code_r, test_r = task_rewards(
            passed[:, :t],
            passed[:, t:],
            post_stage=cfg.post_stage,
            enable_efficient=cfg.enable_efficient,
            code_lengths=r.get("code_lengths"),
            test_lengths=r.get("test_lengths"),
            max_len_threshold=cfg.max_len_threshold,
            min_len_threshold=cfg.min_len_threshold,
        )
        if cfg.code_reward_source == "generated_tests":
            code_r = _label_free(r, passed[:, t:], cfg)
        if cfg.tester_model or r.get("tester_model"):
            test_r = None  # the tests came from a frozen tester: they are not the policy's to learn from
        for role, rewards, prompt, responses in (
            ("coder", code_r, r["code_prompt"], r["code_responses"]),
            ("tester", test_r, r["test_prompt"], r["test_responses"]),
        ):
            if rewards is None:
                counts[f"{role}_none"] += 1
                continue
            if len(rewards) != len(responses):
                raise ValueError(f"{r['task_id']}: {len(rewards)} {role} rewards for {len(responses)} responses")
            counts[f"{role}_tasks"] += 1
            truncated = _truncated(r, role, max_new_tokens)
            target = code_data if role == "coder" else test_data
            for resp, rew, trunc in zip(responses, rewards.tolist(), truncated):
                target.append(
                    {"prompt": prompt, "response": resp, "reward": rew, "role": role, "task_id": r["task_id"], "truncated": trunc}
                )
    unlabeled = sum(1 for e in executions if not e["num_gt"])
    counts["unlabeled_tasks"] = unlabeled
    if unlabeled and cfg.code_reward_source == "ground_truth":
        log.warning("%d task(s) have no ground-truth tests: no coder or tester reward for them under ground-truth "
                    "rewards (reward.code_reward_source=generated_tests trains the coder on them)", unlabeled)
    counts["coder_reward_mean"] = float(np.mean(raw_code)) if raw_code else 0.0
    counts["tester_reward_mean"] = float(np.mean(raw_test)) if raw_test else 0.0
    rng = random.Random(seed)
    rng.shuffle(code_data)
    rng.shuffle(test_data)
    return code_data, test_data, counts


def _label_free(rollout: dict[str, Any], gen_pass: np.ndarray, cfg: RewardConfig) -> np.ndarray | None:
    """Coder rewards from the generated tests alone (``reward.code_reward_source=generated_tests``)."""
    tests = rollout.get("tests")
    valid = [t is not None for t in tests] if tests is not None and len(tests) == gen_pass.shape[1] else None
    code = label_free_code_rewards(gen_pass, valid, cfg.test_weighting, cfg.enable_efficient)
    if code is not None and cfg.enable_efficient:
        code = length_regularize(code, rollout["code_lengths"], cfg.max_len_threshold, cfg.min_len_threshold)
    return code


def write_rewards(rollouts_path: str, executions_path: str, cfg: CureConfig, out_path: str, seed: int = 0) -> dict[str, Any]:
    """The stage from files to file: coder then tester examples (shuffled together unless trained separately)."""
    code, test, counts = assemble(
        read_jsonl(rollouts_path), read_jsonl(executions_path), cfg.reward, cfg.rollout.max_new_tokens, seed
    )
    records = code + test
    if not cfg.reward.separate_training:
        random.Random(seed).shuffle(records)
    write_jsonl(out_path, records)
    counts.update(coder_examples=len(code), tester_examples=len(test))
    return counts
