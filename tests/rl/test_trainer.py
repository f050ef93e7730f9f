"""GRPO trainer end to end on CPU: tiny Qwen2.5-VL, real synthetic videos, real rewards.

Rollouts are HF samples; most tests use ``oracle_mix_rollout`` (HF samples with the first
completion of each group replaced by a correct answer) so that rewards differ within a group and
the policy gets a learning signal a random tiny model would never produce on its own.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers_rl import (
    dist_worker,
    good_answer,
    history_by_step,
    oracle_mix_rollout,
    tiny_train_cfg,
)
from omegaconf import OmegaConf
from safetensors.torch import load_file

from museg.model.tiny import build_tiny_model
from museg.rl.advantages import group_advantages
from museg.rl.builders import build_models
from museg.rl.checkpoint import latest_checkpoint
from museg.rl.engine import NonFiniteError, PlainEngine
from museg.rl.recipe import StepRecord
from museg.rl.trainer import train

__all__ = ["tiny_train_cfg"]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def _broken_first_record(cfg, tmp_path: Path) -> str:
    """Point the first training record (position 0 without shuffling) at a corrupt video."""
    from museg.data.sources import materialize_synthetic

    materialize_synthetic(cfg)
    lines = Path(cfg.data.train_file).read_text().splitlines()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    first = json.loads(lines[0])
    first["video"] = str(bad)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    OmegaConf.update(cfg, "data.train_file", str(data))
    return str(bad)


# ---------------------------------------------------------------------------- end to end
def test_grpo_steps_end_to_end(tmp_path):
    cfg = tiny_train_cfg(tmp_path, train__max_steps=2)
    records: list[StepRecord] = []
    summary = train(cfg, on_step=records.append, rollout_fn=oracle_mix_rollout)
    run = Path(cfg.run_dir)
    assert summary["step"] == 2 and not summary["preempted"]
    hist = history_by_step(summary)
    # KL is exactly 0 at the first step: the policy is the reference
    assert hist[1]["kl"] == 0.0
    assert hist[2]["kl"] > 0.0
    for key in ("reward/total", "reward/format", "reward/global_matching", "reward/local_matching",
                "reward/group_std", "kl", "completion_length", "clip_ratio", "lr", "grad_norm",
                "loss", "time/decode", "time/rollout", "time/reward", "time/reference",
                "time/policy", "time/optimizer", "time/step"):
        assert key in hist[1], key
    assert hist[1]["lr"] > hist[2]["lr"] > 0  # linear decay
    # rewards reach the advantages with the right sign
    for rec in records:
        total = rec.rewards["total"]
        adv, _ = group_advantages(total, 4)
        assert torch.allclose(rec.advantages, adv)
        groups = total.view(-1, 4)
        assert (groups[:, 0] > groups[:, 1:].max(1).values).all()  # the correct answer wins
        assert (rec.advantages.view(-1, 4)[:, 0] > 0).all()
        assert (rec.advantages.view(-1, 4)[:, 1:] < 0).all()
    # parameters changed
    init = build_tiny_model()
    before = load_file(init / "model.safetensors")
    after = _final_weights(run)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    # artefacts
    assert (run / "summary.json").is_file() and (run / "reward_curves.png").stat().st_size > 1000
    assert (run / "completions.parquet").is_file()
    rows = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 4 and {"prompt", "completion", "advantage", "reward/total"} <= set(rows[0])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert any((run / "tb").iterdir())
    assert latest_checkpoint(run).name == "step-2"
    assert (run / "final" / "preprocessor_config.json").is_file() or \
        (run / "final" / "processor_config.json").is_file()


def test_beta_zero_loads_no_reference(tmp_path):
    from museg.dist import DistInfo

    cfg = tiny_train_cfg(tmp_path, train__beta=0.0)
    policy, _, ref, _ = build_models(cfg, DistInfo())
    assert ref is None
    cfg2 = tiny_train_cfg(tmp_path, train__beta=0.04)
    _, _, ref2, _ = build_models(cfg2, DistInfo())
    assert ref2 is not None and not any(p.requires_grad for p in ref2.parameters())
    assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(),
                                                  ref2.state_dict().values(), strict=True))


def test_beta_zero_run_has_no_reference_pass(tmp_path):
    cfg = tiny_train_cfg(tmp_path, train__beta=0.0, train__max_steps=1,
                         train__gradient_accumulation_steps=1, train__completions_every=0)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    last = summary["last"]
    assert "time/reference" not in last and last["kl"] == 0.0


# ---------------------------------------------------------------------------- resume
def test_preempt_and_resume_matches_uninterrupted(tmp_path):
    n, k = 4, 2
    full = train(tiny_train_cfg(tmp_path / "a", train__max_steps=n, train__save_steps=100),
                 rollout_fn=oracle_mix_rollout)

    from museg.rl.checkpoint_request import request_checkpoint

    def stop_after_k(rec):
        if rec.step == k:
            request_checkpoint()

    cfg = tiny_train_cfg(tmp_path / "b", train__max_steps=n, train__save_steps=100)
    part = train(cfg, on_step=stop_after_k, rollout_fn=oracle_mix_rollout)
    assert part["preempted"] and part["step"] == k and part["final_dir"] is None
    assert latest_checkpoint(cfg.run_dir).name == f"step-{k}"
    rest = train(cfg, rollout_fn=oracle_mix_rollout)  # resume=auto
    assert rest["resumed_from"].endswith(f"step-{k}") and rest["step"] == n
    hf, hr = history_by_step(full), history_by_step(rest)
    assert sorted(hr) == list(range(1, n + 1))  # history restored, no duplicates
    for step in range(k + 1, n + 1):
        for key in ("loss", "reward/total", "grad_norm", "kl", "lr", "completion_length"):
            assert hr[step][key] == pytest.approx(hf[step][key], rel=1e-4, abs=1e-7), (step, key)
    a, b = _final_weights(Path(full["run_dir"])), _final_weights(Path(rest["run_dir"]))
    assert all(torch.allclose(a[x], b[x], rtol=1e-4, atol=1e-6) for x in a)
    lines = (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, n + 1))


@pytest.mark.slow
def test_subprocess_kill_and_resume(tmp_path):
    n = 4
    full = train(tiny_train_cfg(tmp_path / "a", train__max_steps=n),
                 rollout_fn=oracle_mix_rollout)
    cfg = tiny_train_cfg(tmp_path / "b", train__max_steps=n)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(OmegaConf.to_yaml(cfg))
    here = str(Path(__file__).resolve().parents[1] / "helpers")
    code = (f"import sys; sys.path.insert(0, {here!r}); from helpers_rl import *; "
            "from museg.rl.trainer import train; from omegaconf import OmegaConf; "
            f"train(OmegaConf.load({str(cfg_file)!r}), rollout_fn=oracle_mix_rollout)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=str(Path(__file__).resolve().parents[2]))
    ck2 = Path(cfg.run_dir) / "checkpoints" / "step-2" / "COMPLETE"
    deadline = time.time() + 300
    while not ck2.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert ck2.exists()
    rest = train(cfg, rollout_fn=oracle_mix_rollout)
    hf, hr = history_by_step(full), history_by_step(rest)
    start = int(rest["resumed_from"].rsplit("-", 1)[1])
    assert start >= 2
    for step in range(start + 1, n + 1):
        assert hr[step]["loss"] == pytest.approx(hf[step]["loss"], rel=1e-4, abs=1e-7)
        assert hr[step]["grad_norm"] == pytest.approx(hf[step]["grad_norm"], rel=1e-4)


# ---------------------------------------------------------------------------- failures
def test_failed_video_is_replaced_and_quarantined(tmp_path):
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, data__shuffle=False,
                         train__completions_every=0)
    bad = _broken_first_record(cfg, tmp_path)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    assert summary["step"] == 1 and summary["videos_replaced"] == 1
    assert summary["failed_videos"] == [bad]
    q = [json.loads(x) for x in (Path(cfg.run_dir) / "quarantine.jsonl").read_text().splitlines()]
    assert q[0]["video_path"] == bad and q[0]["error"] and q[0]["position"] == 0


def test_nonfinite_steps_are_skipped_then_abort():
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    eng = PlainEngine(lin, opt, None, max_grad_norm=1.0, max_nonfinite_steps=2)
    w0 = lin.weight.detach().clone()
    loss = lin(torch.tensor([[float("nan"), 1.0]])).sum()
    eng.backward(loss, last=True)
    _, stepped = eng.step(float(loss))
    assert not stepped and torch.equal(lin.weight, w0) and lin.weight.grad is None
    good = lin(torch.ones(1, 2)).sum()
    eng.backward(good, last=True)
    assert eng.step(float(good))[1] and eng.guard.streak == 0
    for i in range(2):
        bad = lin(torch.tensor([[float("inf"), 0.0]])).sum()
        eng.backward(bad, last=True)
        if i == 0:
            eng.step(float(bad))
        else:
            with pytest.raises(NonFiniteError, match="max_nonfinite_steps"):
                eng.step(float(bad))


# ---------------------------------------------------------------------------- options
@pytest.mark.parametrize("loss_type", ["token", "dr_grpo"])
def test_loss_types_and_ppo_iterations_run(tmp_path, loss_type):
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, train__loss_type=loss_type,
                         train__num_iterations=2, train__forward_batch_size=2,
                         train__completions_every=0, train__scale_rewards=False)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    last = summary["last"]
    assert summary["step"] == 1 and last["skipped_updates"] == 0.0
    assert 0.0 <= last["clip_ratio"] <= 1.0


def test_stage2_init_from_stage1_final(tmp_path):
    s1 = train(tiny_train_cfg(tmp_path / "s1", train__max_steps=1, train__completions_every=0),
               rollout_fn=oracle_mix_rollout)
    cfg = tiny_train_cfg(tmp_path / "s2", train__max_steps=1, init_from=s1["run_dir"],
                         train__beta=0.0, train__completions_every=0)
    s2 = train(cfg, rollout_fn=oracle_mix_rollout)
    assert s2["model_path"] == str(Path(s1["run_dir"]) / "final")


# ---------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_group_split_matches_single_process(tmp_path):
    """per_device = G/2 on 2 gloo ranks (every group spans both) == per_device = G on 1 process:
    same positions, rewards, advantages, loss, KL and weights -- including a broken video that
    both ranks must replace by the same sample."""
    import torch.multiprocessing as mp

    g = 4
    common = {"train__max_steps": 2, "train__num_generations": g, "train__save_steps": 100,
              "train__gradient_accumulation_steps": 2, "train__completions_every": 2,
              "data__shuffle": False}
    single: list[StepRecord] = []
    cfg1 = tiny_train_cfg(tmp_path / "one", train__per_device_train_batch_size=g, **common)
    bad = _broken_first_record(cfg1, tmp_path)
    s1 = train(cfg1, on_step=single.append, rollout_fn=oracle_mix_rollout)
    cfg2 = tiny_train_cfg(tmp_path / "one", train__per_device_train_batch_size=g // 2,
                          run_dir=str(tmp_path / "two"), **common)
    cfg2.data.train_file, cfg2.paths.video_root = cfg1.data.train_file, cfg1.paths.video_root
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(dist_worker, args=(2, _free_port(), OmegaConf.to_yaml(cfg2), str(out)), nprocs=2,
             join=True)
    r0, r1 = (json.loads((out / f"rank{i}.json").read_text()) for i in range(2))
    p0, p1 = r0["primitives"], r1["primitives"]  # torch.distributed glue on its own first
    assert p0["info"] == [0, 2, "cpu"] and p1["info"] == [1, 2, "cpu"]
    assert p0["mine"] == [0, 1, 2] and p1["mine"] == [3, 4, 5]
    assert p0["gathered"] == p1["gathered"] == [0, 10, 20, 30, 40, 50]
    assert p0["mean"] == p1["mean"] == {"x": 0.5, "y": 1.0}
    assert p0["obj"] == p1["obj"] == {"id": "from-0"}
    assert p0["objs"] == p1["objs"] == [["rank", 0], ["rank", 1]]
    assert s1["videos_replaced"] == r0["summary"]["videos_replaced"] == 1
    assert s1["failed_videos"] == r0["summary"]["failed_videos"] == r1["summary"]["failed_videos"] \
        == [bad]
    for one, a, b in zip(single, r0["records"], r1["records"], strict=True):
        assert a["positions"] == b["positions"] == one.positions.tolist()
        assert a["rewards"] == b["rewards"] and a["advantages"] == b["advantages"]
        for key, vals in one.rewards.items():
            assert a["rewards"][key] == pytest.approx(vals.tolist(), abs=1e-6), key
        assert a["advantages"] == pytest.approx(one.advantages.tolist(), abs=1e-5)
        for key in ("loss", "kl", "grad_norm", "completion_length", "reward/group_std"):
            assert a["metrics"][key] == pytest.approx(one.metrics[key], rel=1e-4, abs=1e-6), key
    assert single[0].metrics["kl"] == 0.0 and single[1].metrics["kl"] > 0.0
    # Adam normalises every coordinate, so one with a ~0 gradient may move by up to ~lr per step
    # on float noise: compare the whole update tightly and every coordinate well below lr (1e-3)
    w0 = load_file(build_tiny_model() / "model.safetensors")
    w1, w2 = _final_weights(Path(s1["run_dir"])), _final_weights(Path(cfg2.run_dir))
    d1 = torch.cat([(w1[x] - w0[x]).flatten() for x in w0])
    d2 = torch.cat([(w2[x] - w0[x]).flatten() for x in w0])
    assert float((d1 - d2).norm() / d1.norm()) < 1e-3 and float((d1 - d2).abs().max()) < 1e-4
    # the completions table holds every rank's completions (rank 0 writes all of them)
    rows1 = [json.loads(x) for x in (Path(cfg1.run_dir) / "completions.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (Path(cfg2.run_dir) / "completions.jsonl").read_text().splitlines()]
    assert len(rows2) == len(rows1) == 2 * g  # step 2 only (completions_every=2): 2 prompts
    assert [(r["position"], r["generation"], r["completion"]) for r in rows2] == \
        [(r["position"], r["generation"], r["completion"]) for r in rows1]


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_gpu_bf16_training_step(tmp_path, attention):
    if attention == "flash_attention_2":
        pytest.importorskip("flash_attn")
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, train__bf16=True, model__dtype="bfloat16",
                         model__attention=attention, train__completions_every=0)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    assert summary["step"] == 1 and summary["skipped_updates"] == 0


@pytest.mark.gpu
def test_vllm_rollout_gpu(tmp_path):
    pytest.importorskip("vllm")
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, rollout__backend="vllm",
                         model__dtype="bfloat16", train__completions_every=0)
    summary = train(cfg)
    assert summary["step"] == 1 and summary["last"]["completion_length"] > 0


@pytest.mark.gpu
def test_deepspeed_zero3_gpu(tmp_path, monkeypatch):
    pytest.importorskip("deepspeed")
    ds = Path(__file__).resolve().parents[2] / "conf" / "deepspeed" / "zero3.json"
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0",
                       "WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    cfg = tiny_train_cfg(tmp_path, train__max_steps=2, train__deepspeed=str(ds),
                         train__completions_every=0)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    assert summary["step"] == 2 and (Path(cfg.run_dir) / "final").is_dir()


def test_good_answer_earns_full_reward():
    from museg.rewards.registry import compute_rewards

    sol = [[1.0, 2.5], [3.0, 4.0]]
    out = compute_rewards([good_answer(sol)], [sol], {"format": 1.0, "global_matching": 1.0,
                                                      "local_matching": 1.0})
    assert out["total"] == [pytest.approx(3.0)]


# ---------------------------------------------------------------------------- logging
def test_metrics_logger_resume_drops_steps_after_checkpoint(tmp_path):
    from museg.rl.logging import MetricsLogger

    cfg = tiny_train_cfg(tmp_path, wandb__mode="disabled")
    log = MetricsLogger(tmp_path, cfg)
    for step in (1, 2, 3):
        log.log(step, {"reward/total": float(step), "reward/format": 0.5, "loss": 0.1})
        log.log_completions(step, [{"prompt": "p", "completion": "c", "advantage": 1.0}])
    log.close()
    assert (tmp_path / "reward_curves.png").is_file() and (tmp_path / "completions.parquet").is_file()
    # killed after step 3, the last checkpoint was step 2: step 3 is logged again after resume
    log2 = MetricsLogger(tmp_path, cfg, resume_step=2,
                         history=log.history[:2])
    log2.log(3, {"reward/total": 30.0})
    log2.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["reward/total"] == 30.0
    comp = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in comp] == [1, 2]


@pytest.mark.slow
def test_wandb_offline_run_id_is_reused(tmp_path, monkeypatch):
    from museg.rl.logging import MetricsLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_train_cfg(tmp_path, wandb__mode="offline", wandb__project="p", wandb__group="g",
                         wandb__job_type="train", wandb__tags=["t"])
    log = MetricsLogger(tmp_path, cfg)
    log.log(1, {"reward/total": 1.0})
    wid = log.wandb_id
    log.close()
    log2 = MetricsLogger(tmp_path, cfg, wandb_id=wid, resume_step=1, history=log.history)
    assert log2._wandb.id == wid
    log2.close()
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{wid}"))) >= 1
