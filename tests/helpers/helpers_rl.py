"""Helpers for the trainer tests and benchmark: a compose-free tiny training config, a rollout that
mixes seeded HF samples with one correct answer per group (so rewards vary and the policy learns), a
scripted rollout (fixed completions, no sampling), and a worker for multi-process runs.

``tiny_train_cfg(tmp_path, **overrides)``: overrides use ``__`` for nesting
(``train__beta=0.0`` sets ``cfg.train.beta``). As ``conf/model/tiny.yaml``,
``per_device_train_batch_size`` defaults to ``num_generations`` (one whole group per micro-step).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from museg.config import compose_config
from museg.config.naming import register_resolvers
from museg.config.schema_demo import SyntheticConfig

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("MUSEG_CACHE", str(REPO / ".cache" / "museg-test"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYNTHETIC = {
    "n_train_videos": 6, "n_heldout_videos": 1, "queries_per_video": 1, "seed": 0,
    "size": [56, 56], "fps": 4, "duration_range": [4, 6], "n_colours": 2,
    "event_range": [1.0, 2.0], "gap_range": [0.5, 1.0], "boundary_step": 0.5,
}


def tiny_train_cfg(tmp_path: str | Path, **overrides: Any):
    """The composed ``task=train model=tiny data=synthetic`` config, trimmed to tiny synthetic
    videos (CPU, seconds); ``overrides`` use ``__`` for nesting (``train__beta=0.0``)."""
    from museg.data.prompts import STAGE1_TEMPLATE

    tmp_path = Path(tmp_path)
    base = {
        "task": "train", "seed": 0, "experiment_name": "test", "run_name": "tiny",
        "run_dir": str(tmp_path / "run"), "resume": "auto", "init_from": None,
        "paths": {"data_root": str(tmp_path), "video_root": str(tmp_path / "videos"),
                  "output_root": str(tmp_path), "cache_dir": os.environ["MUSEG_CACHE"]},
        "model": {"name": "tiny", "path": "tiny", "dtype": "float32", "attention": "sdpa",
                  "gradient_checkpointing": False, "freeze_vision": False, "seed": 0,
                  "lora": {"enabled": False, "r": 8, "alpha": 16, "dropout": 0.0,
                           "target_modules": ["q_proj", "v_proj"]}},
        "stage": {"id": 1, "template": STAGE1_TEMPLATE},
        "reward": {"weights": {"format": 1.0, "global_matching": 1.0, "local_matching": 1.0},
                   "timestamp_aware": True, "strict": False},
        "data": {"name": "synthetic", "train_file": "generated", "task_filter": None,
                 "max_samples": None, "on_bad_record": "fail", "shuffle": True,
                 "synthetic": dict(SYNTHETIC)},
        "video": {"fps": 1.0, "max_frames": 4, "min_frames": 2, "min_pixels": 3136,
                  "max_pixels": 3136, "total_pixels": 4 * 3136, "backend": "torchcodec",
                  "decode_timeout_s": None, "cache": {"memory_items": 8, "disk": False},
                  "on_failure": "replace", "max_failure_fraction": 0.5, "prefetch": 1},
        "train": {"learning_rate": 1e-3, "beta": 0.04, "num_generations": 4,
                  "max_completion_length": 8, "max_prompt_length": 4096,
                  "max_total_length": 4096, "prompts_per_step": None,
                  "micro_batch_completions": 8,
                  "per_device_train_batch_size": "${train.num_generations}",
                  "gradient_accumulation_steps": 2, "logprob_temperature": 1.0,
                  "vision_token_in_completion": "delete",
                  "num_train_epochs": 1, "max_steps": 2, "bf16": False, "save_steps": 1,
                  "save_total_limit": 3, "data_seed": 42, "temperature": 1.0, "top_p": 1.0,
                  "loss_type": "sequence", "scale_rewards": True, "num_iterations": 1,
                  "epsilon_low": 0.2, "epsilon_high": 0.2, "lr_scheduler_type": "linear",
                  "warmup_ratio": 0.0, "max_grad_norm": 1.0, "weight_decay": 0.0,
                  "logging_steps": 1, "completions_every": 1, "forward_batch_size": None,
                  "max_nonfinite_steps": 3, "deepspeed": None},
        "rollout": {"backend": "hf", "gpu_memory_utilization": 0.5, "tensor_parallel_size": 1,
                    "max_model_len": 8192},
        "eval": {"annotation": None},
        "wandb": {"mode": "disabled", "project": "museg-test", "entity": None, "group": "test",
                  "job_type": "train", "tags": []},
    }
    # the real composed config (schema, groups, resolvers), trimmed to seconds on the CPU: every
    # key exists, so code reads cfg.x.y; a misspelt key here fails (struct mode)
    cfg = compose_config(["task=train", "model=tiny", "data=synthetic"])
    # the generator parameters replace the YAML's (not merged): only these shape the test videos
    OmegaConf.update(cfg, "data.synthetic", SyntheticConfig(**base["data"].pop("synthetic")),
                     merge=False)
    cfg = OmegaConf.merge(cfg, base)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def good_answer(solution: list[list[float]]) -> str:
    """A completion that earns every reward for ``solution`` (timestamps cited in <think>)."""
    segs = " ".join(f"{s:.2f}-{e:.2f}" for s, e in solution)
    cites = " and ".join(f"from {s:.2f} to {e:.2f}" for s, e in solution)
    return f"<think>The shape is visible {cites}.</think><answer>{segs}</answer>"


def _rollout(texts: list[str], processor):
    from museg.generation.hf import Rollout, eos_token_ids

    tok = processor.tokenizer
    rows = [tok(t, add_special_tokens=False)["input_ids"] + [eos_token_ids(tok)[0]] for t in texts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return Rollout(texts=texts, completion_ids=ids, completion_mask=mask, prompt_ids=None,
                   prompt_mask=None, is_eos=torch.ones(len(rows), dtype=torch.bool),
                   num_generations=len(rows))


def oracle_mix_rollout(model, processor, inputs, num_generations, max_new_tokens, do_sample=True,
                       temperature=1.0, top_p=1.0, seed=None, seeds=None, generation_indices=None,
                       sample=None, **_: Any):
    """Seeded HF samples (one seed per completion, :mod:`museg.generation.seeded`) with generation 0 of
    each group replaced by a correct answer; independent of how a group is split over ranks."""
    from museg.generation.hf import Rollout
    from museg.generation.seeded import sample_completions

    gens = list(generation_indices if generation_indices is not None else range(num_generations))
    seeds = list(seeds) if seeds is not None else [int(seed or 0) + g for g in gens]
    roll = sample_completions(model, processor, [inputs] * len(gens), seeds, max_new_tokens,
                              temperature=temperature, top_p=top_p)
    if 0 not in gens:
        return roll
    good = _rollout([good_answer(sample.solution)], processor)
    pad = processor.tokenizer.pad_token_id or 0
    width = max(good.completion_ids.shape[1], roll.completion_ids.shape[1])
    ids = torch.full((len(gens), width), pad, dtype=torch.long)
    mask = torch.zeros((len(gens), width), dtype=torch.long)
    c = roll.completion_ids.shape[1]
    ids[:, :c], mask[:, :c] = roll.completion_ids, roll.completion_mask
    i, n = gens.index(0), good.completion_ids.shape[1]
    ids[i], mask[i] = pad, 0
    ids[i, :n], mask[i, :n] = good.completion_ids[0], 1
    texts = list(roll.texts)
    texts[i] = good.texts[0]
    return Rollout(texts=texts, completion_ids=ids, completion_mask=mask, prompt_ids=None,
                   prompt_mask=None, is_eos=roll.is_eos, num_generations=len(gens))


SCRIPTED = 4  # distinct scripted completions, cycled over generation indices


def scripted_texts(solution: list[list[float]], g: int) -> str:
    """Completion ``g`` of the scripted rollout: correct, loose, off, unparsable (cycled)."""
    (s, e) = solution[0]
    return [good_answer(solution),
            f"<think>at {s:.2f}</think><answer>{s:.2f}-{e + 1.0:.2f}</answer>",
            f"<think>no idea</think><answer>{s + 0.5:.2f}-{e:.2f}</answer>",
            "the answer is somewhere"][g % SCRIPTED]


def scripted_rollout(model, processor, inputs, num_generations, max_new_tokens, seed=None,
                     generation_indices=None, sample=None, **_: Any):
    """Fixed completions by generation index (no sampling): rewards differ within a group."""
    gens = list(generation_indices if generation_indices is not None else range(num_generations))
    return _rollout([scripted_texts(sample.solution, g) for g in gens], processor)


def history_by_step(summary: dict) -> dict[int, dict]:
    return {int(h["step"]): h for h in summary["history"]}


def _primitives(out_dir: str) -> dict:
    """Exercise init/shard/all_gather_cat/all_reduce_mean/gather+broadcast objects on gloo."""
    from museg import dist as D

    info = D.init_distributed(device="cpu")
    mine = D.shard(list(range(6)), info.rank, info.world_size)
    gathered = D.all_gather_cat(torch.tensor(mine, dtype=torch.float32) * 10)
    mean = D.all_reduce_mean({"x": float(info.rank), "y": 1.0})
    obj = D.broadcast_object({"id": f"from-{info.rank}"})
    objs = D.all_gather_object(("rank", info.rank))
    return {"info": [info.rank, info.world_size, info.device], "mine": mine,
            "gathered": gathered.tolist(), "mean": mean, "obj": obj, "objs": objs}


def dist_worker(rank: int, world_size: int, port: int, cfg_yaml: str, out_dir: str,
                rollout: str = "oracle") -> None:
    """torch.multiprocessing.spawn target: check the distributed primitives, then run train() as
    one rank and dump the gathered step records and the summary to ``out_dir/rank<R>.json``.
    ``rollout``: ``oracle`` (:func:`oracle_mix_rollout`) or ``scripted`` (:func:`scripted_rollout`)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from museg import dist as D
    from museg.rl.trainer import train

    prims = _primitives(out_dir)
    register_resolvers()  # the composed config's ${museg.*} interpolations, in this child
    cfg = OmegaConf.create(cfg_yaml)
    records = []

    def on_step(rec):
        records.append({"step": rec.step, "positions": rec.positions.tolist(),
                        "rewards": {k: v.tolist() for k, v in rec.rewards.items()},
                        "advantages": rec.advantages.tolist(), "metrics": rec.metrics})

    fn = scripted_rollout if rollout == "scripted" else oracle_mix_rollout
    summary = train(cfg, on_step=on_step, rollout_fn=fn)
    summary.pop("history", None)
    D.cleanup_distributed()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
        {"records": records, "summary": summary, "primitives": prims}, default=str))


def die_at_start(conn) -> None:
    """A video worker main that exits before reporting ready (the parent reads EOF)."""
    conn.close()
    os._exit(3)


def batch_worker(rank: int, world_size: int, port: int, cfg_yaml: str, bad_path: str,
                 out_dir: str) -> None:
    """Spawn target: a StepBatcher per rank where only rank 1 cannot decode sample 0's video (as
    with a timeout on one rank); dump what each rank uses for its slots."""
    import dataclasses

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from museg import dist as D
    from museg.rl.batch import StepBatcher
    from museg.rl.builders import load_train_samples

    D.init_distributed(device="cpu")
    register_resolvers()
    cfg = OmegaConf.create(cfg_yaml)
    samples = load_train_samples(cfg)
    if rank == 1:
        samples[0] = dataclasses.replace(samples[0], video_path=bad_path)
    b = StepBatcher(samples, cfg.video, data_seed=0, shuffle=False, per_device=1,
                    num_generations=2, accumulation=2, rank=rank, world_size=world_size,
                    run_dir=out_dir)
    steps = []
    for consumed in (0, 2):
        slots = b.get(consumed)
        steps.append([{"micro": s.micro, "position": s.position, "gens": s.generations,
                       "source": s.item.sample.source, "replaced_from": s.item.replaced_from}
                      for s in slots])
    out = {"steps": steps, "num_replaced": b.num_replaced, "sources": [s.source for s in samples],
           "failed": sorted(b.failed_paths)}
    b.close()
    D.cleanup_distributed()
    Path(out_dir, f"batch{rank}.json").write_text(json.dumps(out))
