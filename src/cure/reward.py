"""CURE's rewards, as pure numpy functions (paper Sec. 3; reference ``optimization/reward.py``).

Inputs are one task's pass table, split as CURE lays it out: ``gt_pass`` (bool ``[n_code, n_gt]``: programs x
ground-truth tests) and ``gen_pass`` (bool ``[n_code, n_gen]``: programs x generated tests).

* Coder: reward = the program's mean ground-truth pass rate, z-normalised within the task.
* Tester (Eq. 4): with correct programs = those passing every ground-truth test, a generated test that every correct
  program passes gets ``+1 x`` (share of wrong programs it rejects); any other test gets ``-1 x`` (share of wrong
  programs it passes). With no wrong program the sign alone is used. ``post_stage`` replaces the shares by
  "rejects all wrong programs" / "passes any wrong program". Then z-normalised within the task.
* A task whose rewards are all equal (std 0) gives ``None``: it carries no learning signal and is dropped, as in the
  reference. So does a task with no correct program for the tester reward.
* ``enable_efficient`` (long-CoT models): an all-ones reward vector is kept as is, and the response-length-guided
  transformation :func:`length_regularize` is applied to the normalised rewards.

The rewards are used directly as advantages by the training stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def normalize(rewards: np.ndarray, enable_efficient: bool = False) -> np.ndarray | None:
    """Z-normalise within a task; ``None`` when all equal (reference ``normalize_reward``).

    "All equal" is tested exactly on the values, where the reference tests ``std == 0``: for equal values such as
    1/3, ``np.std`` can be a rounding residue (about 3e-17) instead of 0, and the reference would then turn
    identical rewards into advantages of +-1 from rounding noise. Otherwise the same.
    """
    r = np.asarray(rewards, dtype=float)
    if r.size == 0:
        return None
    if enable_efficient and np.all(r == 1):
        return r
    if np.all(r == r.flat[0]):
        return None
    std = r.std()
    return (r - r.mean()) / std


def _balance_std(x: np.ndarray) -> np.ndarray | None:
    """Scale positives so they sum to the negatives' magnitude, then divide by the std (reference)."""
    x = np.asarray(x, dtype=float).copy()
    pos, neg = x > 0, x < 0
    sum_pos, sum_neg = x[pos].sum(), abs(x[neg].sum())
    if sum_pos * sum_neg == 0:
        return None
    x[pos] *= sum_neg / sum_pos
    return x / x.std()


def length_regularize(
    rewards: np.ndarray, lengths: Sequence[int], max_len_threshold: int = 8000, min_len_threshold: int = 1000
) -> np.ndarray | None:
    """Response-length-guided transformation for long-CoT models (reference ``length_regularize``).

    Positive responses are rewarded for being shorter than the median positive length (clamped to
    [min_len_threshold, max_len_threshold]); negative responses get the lowest such reward; then the positive and
    negative masses are balanced and scaled to unit std. ``None`` when one side is empty.
    """
    sign = np.sign(np.asarray(rewards, dtype=float))
    lengths_arr = np.asarray(lengths, dtype=float)
    pos = np.where(sign == 1)[0]
    neg = np.where(sign == -1)[0]
    if pos.size == 0:
        return None
    pos_len = lengths_arr[pos]
    threshold = float(np.median(pos_len))
    if np.sum((pos_len - threshold) ** 2) == 0:
        return _balance_std(sign)
    threshold = max(min(threshold, max_len_threshold), min_len_threshold)
    out = np.zeros(len(sign), dtype=float)
    out[pos] = threshold - pos_len
    out[neg] = out.min()
    return _balance_std(out)


def _as_table(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=bool)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D boolean table [n_code, n_tests], got shape {arr.shape}")
    return arr


def code_rewards(gt_pass: Any, enable_efficient: bool = False) -> np.ndarray | None:
    """Coder rewards: mean ground-truth pass rate per program, z-normalised; ``None`` when all equal."""
    gt = _as_table(gt_pass, "gt_pass")
    if gt.shape[0] == 0 or gt.shape[1] == 0:
        return None
    return normalize(gt.mean(axis=1), enable_efficient)


def raw_unit_test_rewards(gt_pass: Any, gen_pass: Any, post_stage: bool = False) -> np.ndarray | None:
    """Eq. 4 before normalisation; ``None`` when no program is correct or there is no generated test."""
    gt = _as_table(gt_pass, "gt_pass")
    gen = _as_table(gen_pass, "gen_pass")
    if gt.shape[0] != gen.shape[0]:
        raise ValueError(f"gt_pass has {gt.shape[0]} programs but gen_pass has {gen.shape[0]}")
    if gen.shape[1] == 0 or gt.shape[1] == 0:
        return None
    correct = gt.all(axis=1)
    if not correct.any():
        return None
    test_ok = gen[correct].all(axis=0)  # passes every correct program
    reward = np.where(test_ok, 1.0, -1.0)
    wrong = ~correct
    if wrong.any():
        wrong_rows = gen[wrong]
        if post_stage:
            reject_share = (~wrong_rows.any(axis=0)).astype(float)  # rejects every wrong program
            pass_share = wrong_rows.any(axis=0).astype(float)  # passes some wrong program
        else:
            reject_share = (~wrong_rows).mean(axis=0)
            pass_share = wrong_rows.mean(axis=0)
        reward = reward * np.where(test_ok, reject_share, pass_share)
    return reward


def unit_test_rewards(
    gt_pass: Any, gen_pass: Any, post_stage: bool = False, enable_efficient: bool = False
) -> np.ndarray | None:
    """Tester rewards (Eq. 4), z-normalised; ``None`` when no program is correct or all rewards are equal."""
    raw = raw_unit_test_rewards(gt_pass, gen_pass, post_stage)
    if raw is None:
        return None
    return normalize(raw, enable_efficient)


def task_rewards(
    gt_pass: Any,
    gen_pass: Any,
    *,
    post_stage: bool = False,
    enable_efficient: bool = False,
    code_lengths: Sequence[int] | None = None,
    test_lengths: Sequence[int] | None = None,
    max_len_threshold: int = 8000,
    min_len_threshold: int = 1000,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Both roles' rewards for one task, with the length transformation when ``enable_efficient``."""
    code = code_rewards(gt_pass, enable_efficient)
    test = unit_test_rewards(gt_pass, gen_pass, post_stage, enable_efficient)
    if enable_efficient:
        if code is not None:
            if code_lengths is None:
                raise ValueError("enable_efficient needs code_lengths")
            code = length_regularize(code, code_lengths, max_len_threshold, min_len_threshold)
        if test is not None:
            if test_lengths is None:
                raise ValueError("enable_efficient needs test_lengths")
            test = length_regularize(test, test_lengths, max_len_threshold, min_len_threshold)
    return code, test


# --- label-free coder rewards (generated tests in place of ground truth) --------------------------------

TEST_WEIGHTINGS = ("uniform", "agreement")


def test_weights(gen_pass: Any, test_valid: Sequence[bool] | None = None, weighting: str = "uniform") -> np.ndarray:
    """Weight of each generated test in the label-free coder reward.

    * ``uniform`` (default, the paper's label-free setting): every extracted test counts once, as a ground-truth
      test would. A test that could not be extracted (``test_valid`` False) weighs 0: it is not a test.
    * ``agreement``: each extracted test is weighted by the share of the task's programs that pass it. A wrong
      test (wrong expected output) is usually failed by most programs, correct ones included, so it gets little
      weight; a test most programs agree with is likely correct. This trades some signal from hard tests (which
      reject most programs) for robustness to a noisy tester; use it when the tester's unit-test accuracy is low.
    """
    gen = _as_table(gen_pass, "gen_pass")
    n_gen = gen.shape[1]
    if test_valid is None:
        w = np.ones(n_gen)
    else:
        w = np.asarray(test_valid, dtype=float)
        if w.shape != (n_gen,):
            raise ValueError(f"test_valid has {w.size} entries for {n_gen} generated tests")
    if weighting == "agreement":
        w = w * (gen.mean(axis=0) if gen.shape[0] else 0.0)
    elif weighting != "uniform":
        raise ValueError(f"unknown test weighting {weighting!r}: choose one of {', '.join(TEST_WEIGHTINGS)}")
    return w


test_weights.__test__ = False  # not a pytest test despite the name


def generated_test_pass_rate(gen_pass: Any, weights: Any) -> np.ndarray | None:
    """Each program's weighted share of generated tests passed; ``None`` when no test has weight."""
    gen = _as_table(gen_pass, "gen_pass")
    w = np.asarray(weights, dtype=float)
    if gen.shape[0] == 0 or w.sum() <= 0:
        return None
    return gen.astype(float) @ w / w.sum()


def label_free_code_rewards(
    gen_pass: Any, test_valid: Sequence[bool] | None = None, weighting: str = "uniform", enable_efficient: bool = False
) -> np.ndarray | None:
    """Coder rewards from generated tests alone (``reward.code_reward_source=generated_tests``): the weighted
    generated-test pass rate (:func:`test_weights`), z-normalised within the task; ``None`` when all equal or when
    the task has no usable generated test. Ground-truth tests are not read, so a task may have none."""
    rate = generated_test_pass_rate(gen_pass, test_weights(gen_pass, test_valid, weighting))
    if rate is None or np.ptp(rate) == 0:  # equal rates can differ in the last bit of the std: no signal
        return None
    return normalize(rate, enable_efficient)
