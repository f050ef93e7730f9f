"""Batch semantics of the trainer (TRL / MUSEG): completion layout over ranks, step counts, the
one-group-per-micro-step case against a hand-written GRPO step, seeded sampling independent of the
batch, and the one-line error of a decode worker that cannot start.

The two-process equivalence (a group split over two gloo ranks == one process) is in
``tests/rl/test_trainer.py::test_two_process_group_split_matches_single_process``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from helpers_rl import scripted_rollout, tiny_train_cfg
from safetensors.torch import load_file

from museg.data.video import DecodeWorkerError
from museg.rl.batch import (
    prompts_per_micro_step,
    rank_runs,
    steps_per_epoch,
)
from museg.rl.builders import TrainError
from museg.rl.recipe import StepRecord
from museg.rl.trainer import train


@pytest.mark.parametrize(("pd", "world", "g"), [(1, 8, 8), (8, 1, 8), (4, 2, 8), (12, 2, 8),
                                                (3, 8, 8), (32, 1, 8), (2, 3, 2)])
def test_rank_runs_cover_every_completion_once_in_order(pd, world, g):
    p = prompts_per_micro_step(pd, world, g)
    flat = [(pos, gen) for r in range(world) for pos, a, b in rank_runs(pd, world, g, r)
            for gen in range(a, b)]
    assert flat == [(k // g, k % g) for k in range(p * g)]  # completion k -> prompt k // G
    for r in range(world):
        assert sum(b - a for _, a, b in rank_runs(pd, world, g, r)) == pd


def test_indivisible_batch_and_too_little_data_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of num_generations 4"):
        prompts_per_micro_step(3, 1, 4)
    with pytest.raises(TrainError, match="per_device_train_batch_size") as e:
        train(tiny_train_cfg(tmp_path, train__per_device_train_batch_size=6))
    assert "\n" not in str(e.value)
    # 6 prompts < 8 per optimizer step (1 per micro-step x 8): no full step in an epoch
    with pytest.raises(TrainError, match="6 prompts < 8 prompts per optimizer step") as e:
        train(tiny_train_cfg(tmp_path, train__max_steps=-1, train__gradient_accumulation_steps=8))
    assert "\n" not in str(e.value)


def test_step_count_is_floor_of_prompts_over_prompts_per_step(tmp_path):
    assert steps_per_epoch(5600, 1 * 2) == 2800  # MUSEG stage 1: 1 prompt x 2 accumulation
    assert steps_per_epoch(6, 4) == 1
    # 6 prompts, P = 1 (per_device = G on one process), A = 4: floor(6 / 4) = 1 step per epoch
    records: list[StepRecord] = []
    cfg = tiny_train_cfg(tmp_path, train__max_steps=-1, train__num_train_epochs=2,
                         train__gradient_accumulation_steps=4, train__completions_every=0,
                         train__beta=0.0, train__num_generations=2, train__save_steps=100)
    summary = train(cfg, on_step=records.append, rollout_fn=scripted_rollout)
    assert summary["total_steps"] == summary["step"] == 2
    assert [r.positions.tolist() for r in records] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(r.rewards["total"].numel() == 4 * 2 for r in records)
    state = json.loads((Path(summary["latest_checkpoint"]) / "trainer_state.json").read_text())
    assert state["data"]["consumed"] == 8 and state["data"]["prompts_per_step"] == 4


def test_one_group_per_micro_step_matches_hand_written_grpo_step(tmp_path):
    """World 1, per_device = G: the previous behaviour (one prompt = one group per micro-step,
    each micro-step's sequence-mean loss / gradient_accumulation_steps) computed by hand."""
    from museg.data.prompts import build_question
    from museg.data.video import decode_video, video_spec_from_cfg
    from museg.dist import DistInfo
    from museg.model.inputs import build_prompt_text, build_video_inputs
    from museg.rewards.registry import compute_rewards
    from museg.rl.advantages import group_advantages
    from museg.rl.batch import DataOrder
    from museg.rl.builders import build_models, load_train_samples
    from museg.rl.forward import forward_inputs
    from museg.rl.loss import completion_logps, grpo_loss

    g, accum = 4, 2
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, train__completions_every=0)
    assert int(cfg.train.per_device_train_batch_size) == g
    records: list[StepRecord] = []
    summary = train(cfg, on_step=records.append, rollout_fn=scripted_rollout)

    policy, processor, _, _ = build_models(cfg, DistInfo())
    samples = load_train_samples(cfg)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(cfg.train.learning_rate), weight_decay=0.0)
    pad = processor.tokenizer.pad_token_id or 0
    spec = video_spec_from_cfg(cfg.video)
    total, rewards = 0.0, []
    for idx in DataOrder(len(samples), 42, shuffle=True).indices(0, accum):
        s = samples[idx]
        video = decode_video(s.video_path, spec, backend="torchcodec")
        text = build_prompt_text(processor, build_question(str(cfg.stage.template), s.problem))
        inputs = build_video_inputs(processor, [text], [video])
        roll = scripted_rollout(policy, processor, inputs, g, 8, sample=s)
        r = compute_rewards(roll.texts, [s.solution] * g, dict(cfg.reward.weights))["total"]
        rewards += r
        adv, _ = group_advantages(torch.tensor(r), g)
        mask = roll.completion_mask.float()
        batch = forward_inputs([inputs] * g, roll.completion_ids, mask, pad)
        logps = completion_logps(policy, batch, roll.completion_ids)
        # beta 0.04, but the reference is the policy at step 1: KL and its gradient are 0
        loss, _ = grpo_loss(logps, adv, mask, ref_logps=logps.detach(), beta=0.04)
        (loss / accum).backward()
        total += float(loss.detach()) / accum
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
    opt.step()

    rec = records[0]
    assert rec.rewards["total"].tolist() == pytest.approx(rewards, abs=1e-6)
    assert rec.metrics["loss"] == pytest.approx(total, rel=1e-5, abs=1e-7)
    assert rec.metrics["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    after = load_file(Path(summary["latest_checkpoint"]) / "model.safetensors")
    mine = {k: v.detach() for k, v in policy.state_dict().items()}
    assert set(after) <= set(mine)
    assert all(torch.allclose(after[k], mine[k], rtol=1e-5, atol=1e-7) for k in after)


def test_seeded_sampling_does_not_depend_on_the_batch(cfg_train):
    """Completion (seed) is the same whether generated with 3 others, alone, or next to another
    prompt; and the Gumbel-max sampler draws from softmax(logits / T) within the top-p nucleus."""
    from helpers_rl import SYNTHETIC  # noqa: F401 (env set-up)

    from museg.data.sources import materialize_synthetic
    from museg.data.video import decode_video, video_spec_from_cfg
    from museg.dist import DistInfo
    from museg.generation.seeded import SeededGumbelSampler, sample_completions
    from museg.model.inputs import build_prompt_text, build_video_inputs
    from museg.rl.builders import build_models, load_train_samples

    cfg = cfg_train
    materialize_synthetic(cfg)
    model, processor, _, _ = build_models(cfg, DistInfo())
    samples = load_train_samples(cfg)[:2]
    spec = video_spec_from_cfg(cfg.video)
    inputs = [build_video_inputs(processor, [build_prompt_text(processor, s.problem)],
                                 [decode_video(s.video_path, spec)]) for s in samples]
    seeds = [11, 12, 13, 14]
    whole = sample_completions(model, processor, [inputs[0]] * 4, seeds, 12)
    halves = [sample_completions(model, processor, [inputs[0]] * 2, seeds[i:i + 2], 12)
              for i in (0, 2)]
    mixed = sample_completions(model, processor, [inputs[1], inputs[0], inputs[1]],
                               [99, 13, 98], 12)
    assert whole.texts == halves[0].texts + halves[1].texts
    assert mixed.texts[1] == whole.texts[2]  # next to a different (longer/shorter) prompt
    assert len(set(whole.texts)) > 1  # different seeds, different samples
    # distribution: 4000 seeded rows over fixed logits, temperature 0.5, top-p 0.9
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    n = 4000
    picks = SeededGumbelSampler(range(n), temperature=0.5, top_p=0.9)(
        None, logits.repeat(n, 1)).argmax(-1)
    p = torch.softmax(logits / 0.5, -1)
    keep = (torch.cumsum(p, 0) - p) < 0.9
    want = torch.where(keep, p, 0.0) / p[keep].sum()
    freq = torch.bincount(picks, minlength=5).float() / n
    assert torch.allclose(freq, want, atol=0.025), (freq, want)
    assert freq[~keep].sum() == 0


def test_decode_worker_that_cannot_start_is_a_one_line_error(tmp_path, monkeypatch):
    from helpers_rl import die_at_start

    import museg.data.video.worker as worker

    monkeypatch.setattr(worker, "_worker_main", die_at_start)
    monkeypatch.setattr(worker, "_POOL", None)  # fresh workers for this test
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, video__decode_timeout_s=30,
                         video__prefetch=0)
    with pytest.raises(DecodeWorkerError, match="decode worker process could not start") as e:
        train(cfg, rollout_fn=scripted_rollout)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(os.fspath(cfg.paths.video_root))
    assert "fix:" in msg and "EOFError" in msg
    worker._shutdown()


def test_ranks_agree_on_replacements_when_only_one_rank_fails(tmp_path):
    """Sample 0's video fails on rank 1 only (a timeout can hit one rank): both ranks hold parts of
    its group, so both must swap it for the same replacement; later steps avoid it on both."""
    import socket

    import torch.multiprocessing as mp
    from helpers_rl import batch_worker
    from omegaconf import OmegaConf

    from museg.data.sources import materialize_synthetic

    cfg = tiny_train_cfg(tmp_path)
    materialize_synthetic(cfg)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(batch_worker, args=(2, port, OmegaConf.to_yaml(cfg), str(bad), str(tmp_path)),
             nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"batch{i}.json").read_text()) for i in range(2))
    sources = r0["sources"]
    # MUSEG-like layout: 1 completion per rank, G = 2: each prompt's group spans both ranks
    assert [[(s["micro"], s["position"], s["gens"]) for s in st] for st in r0["steps"]] == \
        [[(0, 0, [0]), (1, 1, [0])], [(0, 2, [0]), (1, 3, [0])]]
    assert [[s["gens"] for s in st] for st in r1["steps"]] == [[[1], [1]], [[1], [1]]]
    used0 = [[s["source"] for s in st] for st in r0["steps"]]
    used1 = [[s["source"] for s in st] for st in r1["steps"]]
    assert used0 == used1  # same samples on both ranks
    assert used0[0][0] != sources[0] and r0["steps"][0][0]["replaced_from"] == [sources[0]]
    assert used0[0][1:] == [sources[1]] and used0[1] == sources[2:4]
    assert r0["num_replaced"] == r1["num_replaced"] == 1
    assert len(r0["failed"]) == len(r1["failed"]) == 1  # rank 0 learned rank 1's failure
    q = (tmp_path / "quarantine.jsonl").read_text().splitlines()
    assert len(q) == 1 and json.loads(q[0])["position"] == 0
