"""Rewards and metrics against plain-Python restatements of the paper's definitions, on random tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cure.metrics import summarize, tables_from_executions
from cure.reward import code_rewards, length_regularize, normalize, raw_unit_test_rewards, unit_test_rewards


@st.composite
def task_tables(draw, max_code=8, max_gt=5, max_gen=8):
    n_code = draw(st.integers(1, max_code))
    n_gt = draw(st.integers(1, max_gt))
    n_gen = draw(st.integers(0, max_gen))
    # bias towards structure: some rows all-pass on gt
    gt = draw(arrays(bool, (n_code, n_gt)))
    all_pass_rows = draw(st.lists(st.booleans(), min_size=n_code, max_size=n_code))
    gt[np.array(all_pass_rows)] = True
    gen = draw(arrays(bool, (n_code, n_gen)))
    return gt, gen


def spec_zscore(values):
    n = len(values)
    if len(set(values)) == 1:  # all equal: no signal (exact, not a rounding-prone variance test)
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return [(v - mean) / math.sqrt(var) for v in values]


def spec_code_rewards(gt):
    return spec_zscore([sum(row) / len(row) for row in gt.tolist()])


def spec_unit_test_raw(gt, gen, post_stage):
    rows = gt.tolist()
    correct = [i for i, r in enumerate(rows) if all(r)]
    wrong = [i for i, r in enumerate(rows) if not all(r)]
    if not correct or gen.shape[1] == 0:
        return None
    out = []
    for k in range(gen.shape[1]):
        passes_all_correct = all(gen[i, k] for i in correct)
        if not wrong:
            out.append(1.0 if passes_all_correct else -1.0)
            continue
        wrong_passes = [bool(gen[i, k]) for i in wrong]
        if passes_all_correct:
            share = (0.0 if any(wrong_passes) else 1.0) if post_stage else sum(not p for p in wrong_passes) / len(wrong)
            out.append(share)
        else:
            share = (1.0 if any(wrong_passes) else 0.0) if post_stage else sum(wrong_passes) / len(wrong)
            out.append(-share)
    return out


@settings(max_examples=300, deadline=None)
@given(task_tables())
def test_code_rewards_match_definition(tables):
    gt, _ = tables
    got = code_rewards(gt)
    want = spec_code_rewards(gt)
    if want is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, want, atol=1e-9)
        assert abs(got.mean()) < 1e-9 and abs(got.std() - 1) < 1e-9


@settings(max_examples=300, deadline=None)
@given(task_tables(), st.booleans())
def test_unit_test_rewards_match_eq4(tables, post_stage):
    gt, gen = tables
    raw = spec_unit_test_raw(gt, gen, post_stage)
    got_raw = raw_unit_test_rewards(gt, gen, post_stage)
    got = unit_test_rewards(gt, gen, post_stage)
    if raw is None:
        assert got_raw is None and got is None
        return
    np.testing.assert_allclose(got_raw, raw, atol=1e-12)
    want = spec_zscore(raw)
    if want is None:
        assert got is None
    else:
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_unit_test_reward_examples():
    # 2 correct programs (rows 0,1), 2 wrong (rows 2,3); tests: t0 correct and rejects both wrong,
    # t1 correct but passes both wrong, t2 wrong (fails a correct program) and passes one wrong program.
    gt = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], bool)
    gen = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1], [0, 1, 0]], bool)
    np.testing.assert_allclose(raw_unit_test_rewards(gt, gen), [1.0, 0.0, -0.5])
    np.testing.assert_allclose(raw_unit_test_rewards(gt, gen, post_stage=True), [1.0, 0.0, -1.0])
    assert unit_test_rewards(np.zeros((3, 2), bool), np.ones((3, 2), bool)) is None  # no correct program
    assert unit_test_rewards(np.ones((3, 2), bool), np.ones((3, 4), bool)) is None  # all equal
    assert code_rewards(np.ones((4, 3), bool)) is None


def test_normalize_efficient_keeps_all_ones():
    assert normalize(np.ones(4)) is None
    np.testing.assert_array_equal(normalize(np.ones(4), enable_efficient=True), np.ones(4))


def test_length_regularize_prefers_short_correct_responses():
    rewards = np.array([1.0, 1.0, 1.0, -1.0, -1.0])
    lengths = [1200, 3000, 2000, 500, 900]
    out = length_regularize(rewards, lengths, max_len_threshold=8000, min_len_threshold=1000)
    assert out is not None
    assert out[0] > out[2] > out[1]  # shorter correct answers rewarded more
    assert out[3] == out[4] == out.min()
    np.testing.assert_allclose(out[out > 0].sum(), -out[out < 0].sum())  # balanced masses
    np.testing.assert_allclose(out.std(), 1.0)
    # no variance among positive lengths -> balanced signs
    flat = length_regularize(rewards, [100, 100, 100, 5, 5])
    assert flat is not None and np.all(flat[:3] > 0) and np.all(flat[3:] < 0)
    assert length_regularize(np.array([-1.0, -1.0]), [1, 2]) is None


# --- metrics ----------------------------------------------------------------------------------------


def spec_summarize(tables, scales):
    """The reference's accumulation loop, restated."""
    s = dict.fromkeys(["cs", "cn", "cas", "can", "ts", "tn", "tas", "tan", "p1s", "p1n", "p0s", "p0n", "ds", "dn"], 0)
    bon = {sc: [0, 0, 0, 0] for sc in scales}
    for gt, gen in tables:
        rows = gt.tolist()
        n_code = len(rows)
        correct = [i for i in range(n_code) if all(rows[i])]
        s["cs"] += len(correct)
        s["cn"] += n_code
        s["cas"] += sum(map(sum, rows))
        s["can"] += n_code * gt.shape[1]
        n_gen = gen.shape[1]
        if n_gen == 0:
            continue
        if correct:
            ok_tests = [k for k in range(n_gen) if all(gen[i, k] for i in correct)]
            s["ts"] += len(ok_tests)
            s["tn"] += n_gen
            s["tas"] += sum(int(gen[i, k]) for i in correct for k in range(n_gen))
            s["tan"] += len(correct) * n_gen
            wrong = [i for i in range(n_code) if i not in correct]
            bad_tests = [k for k in range(n_gen) if k not in ok_tests]
            if wrong:
                if ok_tests:
                    s["p1s"] += sum(int(not gen[i, k]) for i in wrong for k in ok_tests)  # rejections, as eval.py
                    s["p1n"] += len(wrong) * len(ok_tests)
                    s["ds"] += sum(1 for k in ok_tests if any(not gen[i, k] for i in wrong))
                    s["dn"] += len(ok_tests)
                if bad_tests:
                    s["p0s"] += sum(int(gen[i, k]) for i in wrong for k in bad_tests)
                    s["p0n"] += len(wrong) * len(bad_tests)
        for n, m in scales:
            votes = [sum(gen[i, :m]) for i in range(min(n, n_code))]
            best = votes.index(max(votes))
            row = rows[best]
            b = bon[(n, m)]
            b[0] += int(all(row))
            b[1] += 1
            b[2] += sum(row)
            b[3] += len(row)

    def div(a, b):
        return a / b if b else 0.0

    out = {
        "code_acc": div(s["cs"], s["cn"]),
        "code_acc_accumulate": div(s["cas"], s["can"]),
        "unit_test_acc": div(s["ts"], s["tn"]),
        "unit_test_acc_accumulate": div(s["tas"], s["tan"]),
        "p01": 1 - div(s["p1s"], s["p1n"]),  # eval.py prints 1 - p_01
        "p00": div(s["p0s"], s["p0n"]),
        "discriminative_test_share": div(s["ds"], s["dn"]),
    }
    for (n, m), b in bon.items():
        out[f"bon_{n}x{m}"] = div(b[0], b[1])
        out[f"bon_{n}x{m}_accumulate"] = div(b[2], b[3])
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(task_tables(), min_size=1, max_size=6), st.sampled_from([((4, 4), (16, 16)), ((2, 1), (8, 3))]))
def test_summarize_matches_reference_loop(tables, scales):
    got = summarize(tables, scales)
    want = spec_summarize(tables, scales)
    for k, v in want.items():
        assert got[k] == pytest.approx(v), k
    assert got["num_tasks"] == len(tables)


def test_bon_picks_first_on_ties_and_scores_on_ground_truth():
    gt = np.array([[0, 0], [1, 1], [1, 1]], bool)
    gen = np.array([[1, 1], [1, 1], [0, 0]], bool)  # rows 0 and 1 tie; argmax picks row 0 (wrong)
    m = summarize([(gt, gen)], scales=[(3, 2), (3, 0)])
    assert m["bon_3x2"] == 0.0
    assert m["bon_3x0"] == 0.0  # all votes 0 -> first program
    m = summarize([(gt[1:], gen[1:])], scales=[(2, 2)])
    assert m["bon_2x2"] == 1.0


def test_tables_from_executions():
    rec = {"task_id": "t", "num_gt": 2, "passed": [[True, False, True], [True, True, False]]}
    (gt, gen), = tables_from_executions([rec])
    assert gt.shape == (2, 2) and gen.shape == (2, 1)
    assert summarize([(gt, gen)])["code_acc"] == 0.5


def test_equal_rewards_with_a_rounding_residue_carry_no_signal():
    """Ten equal pass rates of 1/3: np.std is 5.6e-17 there, not 0; they must not become +-1 advantages."""
    r = np.full(10, 1 / 3)
    assert np.std(r) > 0  # the rounding residue this guards against
    assert normalize(r) is None
    assert normalize(np.array([1 / 3, 1 / 3, 2 / 3])) is not None
