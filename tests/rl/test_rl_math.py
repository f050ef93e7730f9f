"""GRPO math against hand-computed values: advantages, log-probs, k3 KL, clipping, aggregations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from museg.rl.advantages import group_advantages
from museg.rl.loss import aggregate, grpo_loss, k3_kl, selective_log_softmax
from museg.rl.timer import StepTimer, overhead_fraction


# ------------------------------------------------------------------------------- advantages
def test_advantages_unbiased_std_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    adv, std = group_advantages(r, num_generations=4)
    s = math.sqrt((1.5**2 + 0.5**2 + 0.5**2 + 1.5**2) / 3)  # Bessel: divide by G - 1
    want = [d / (s + 1e-4) for d in (-1.5, -0.5, 0.5, 1.5)] + [0.0] * 4
    assert adv.tolist() == pytest.approx(want, rel=1e-6)
    assert std.tolist() == pytest.approx([s, 0.0], rel=1e-6)
    assert float(std[0]) == pytest.approx(float(torch.tensor([1.0, 2, 3, 4]).std()))


def test_advantages_without_scaling_and_sign():
    r = torch.tensor([0.0, 3.0, 1.0])
    adv, _ = group_advantages(r, 3, scale_rewards=False)
    assert adv.tolist() == pytest.approx([-4 / 3, 5 / 3, -1 / 3])
    assert adv.argmax() == r.argmax() and adv.argmin() == r.argmin()


def test_advantages_reject_bad_groups():
    with pytest.raises(ValueError, match="num_generations"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="flat"):
        group_advantages(torch.zeros(2, 2), 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=8, max_size=8))
def test_advantages_sum_to_zero_per_group(vals):
    adv, _ = group_advantages(torch.tensor(vals), 4)
    assert abs(float(adv[:4].sum())) < 1e-3 and abs(float(adv[4:].sum())) < 1e-3


# ------------------------------------------------------------------------------- log-probs, KL
def test_selective_log_softmax_matches_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    ids = torch.randint(11, (3, 5), generator=g)
    want = torch.log_softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(selective_log_softmax(logits, ids), want, atol=1e-6)


def test_k3_by_hand_and_nonnegative():
    kl = k3_kl(torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, -2.0]))
    assert kl.tolist() == pytest.approx([math.e - 2, 0.0, math.exp(-2) + 2 - 1])
    x = torch.randn(1000)
    assert (k3_kl(x, torch.randn(1000)) >= 0).all()


# ------------------------------------------------------------------------------- aggregation
X = torch.tensor([[1.0, 3.0, 100.0], [2.0, 2.0, 5.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])


def test_aggregations_by_hand():
    assert aggregate(X, M, "sequence").item() == pytest.approx((2.0 + 3.0) / 2)
    assert aggregate(X, M, "token").item() == pytest.approx((1 + 3 + 2 + 2 + 5) / 5)
    assert aggregate(X, M, "dr_grpo", max_completion_length=10).item() == pytest.approx(13 / 20)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate(X, M, "dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        aggregate(X, M, "bogus")


# ------------------------------------------------------------------------------- GRPO loss
def _clip_case():
    logps = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]]))
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return logps, old, adv, mask


@pytest.mark.parametrize("loss_type,want", [
    # per-token losses: seq0 (A=+1): -min(1.5,1.2)=-1.2, -min(.5,.8)=-0.5 (third masked)
    #                   seq1 (A=-1): -min(-1.5,-1.2)=1.5, -min(-.5,-.8)=0.8, -min(-1,-1)=1.0
    ("sequence", ((-1.2 - 0.5) / 2 + (1.5 + 0.8 + 1.0) / 3) / 2),
    ("token", (-1.2 - 0.5 + 1.5 + 0.8 + 1.0) / 5),
    ("dr_grpo", (-1.2 - 0.5 + 1.5 + 0.8 + 1.0) / (2 * 4)),
])
def test_grpo_loss_clipping_by_hand(loss_type, want):
    logps, old, adv, mask = _clip_case()
    loss, stats = grpo_loss(logps, adv, mask, old_logps=old, loss_type=loss_type,
                            max_completion_length=4)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert stats["clip_ratio"] == pytest.approx(2 / 5)  # seq0 tok0 (>1.2, A>0), seq1 tok1


def test_grpo_loss_asymmetric_clip():
    logps, old, adv, mask = _clip_case()
    loss, _ = grpo_loss(logps, adv, mask, old_logps=old, epsilon_high=0.28, loss_type="token")
    assert loss.item() == pytest.approx((-1.28 - 0.5 + 1.5 + 0.8 + 1.0) / 5, rel=1e-5)


def test_on_policy_ratio_is_one_and_gradient_is_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, stats = grpo_loss(logps, adv, mask, beta=0.0, loss_type="sequence")
    assert stats["ratio"] == pytest.approx(1.0) and stats["clip_ratio"] == 0.0
    assert loss.item() == pytest.approx(-(2.0 + -1.0) / 2)
    loss.backward()
    want = torch.tensor([[-2.0 / 2 / 2, -2.0 / 2 / 2, 0.0], [1 / 3 / 2] * 3])
    assert torch.allclose(logps.grad, want)


def test_kl_term_by_hand_and_zero_when_equal():
    logps = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[0.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, stats = grpo_loss(logps, torch.tensor([0.0]), mask, ref_logps=ref, beta=0.5,
                            loss_type="token")
    k = math.e - 2
    assert loss.item() == pytest.approx(0.5 * k / 2)
    assert stats["kl"] == pytest.approx(k / 2)
    loss0, stats0 = grpo_loss(logps, torch.tensor([1.0]), mask, ref_logps=logps.clone(), beta=0.04)
    assert stats0["kl"] == 0.0 and loss0.item() == pytest.approx(-1.0)


def test_beta_zero_ignores_reference():
    logps = torch.zeros(1, 2)
    loss, stats = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 2),
                            ref_logps=torch.full((1, 2), -5.0), beta=0.0)
    assert stats["kl"] == 0.0 and loss.item() == pytest.approx(-1.0)


# ------------------------------------------------------------------------------- timer
def test_timer_phases_and_overhead():
    t = StepTimer()
    t.start_step()
    t.add("rollout", 0.5)
    t.add("decode", 0.1)
    times = t.end_step()
    assert times["time/rollout"] == 0.5 and times["time/decode"] == 0.1
    assert times["time/step"] >= 0.0
    assert overhead_fraction({"time/rollout": 9, "time/step": 10}) == pytest.approx(0.1)
