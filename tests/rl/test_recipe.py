"""The paper's recipe as numbers (issue 12): the optimizer batch laid out on any world size, the plan
task, log-prob temperature, the prompt + completion cap, trainable vision tower, MUSEG's EOS,
deleted vision tokens, the logged KL and the malformed rows kept."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_rl import scripted_rollout, tiny_train_cfg
from omegaconf import OmegaConf
from safetensors.torch import load_file

from museg.config import compose_config
from museg.rl.layout import LayoutError, batch_layout

# ---------------------------------------------------------------------------- plan


@pytest.mark.parametrize(("stage", "nproc", "nodes", "steps", "rows"), [
    (1, 7, 1, 400, 5600), (1, 8, 1, 400, 5600), (1, 8, 2, 400, 5600),
    (2, 7, 1, 500, 7000), (2, 8, 1, 500, 7000), (2, 8, 2, 500, 7000),
])
def test_plan_figures_of_the_paper_on_real_files(shared_data, stage, nproc, nodes, steps, rows):
    from museg.plan import count_train_rows, plan_figures

    cfg = compose_config(["task=plan", f"stage={stage}", "model=7b",
                          f"launcher.nproc_per_node={nproc}", f"launcher.nodes={nodes}",
                          f"paths.data_root={shared_data}"])
    n, odd = count_train_rows(cfg)
    f = plan_figures(cfg, n, odd)
    assert (f["world_size"], f["prompts_per_step"], f["completions_per_step"]) == \
        (nproc * nodes, 14, 112)
    assert (f["optimizer_steps"], f["train_rows"], f["malformed_rows_kept"]) == \
        (steps, rows, {1: 2, 2: 5}[stage])
    assert f["per_device_completions"] * f["world_size"] == 112
    assert f["per_device_micro_batch"] * f["gradient_accumulation_steps"] == \
        f["per_device_completions"]
    assert (f["learning_rate"], f["beta"], f["num_generations"]) == (1.5e-6, 0.04, 8)
    assert (f["sampling_temperature"], f["logprob_temperature"], f["max_total_tokens"]) == \
        (0.9, 1.0, 4096)
    assert (f["vision_trainable"], f["deepspeed_stage"], f["seed"], f["data_seed"]) == \
        (True, 3, 42, 42)
    if nproc == 7 and nodes == 1:  # the reference: 1 prompt x 8 completions per GPU, x2
        assert (f["per_device_micro_batch"], f["gradient_accumulation_steps"]) == (8, 2)


def _museg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_plan_cli_prints_a_table_then_one_json_line(shared_data, tmp_path):
    out = _museg("task=plan", "stage=1", "model=7b", "launcher.nproc_per_node=8",
                 f"paths.data_root={shared_data}", f"paths.output_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    plan = json.loads(lines[-1])
    assert (plan["prompts_per_step"], plan["completions_per_step"], plan["optimizer_steps"]) == \
        (14, 112, 400)
    assert "14 prompts x G=8 = 112 completions" in out.stdout
    assert "2 malformed" in out.stdout and "kept 2 record(s)" in out.stdout + out.stderr
    saved = json.loads((tmp_path / "default" / "plan" / "model=7b" / "plan.json").read_text())
    assert saved == plan


def test_plan_projects_gpu_hours_from_a_measured_check(shared_data, tmp_path):
    check = {"config": {"prompt_tokens": 3000}, "steps": [
        {"rollout_s": 10.0, "reference_s": 1.0, "policy_s": 3.0, "optimizer_s": 0.5,
         "step_s": 16.0, "completions": 8, "completion_tokens": 256.0}]}
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps(check))
    out = _museg("task=plan", "model=3b", "launcher.nproc_per_node=8", f"plan.gpu_check={path}",
                 f"paths.data_root={shared_data}", f"paths.output_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout.strip().splitlines()[-1])
    assert plan["gpu_projection"]["gpu_hours"] > 0 and "GPU-hours" in out.stdout


def test_plan_refuses_a_world_size_that_cannot_divide_the_step(shared_data, tmp_path):
    out = _museg("task=plan", "model=7b", "launcher.nproc_per_node=3",
                 f"paths.data_root={shared_data}", f"paths.output_root={tmp_path}")
    assert out.returncode == 2
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "train.prompts_per_step" in lines[0]
    assert "1, 2, 4, 7, 8, 14, 16, 28, 56, 112" in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "default").exists()


def test_slurm_dry_run_shows_the_plan(tmp_path):
    out = _museg("-m", "launcher=slurm", "stage=1", "model=7b", "launcher.nodes=2",
                 "launcher.dry_run=true", f"paths.output_root={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert ("plan:      14 prompts = 112 completions per optimizer step = 16 process(es) x 7 "
            "completions x 1 micro-step(s)") in out.stdout


def test_layout_rules():
    for world in (1, 2, 4, 7, 8, 14, 16, 28, 56, 112):
        lay = batch_layout(8, world, 14)
        assert lay.per_device * lay.accumulation * world == 112
        assert (lay.per_device * world) % 8 == 0 and lay.per_device <= 8
    with pytest.raises(LayoutError, match="cannot be split over 5 processes"):
        batch_layout(8, 5, 14)
    with pytest.raises(LayoutError, match="per_device_train_batch_size"):
        batch_layout(8, 8, 14, per_device=3)
    assert batch_layout(8, 8, None, per_device=1, accumulation=2).prompts_per_step == 2


# ---------------------------------------------------------------------------- equivalence


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_step_is_the_same_on_one_process_and_on_two(tmp_path):
    """2 prompts x G=4 per optimizer step: (a) 1 process, 1 prompt per micro-step x 2 micro-steps;
    (b) 2 gloo processes, 1 prompt per process in 1 micro-step. Same loss, gradient norm and
    updated weights."""
    import torch.multiprocessing as mp
    from helpers_rl import dist_worker

    from museg.model.tiny import build_tiny_model
    from museg.rl.trainer import train

    common = {"train__max_steps": 1, "train__num_generations": 4, "train__prompts_per_step": 2,
              "train__per_device_train_batch_size": None, "train__micro_batch_completions": 4,
              "train__gradient_accumulation_steps": None, "train__completions_every": 0,
              "train__save_steps": 100, "data__shuffle": False, "train__max_grad_norm": 0.0}
    cfg1 = tiny_train_cfg(tmp_path / "one", **common)
    records = []
    s1 = train(cfg1, on_step=records.append, rollout_fn=scripted_rollout)
    cfg2 = tiny_train_cfg(tmp_path / "one", run_dir=str(tmp_path / "two"), **common)
    cfg2.data.train_file, cfg2.paths.video_root = cfg1.data.train_file, cfg1.paths.video_root
    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(dist_worker, args=(2, _free_port(), OmegaConf.to_yaml(cfg2), str(out), "scripted"),
             nprocs=2, join=True)
    r0 = json.loads((out / "rank0.json").read_text())
    one, two = records[0].metrics, r0["records"][0]["metrics"]
    assert r0["records"][0]["positions"] == records[0].positions.tolist() == [0, 1]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-7)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    w0 = load_file(build_tiny_model() / "model.safetensors")
    w1 = load_file(Path(s1["run_dir"]) / "final" / "model.safetensors")
    w2 = load_file(Path(cfg2.run_dir) / "final" / "model.safetensors")
    d1 = torch.cat([(w1[k] - w0[k]).flatten() for k in w0])
    d2 = torch.cat([(w2[k] - w0[k]).flatten() for k in w0])
    assert float(d1.norm()) > 0
    # Adam's first update is ~lr * sign(grad): coordinates with a ~0 gradient may flip on float
    # noise, so the update is compared as a whole and coordinate-wise against lr (1e-3)
    assert float((d1 - d2).norm() / d1.norm()) < 1e-3 and float((d1 - d2).abs().max()) < 1e-4


# ---------------------------------------------------------------------------- log-probs


class _OneLogit(torch.nn.Module):
    """A 'model' whose next-token logits are always [theta, 0] (vocabulary of two)."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta))

    def forward(self, input_ids, logits_to_keep=None, use_cache=False, **_):
        n, length = input_ids.shape
        row = torch.stack([self.theta, torch.zeros(())])
        return type("Out", (), {"logits": row.expand(n, logits_to_keep or length, 2)})()


def test_loss_scores_unscaled_logits_at_logprob_temperature_one():
    """MUSEG samples at T=0.9 but its loss uses log_softmax(logits): d loss / d theta for one
    token 0 with advantage 1 is -(1 - sigmoid(theta)) at T=1, -(1 - sigmoid(theta/T))/T else."""
    from museg.rl.loss import completion_logps, grpo_loss

    for temp, want in ((1.0, -(1 - torch.sigmoid(torch.tensor(0.7)))),
                       (0.9, -(1 - torch.sigmoid(torch.tensor(0.7 / 0.9))) / 0.9)):
        model = _OneLogit(0.7)
        ids = torch.zeros(1, 1, dtype=torch.long)
        logps = completion_logps(model, {"input_ids": torch.zeros(1, 3, dtype=torch.long)}, ids,
                                 temp)
        loss, _ = grpo_loss(logps, torch.tensor([1.0]), torch.ones(1, 1), beta=0.0)
        loss.backward()
        assert float(model.theta.grad) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize(("logprob_temperature", "want"), [(1.0, 1.0), (None, 0.9)])
def test_trainer_passes_the_logprob_temperature(tmp_path, monkeypatch, logprob_temperature, want):
    import museg.rl.step as step
    from museg.rl.trainer import train

    seen = []
    real = step.completion_logps

    def spy(model, inputs, ids, temperature=1.0):
        seen.append(temperature)
        return real(model, inputs, ids, temperature)

    monkeypatch.setattr(step, "completion_logps", spy)
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, train__temperature=0.9,
                         train__logprob_temperature=logprob_temperature, train__save_steps=100,
                         train__completions_every=0)
    captured = []

    def rollout(model, processor, inputs, num_generations, max_new_tokens, temperature, **kw):
        captured.append(temperature)
        return scripted_rollout(model, processor, inputs, num_generations, max_new_tokens, **kw)

    train(cfg, rollout_fn=rollout)
    assert set(captured) == {0.9} and seen and set(seen) == {want}


# ---------------------------------------------------------------------------- lengths


def test_completion_budget_and_vllm_request():
    from museg.generation.vllm import engine_max_model_len, sampling_kwargs
    from museg.rl.step import completion_budget

    cfg = compose_config(["model=7b"])
    budget = completion_budget(3000, cfg.train.max_completion_length, cfg.train.max_total_length)
    assert budget == 4096 - 3000
    assert sampling_kwargs(1, 0.9, 1.0, budget, 5)["max_tokens"] == 1096
    assert engine_max_model_len(cfg) == 4096
    assert completion_budget(3000, 4096, None) == 4096


def test_trainer_gives_each_prompt_at_most_total_minus_prompt_tokens(tmp_path):
    from museg.rl.trainer import train

    budgets = []

    def rollout(model, processor, inputs, num_generations, max_new_tokens, **kw):
        budgets.append((int(inputs["input_ids"].shape[1]), max_new_tokens))
        return scripted_rollout(model, processor, inputs, num_generations, max_new_tokens, **kw)

    probe = []
    train(tiny_train_cfg(tmp_path / "probe", train__max_steps=1, train__save_steps=100,
                         train__completions_every=0),
          rollout_fn=lambda m, p, i, **kw: probe.append(int(i["input_ids"].shape[1]))
          or scripted_rollout(m, p, i, **kw))
    total = max(probe) + 5
    train(tiny_train_cfg(tmp_path, train__max_steps=1, train__save_steps=100,
                         train__max_completion_length=8, train__max_total_length=total,
                         train__completions_every=0), rollout_fn=rollout)
    assert budgets and all(b == min(8, total - p) for p, b in budgets)
    assert any(b < 8 for _, b in budgets)


def test_hf_rollout_caps_each_row_like_a_separate_call(cfg_train):
    """Generating max(caps) tokens and cutting row i at caps[i] == a call with caps[i]."""
    from museg.data.sources import materialize_synthetic
    from museg.data.video import decode_video, video_spec_from_cfg
    from museg.dist import DistInfo
    from museg.generation.seeded import sample_completions
    from museg.model.inputs import build_prompt_text, build_video_inputs
    from museg.rl.builders import build_models, load_train_samples

    cfg = cfg_train
    materialize_synthetic(cfg)
    model, processor, _, _ = build_models(cfg, DistInfo())
    s = load_train_samples(cfg)[0]
    inputs = build_video_inputs(processor, [build_prompt_text(processor, s.problem)],
                                [decode_video(s.video_path, video_spec_from_cfg(cfg.video))])
    both = sample_completions(model, processor, [inputs] * 2, [5, 6], [3, 10])
    short = sample_completions(model, processor, [inputs], [5], 3)
    long = sample_completions(model, processor, [inputs], [6], 10)
    assert int(both.completion_mask[0].sum()) <= 3
    assert both.texts == [short.texts[0], long.texts[0]]
    # a row cut by its cap ended with an EOS only if the separate call did (an EOS past the cap
    # does not count), and keeps as many tokens
    assert both.is_eos.tolist() == [bool(short.is_eos[0]), bool(long.is_eos[0])]
    assert [int(m.sum()) for m in both.completion_mask] == \
        [int(short.completion_mask[0].sum()), int(long.completion_mask[0].sum())]


# ---------------------------------------------------------------------------- model & tokens


def test_recipe_trains_the_vision_tower_by_default():
    from museg.model.load import load_model_and_processor, vision_tower
    from museg.model.tiny import build_tiny_model

    cfg = compose_config(["model=7b"])
    assert cfg.model.freeze_vision is False
    model, _ = load_model_and_processor(build_tiny_model(), dtype="float32", attention="sdpa",
                                        freeze_vision=cfg.model.freeze_vision)
    vision = list(vision_tower(model).parameters())
    assert vision and all(p.requires_grad for p in vision)
    frozen, _ = load_model_and_processor(build_tiny_model(), dtype="float32", attention="sdpa",
                                         freeze_vision=True)
    assert not any(p.requires_grad for p in vision_tower(frozen).parameters())


def test_training_eos_is_im_end_only_and_vision_tokens_are_deleted():
    from transformers import AutoProcessor

    from museg.generation.hf import training_eos_ids
    from museg.model.tiny import build_tiny_model
    from museg.rl.forward import cut_at_tokens, drop_tokens

    tok = AutoProcessor.from_pretrained(build_tiny_model()).tokenizer
    assert training_eos_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]
    vp = tok.convert_tokens_to_ids("<|video_pad|>")
    ids = torch.tensor([[11, vp, 12, 13, vp], [11, 12, 0, 0, 0]])
    mask = torch.tensor([[1.0, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    kept, kmask, n = drop_tokens(ids, mask, [vp], pad=0)
    assert kept.tolist()[0] == [11, 12, 13, 0, 0] and kmask.tolist()[0] == [1, 1, 1, 0, 0]
    assert n == 1 and kept.tolist()[1] == ids.tolist()[1]
    cut, cmask, _ = cut_at_tokens(ids, mask, [vp], pad=0)
    assert cmask.tolist()[0] == [1, 0, 0, 0, 0]


def test_logged_kl_is_a_mean_of_per_sequence_means():
    from museg.rl.loss import grpo_loss

    logps = torch.zeros(2, 3)
    ref = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # k3(0 vs 1) = e - 2
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    _, st = grpo_loss(logps, torch.zeros(2), mask, ref_logps=ref, beta=0.04)
    k3 = float(torch.e - 2)
    assert st["kl"] == pytest.approx((k3 + 0.0) / 2)  # token mean would be k3 / 4


def test_malformed_rows_are_kept_and_listed_once(shared_data, caplog):
    from museg.data.annotations import load_train_jsonl

    with caplog.at_level(logging.WARNING):
        rows = load_train_jsonl(shared_data / "train" / "stage_2.jsonl", "/v", on_bad_record="keep")
    assert len(rows) == 7000
    warnings = [r for r in caplog.records if "kept 5 record(s)" in r.getMessage()]
    assert len(warnings) == 1 and ":917:" in warnings[0].getMessage()
    assert len(load_train_jsonl(shared_data / "train" / "stage_2.jsonl", "/v",
                                on_bad_record="skip")) == 6995
