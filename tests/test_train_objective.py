"""The objective's math and the data layout, without a training engine."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from train_fixtures import tiny_model  # noqa: F401  (session fixture)

from cure.train.data import (
    Sample,
    TrainDataError,
    group_for_packing,
    make_micro_batches,
    split_by_role,
    tokenize_records,
)
from cure.train.objective import (
    clipped_policy_loss,
    entropy_from_logits,
    gather_logprobs,
    kl_estimate,
    masked_mean,
    micro_batch_loss,
)

floats = st.floats(min_value=-5, max_value=5, allow_nan=False)


def test_gather_logprobs_matches_log_softmax_in_chunks():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50)
    labels = torch.randint(0, 50, (3, 7))
    expected = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    assert torch.allclose(gather_logprobs(logits, labels, chunk_rows=4), expected, atol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        gather_logprobs(logits, labels[:, :3])


def test_entropy_uniform_and_peaked():
    uniform = torch.zeros(2, 16)
    assert torch.allclose(entropy_from_logits(uniform), torch.full((2,), math.log(16)), atol=1e-6)
    peaked = torch.tensor([[100.0, 0.0, 0.0]])
    assert entropy_from_logits(peaked).item() < 1e-6


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(floats, floats), min_size=1, max_size=20))
def test_kl_estimators(pairs):
    lp = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    ref = torch.tensor([b for _, b in pairs], dtype=torch.float64)
    k1, k2, k3 = (kl_estimate(lp, ref, k) for k in ("k1", "k2", "k3"))
    assert torch.allclose(k1, lp - ref)
    assert torch.allclose(k2, 0.5 * (lp - ref) ** 2)
    assert (k3 >= -1e-12).all()  # k3 is never negative
    assert torch.allclose(kl_estimate(lp, lp, "k3"), torch.zeros_like(lp))


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k1, k2 or k3"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k4")


def test_policy_loss_at_ratio_one_is_reinforce():
    logprobs = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 0.5])
    loss, ratio, clipped = clipped_policy_loss(logprobs, logprobs.detach(), adv, 0.2)
    assert torch.equal(ratio, torch.ones(3))
    assert not clipped.any()
    loss.sum().backward()
    assert torch.allclose(logprobs.grad, -adv)  # d/dlogp of -A * exp(logp - logp_old) at ratio 1


def test_policy_loss_clips_gradient_outside_the_trust_region():
    old = torch.zeros(2)
    logprobs = torch.tensor([math.log(1.5), math.log(0.5)], requires_grad=True)  # ratios 1.5 and 0.5
    adv = torch.tensor([1.0, -1.0])  # both moved further than eps in the advantage's direction
    loss, ratio, clipped = clipped_policy_loss(logprobs, old, adv, 0.2)
    assert clipped.all()
    assert torch.allclose(loss, torch.tensor([-1.2, 0.8]))
    loss.sum().backward()
    assert torch.equal(logprobs.grad, torch.zeros(2))


def test_micro_batch_loss_before_first_update():
    lp = torch.tensor([-1.0, -0.3, -2.2])
    adv = torch.tensor([0.7, 0.7, -0.2])
    parts = micro_batch_loss(lp, lp.clone(), lp.clone(), adv, kl_coef=0.01)
    assert parts.kl.item() == 0.0
    assert parts.ratio_mean.item() == 1.0
    assert parts.clip_frac.item() == 0.0
    assert parts.pg_loss.item() == pytest.approx(-adv.mean().item())  # token mean over the micro batch
    assert parts.tokens == 3
    with pytest.raises(ValueError, match="ref_logprobs"):
        micro_batch_loss(lp, lp, None, adv)
    with pytest.raises(ValueError, match="no response tokens"):
        micro_batch_loss(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0))


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    assert masked_mean(x, m).item() == 1.5
    assert torch.allclose(masked_mean(x, m, dim=1), torch.tensor([1.5, 0.0]))
    assert masked_mean(x).item() == 3.5


# ------------------------------------------------------------------------------------------------- data


def _samples(lengths: list[tuple[int, int]]) -> list[Sample]:
    out = []
    for i, (p, r) in enumerate(lengths):
        out.append(Sample(i, list(range(10, 10 + p)), list(range(100, 100 + r)), float(i) - 1, "coder", "t", False))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=1, max_size=15), st.integers(16, 40))
def test_packing_groups_and_targets(lengths, max_len):
    samples = _samples(lengths)
    groups = group_for_packing(samples, max_len)
    assert [s.index for g in groups for s in g] == list(range(len(samples)))  # order kept, nothing lost
    assert all(sum(s.length for s in g) <= max_len for g in groups)
    for g1, g2 in zip(groups, groups[1:], strict=False):  # greedy: the next sample did not fit
        assert sum(s.length for s in g1) + g2[0].length > max_len
    for layout in ("pack", "pad"):
        for mb in make_micro_batches(samples, max_len, pad_token_id=0, layout=layout):
            flat = mb.input_ids.reshape(-1)
            # the logits row at target_index predicts the token right after it, which is the response token
            assert torch.equal(flat[mb.target_index + 1], mb.target_ids)
            assert mb.response_tokens == sum(len(samples[i].response_ids) for i in set(mb.sample_index.tolist()))
            for i in set(mb.sample_index.tolist()):
                assert torch.all(mb.advantages[mb.sample_index == i] == samples[i].reward)


def test_packed_positions_restart_per_sequence():
    mb = make_micro_batches(_samples([(2, 1), (1, 2)]), 10, 0, "pack")[0]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert mb.attention_mask is None
    padded = make_micro_batches(_samples([(2, 1), (1, 1)]), 10, 7, "pad")[0]
    assert padded.input_ids[1].tolist() == [10, 100, 7]
    assert padded.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_too_long_sample_names_the_fix():
    with pytest.raises(TrainDataError, match="packing_max_len"):
        group_for_packing(_samples([(5, 6)]), 10)


def test_tokenize_end_token_truncation_and_empty(tiny_model):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    eos = tok.eos_token_id
    recs = [
        {"prompt": "User: add", "response": "print(1)", "reward": 1.0, "role": "coder", "task_id": "a", "truncated": False},
        {"prompt": "User: add", "response": "print(1)", "reward": 1.0, "role": "coder", "task_id": "a", "truncated": True},
        {"prompt": "User: add", "response": "", "reward": 0.5, "role": "tester", "task_id": "a"},
        {"prompt": "User: add", "response": "x " * 40, "reward": -1.0, "role": "tester", "task_id": "b"},
    ]
    samples, stats = tokenize_records(recs, tok, prompt_max_len=3, generate_max_len=10)
    assert stats == {"records": 4, "dropped_empty": 1, "truncated": 2, "cut": 1}
    finished, cut_off, long = samples
    assert finished.response_ids[-1] == eos  # stopped by itself: the end token is trained
    assert cut_off.response_ids[-1] != eos and finished.response_ids[:-1] == cut_off.response_ids
    assert len(long.response_ids) == 10 and not long.response_ids.count(eos)  # no flag, long: counts as truncated
    assert all(len(s.prompt_ids) <= 3 for s in samples)
    assert [name for name, _ in split_by_role(samples, True)] == ["coder", "tester"]
    assert [name for name, _ in split_by_role(samples, False)] == ["all"]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"prompt": "p", "response": "r", "reward": float("nan"), "role": "coder"}, "reward"),
        ({"prompt": "p", "response": "r", "reward": True, "role": "coder"}, "reward"),
        ({"prompt": "p", "response": "r", "reward": 1.0, "role": "judge"}, "role"),
        ({"prompt": "p", "reward": 1.0, "role": "coder"}, "response"),
    ],
)
def test_bad_records_name_the_row_and_field(tiny_model, bad, field):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    good = {"prompt": "p", "response": "r", "reward": 0.0, "role": "coder", "task_id": "x"}
    with pytest.raises(TrainDataError, match=rf"training record 1 .*'{field}'"):
        tokenize_records([good, bad], tok, 8, 8)
