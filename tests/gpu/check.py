"""Real-scale GPU check: GRPO steps and greedy evaluation of a random-weight Qwen2.5-VL-3B.

One command measures what a lent GPU can tell about the MUSEG recipe, with no downloaded weights
and no video decoding (see ``tests/gpu/README.md`` for the wheels and the exact command):

1. ``--steps`` (3) GRPO optimizer steps through :func:`museg.rl.trainer.train` with a config
   composed by :func:`museg.run.compose_config` (``model=3b``, stage 1): one prompt x G=8
   completions per step on one GPU, completions capped at ``--max-new-tokens`` (256), bf16
   autocast over fp32 master weights, sdpa, gradient checkpointing, the vision tower trained,
   HF ``generate`` rollouts; per step the trainer's own phase times (``time/rollout``,
   ``time/reference``, ``time/policy``, ``time/optimizer``), peak GPU memory and tokens/s;
2. the same with DeepSpeed ZeRO-3 on one process (``conf/deepspeed/zero3.json``) when
   ``deepspeed`` imports, in a subprocess; otherwise recorded as skipped with the reason;
3. greedy evaluation of ``--eval-items`` (16) items at the eval frame spec through
   :func:`museg.eval.runner.run_inference` (the HF backend), batch sizes 1, 4, 16: items/s, memory;
4. ``gpu_check.json`` in ``--out`` (default ``$OUT``), rewritten after every phase so a killed
   run still leaves its figures, plus a short table and the stage 1 / stage 2 GPU-hour projection
   of :func:`museg.gpu_projection.project_gpu_hours` on stdout.

The model is :mod:`gpu_model`'s (3B sizes from the public config.json, random weights built in
memory); the frames are :mod:`gpu_frames`' (100 s of 480x854 -> 200 frames of 112x196 = 2,800
video tokens, served from museg's frame cache). ``--device cpu --tiny`` runs the same code on
museg's tiny architecture with a tiny frame spec in well under a minute (the default test suite
does, ``tests/workflow/test_gpu_check.py``). Training stops by raising from ``on_step`` after the last
measured step, so no checkpoint (45 GB at 3B with AdamW state) is ever written.

Usage::

    PYTHONPATH=.:tests/gpu python tests/gpu/check.py --out /tmp/gpu_check          # on the GPU
    PYTHONPATH=.:tests/gpu python tests/gpu/check.py --device cpu --tiny --out /tmp/c
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(REPO), str(Path(__file__).resolve().parent)) if p not in sys.path]

N_VIDEOS = 4  # distinct synthetic videos (training prompts and eval items cycle over them)
GPU_VIDEO = {"duration": 100.0, "fps": 30.0, "height": 480, "width": 854}  # -> 2,800 tokens
TINY_VIDEO = {"duration": 8.0, "fps": 4.0, "height": 112, "width": 112}
TINY_SPEC = {"fps": 1.0, "max_frames": 4, "min_frames": 2, "min_pixels": 3136,
             "max_pixels": 3136, "total_pixels": 4 * 3136}


class _Stop(Exception):
    """Raised from ``on_step`` to end training after the last measured step (no checkpoint)."""


def _gb(n: float) -> float:
    return round(n / 1024**3, 3)


def _peak_gb(device: str, reset: bool = True) -> float:
    import torch

    if device.startswith("cuda"):
        peak = _gb(torch.cuda.max_memory_allocated())
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return peak
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)  # KiB -> GiB


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def compose(args: argparse.Namespace, work: Path, model_dir: Path, train_file: Path,
            eval_file: Path, deepspeed: bool = False):
    """The composed ``task=train`` config of the check (eval keys set too)."""
    import yaml
    from omegaconf import OmegaConf, open_dict

    from museg.config import compose_config

    cfg = compose_config(["task=train", f"model={'tiny' if args.tiny else '3b'}", "stage=1",
                          "rollout=hf", "benchmark=charades_sta"])
    g = args.generations
    sets: dict[str, Any] = {
        "run_dir": str(work / ("train_ds" if deepspeed else "train")), "seed": 0,
        "resume": "never", "paths.data_root": str(work), "paths.video_root": str(work / "videos"),
        "paths.output_root": str(work / "outputs"), "paths.cache_dir": str(work / "cache"),
        "model.path": str(model_dir), "model.attention": "sdpa",
        "model.dtype": "float32" if args.device == "cpu" else "bfloat16",
        "model.gradient_checkpointing": True, "model.freeze_vision": False,
        "model.lora.enabled": False, "data.train_file": str(train_file),
        "data.on_bad_record": "fail", "data.max_samples": None, "data.task_filter": None,
        "video.cache.disk": True, "video.cache.memory_items": 8, "video.decode_timeout_s": None,
        "video.on_failure": "fail", "video.prefetch": 1, "train.num_generations": g,
        "train.max_completion_length": args.max_new_tokens, "train.max_steps": args.steps,
        "train.save_steps": 10**6, "train.completions_every": 0, "train.logging_steps": 1,
        "train.bf16": True, "train.num_iterations": 1, "train.forward_batch_size": None,
        "train.deepspeed": str(REPO / "conf/deepspeed/zero3.json") if deepspeed else None,
        "wandb.mode": "disabled", "eval.annotation": str(eval_file), "eval.kind": "tvg",
        "eval.limit": args.eval_items, "eval.max_new_tokens": args.eval_max_new_tokens,
        "eval.do_sample": False, "eval.backend": "hf", "launcher.nproc_per_node": 1,
        "launcher.nodes": 1,
    }
    if "prompts_per_step" in cfg.train:  # layout derived from prompts per step (new recipe keys)
        sets.update({"train.prompts_per_step": 1, "train.per_device_train_batch_size": None,
                     "train.gradient_accumulation_steps": None,
                     "train.micro_batch_completions": g})
    else:
        sets.update({"train.per_device_train_batch_size": g,
                     "train.gradient_accumulation_steps": 1})
    if args.tiny:
        sets.update({f"{node}.{k}": v for node in ("video", "eval.video")
                     for k, v in TINY_SPEC.items()})
    for key, value in sets.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is not None and leaf in node:
            OmegaConf.update(cfg, key, value, merge=False)
    with open_dict(cfg):
        for item in args.override:
            key, _, value = item.partition("=")
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=False)
    return cfg


def check_config(cfg: Any) -> None:
    """museg's own validation of the composed config (files included): one line on failure."""
    from museg.config import validate

    problems = validate(cfg)
    if problems:
        raise SystemExit("gpu check: composed config is invalid: " + "; ".join(map(str, problems)))


def write_data(work: Path, cfg_for_specs: Any, tiny: bool, n_train: int, n_eval: int
               ) -> tuple[Path, Path, list[Path]]:
    """Placeholder videos (frames cached for the train and eval specs) + annotation files."""
    from gpu_frames import make_videos

    from museg.data.video import video_spec_from_cfg
    from museg.eval.items import eval_video_spec

    spec_train = dict(video_spec_from_cfg(cfg_for_specs.video))
    spec_eval = eval_video_spec(cfg_for_specs)
    backend = str(cfg_for_specs.video.backend)
    geo = TINY_VIDEO if tiny else GPU_VIDEO
    paths = make_videos(work / "videos", N_VIDEOS, work / "cache" / "frames",
                        [(spec_train, backend), (spec_eval, backend)], **geo)
    dur = geo["duration"]
    train = work / "train.jsonl"
    with train.open("w") as f:
        for i in range(n_train):
            f.write(json.dumps({"idx": i, "problem": f"the person opens door number {i}",
                                "solution": [[0.1 * dur, 0.3 * dur], [0.6 * dur, 0.7 * dur]],
                                "video": paths[i % N_VIDEOS].name, "duration": dur,
                                "task": "tvg"}) + "\n")
    items = [{"video": paths[i * N_VIDEOS // n_eval].name, "question": f"a person sits down {i}",
              "groundtruth": [[0.2 * dur, 0.4 * dur]]} for i in range(n_eval)]
    evalf = work / "eval.json"
    evalf.write_text(json.dumps(items))
    return train, evalf, paths


def prompt_tokens(cfg: Any, model_dir: Path, video_path: Path) -> dict[str, int]:
    """Prompt length (text + video tokens) of a training prompt, as the trainer builds it."""
    from transformers import AutoProcessor

    from museg.data.prompts import build_question
    from museg.data.video import FrameCache, video_spec_from_cfg
    from museg.model.inputs import build_prompt_text, build_video_inputs

    try:
        from museg.data.prompts import template_from_cfg

        template = template_from_cfg(cfg.stage)
    except ImportError:
        template = str(cfg.stage.template)
    proc = AutoProcessor.from_pretrained(model_dir)
    video = FrameCache(disk_dir=Path(cfg.paths.cache_dir) / "frames").get(
        video_path, dict(video_spec_from_cfg(cfg.video)), backend=str(cfg.video.backend))
    text = build_prompt_text(proc, build_question(template, "the person opens door number 0"))
    ids = build_video_inputs(proc, [text], [video])["input_ids"]
    return {"prompt_tokens": int(ids.shape[1]), "video_tokens": int(video.plan.video_tokens),
            "frames": int(video.frames.shape[0]), "frame_hw": list(video.frames.shape[2:])}


def run_train(cfg: Any, device: str, prompt_len: int, deadline: float) -> list[dict]:
    """``train(cfg)`` until ``cfg.train.max_steps`` (or the deadline); per-step figures."""
    from gpu_model import random_weights

    from museg.rl.trainer import train

    steps: list[dict] = []
    last = int(cfg.train.max_steps)

    def on_step(rec: Any) -> None:
        m = rec.metrics
        n = int(rec.advantages.numel())
        comp = float(m.get("completion_length", 0.0))
        t = {k.removeprefix("time/"): round(float(v), 4) for k, v in m.items()
             if k.startswith("time/")}
        step_s = float(m.get("time/step", 0.0)) or 1e-9
        steps.append({
            "step": rec.step, "rollout_s": t.get("rollout", 0.0),
            "reference_s": t.get("reference", 0.0), "policy_s": t.get("policy", 0.0),
            "optimizer_s": t.get("optimizer", 0.0), "step_s": round(step_s, 4),
            "peak_mem_gb": _peak_gb(device), "completions": n, "completion_tokens": comp,
            "tokens_per_s": round(n * (prompt_len + comp) / step_s, 1),
            "rollout_tokens_per_s": round(n * comp / max(t.get("rollout", 0.0), 1e-9), 1),
            "loss": float(m.get("loss", float("nan"))), "grad_norm": float(m.get("grad_norm", 0)),
            "times": t})
        print(f"[gpu-check] step {rec.step}: {steps[-1]['step_s']:.2f} s, "
              f"peak {steps[-1]['peak_mem_gb']} GB", flush=True)
        if rec.step >= last or time.monotonic() > deadline:
            raise _Stop

    _free(device)
    with random_weights(device):
        try:
            train(cfg, on_step=on_step)
        except _Stop:
            pass
    _free(device)
    return steps


def run_eval(cfg: Any, device: str, batch_sizes: list[int], work: Path, deadline: float
             ) -> dict[str, dict]:
    """Greedy evaluation with each batch size through the real runner; items/s and memory."""
    from gpu_model import random_weights
    from omegaconf import OmegaConf

    from museg.eval.items import load_eval_items
    from museg.eval.runner import run_inference
    from museg.generation.backends import HFBackend

    out: dict[str, dict] = {}
    _free(device)
    with random_weights(device):
        backend = HFBackend(cfg)
    items = load_eval_items(cfg)
    OmegaConf.update(cfg, "eval.batch_size", 1, merge=False)
    run_inference(cfg, items[:1], backend, work / "eval_warmup")  # kernels, allocator: untimed
    for bs in batch_sizes:
        if time.monotonic() > deadline:
            out[str(bs)] = {"skipped": "time budget (--budget-s) spent"}
            continue
        OmegaConf.update(cfg, "eval.batch_size", bs, merge=False)
        _peak_gb(device)  # reset
        stats, _ = run_inference(cfg, items, backend, work / f"eval_bs{bs}")
        sec = max(float(stats["seconds"]), 1e-9)
        out[str(bs)] = {"items": int(stats["items"]), "seconds": round(sec, 3),
                        "items_per_s": round(stats["items"] / sec, 4),
                        "peak_mem_gb": _peak_gb(device),
                        "max_new_tokens": int(cfg.eval.max_new_tokens)}
        print(f"[gpu-check] eval bs={bs}: {out[str(bs)]['items_per_s']} items/s", flush=True)
    del backend
    _free(device)
    return out


def run_deepspeed(args: argparse.Namespace, out: Path, deadline: float) -> dict:
    """Phase 2 in a subprocess (one process, ZeRO-3), or why it was skipped."""
    if importlib.util.find_spec("deepspeed") is None:
        return {"status": "skipped", "reason": "deepspeed is not installed on this machine "
                "(its wheels did not travel: see tests/gpu/README.md)"}
    if args.device == "cpu":
        return {"status": "skipped", "reason": "DeepSpeed needs CUDA"}
    left = deadline - time.monotonic()
    if left < 60:
        return {"status": "skipped", "reason": f"time budget: {left:.0f} s left"}
    sub = out / "deepspeed"
    env = dict(os.environ, RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=os.environ.get("MASTER_PORT", "29517"), DS_ACCELERATOR="cuda")
    cmd = [sys.executable, __file__, "--phase", "deepspeed", "--out", str(sub),
           "--steps", str(args.steps), "--max-new-tokens", str(args.max_new_tokens),
           "--generations", str(args.generations), "--budget-s", str(left)]
    cmd += [a for o in args.override for a in ("--override", o)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left + 90)
    except subprocess.TimeoutExpired as e:
        return {"status": "timed out", "log_tail": str(e.stderr or "")[-3000:]}
    res = json.loads((sub / "gpu_check.json").read_text()) if (sub / "gpu_check.json").is_file() \
        else {}
    status = "ok" if proc.returncode == 0 and res.get("steps") else f"failed (rc {proc.returncode})"
    return {"status": status, "steps": res.get("steps", []), "log_tail": proc.stderr[-3000:]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None)
    ap.add_argument("--tiny", action="store_true", help="museg's tiny model and frame spec")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--work", default=None, help="scratch dir (default: a temp dir, removed)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="256 (tiny: 8)")
    ap.add_argument("--eval-items", type=int, default=16)
    ap.add_argument("--eval-batch-sizes", default="16,4,1",
                    help="run order: cheapest first, so a spent budget skips batch size 1")
    ap.add_argument("--eval-max-new-tokens", type=int, default=None, help="256 (tiny: 8)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="stop starting new steps / eval runs after this many seconds")
    ap.add_argument("--no-deepspeed", action="store_true")
    ap.add_argument("--phase", choices=("all", "deepspeed"), default="all")
    ap.add_argument("--override", action="append", default=[], help="KEY=VALUE on the config")
    args = ap.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    default_tokens = 8 if args.tiny else 256
    args.max_new_tokens = args.max_new_tokens or default_tokens
    args.eval_max_new_tokens = args.eval_max_new_tokens or default_tokens
    return args


def main(argv: list[str] | None = None) -> dict:
    t0 = time.monotonic()
    args = parse_args(argv)
    deadline = t0 + args.budget_s
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="museg-gpu-check-")).absolute()
    env = {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "MUSEG_CACHE": str(work / "cache")}
    if args.phase == "deepspeed":  # one-process torch.distributed for accelerate + DeepSpeed
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT="29517", DS_ACCELERATOR="cuda")
    for k, v in env.items():
        os.environ.setdefault(k, v)
    from gpu_model import write_model_dir
    from gpu_report import device_info, print_table, versions

    from museg.gpu_projection import project_gpu_hours

    result: dict[str, Any] = {"device": device_info(args.device), "versions": versions(),
                              "steps": [], "eval": {}, "deepspeed": None, "projection": {}}

    def dump() -> None:
        result["elapsed_s"] = round(time.monotonic() - t0, 1)
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))

    try:
        model_dir = write_model_dir(work / "model", tiny=args.tiny)
        cfg = compose(args, work, model_dir, work / "train.jsonl", work / "eval.json",
                      deepspeed=args.phase == "deepspeed")
        _, _, paths = write_data(work, cfg, args.tiny, n_train=2 * N_VIDEOS,
                                 n_eval=args.eval_items)
        check_config(cfg)
        result["config"] = {"model": "tiny" if args.tiny else "qwen2.5-vl-3b (random weights)",
                            "device": args.device, "generations": args.generations,
                            "completions_per_step": args.generations,
                            "max_new_tokens": args.max_new_tokens,
                            "eval_max_new_tokens": args.eval_max_new_tokens,
                            **prompt_tokens(cfg, model_dir, paths[0])}
        dump()
        result["steps"] = run_train(cfg, args.device, result["config"]["prompt_tokens"], deadline)
        dump()
        if args.phase == "all":
            sizes = [int(b) for b in args.eval_batch_sizes.split(",") if b]
            result["eval"] = run_eval(cfg, args.device, sizes, work, deadline)
            dump()
            result["deepspeed"] = {"status": "skipped", "reason": "--no-deepspeed"} \
                if args.no_deepspeed else run_deepspeed(args, out, deadline)
            for name, steps in (("stage1", 400), ("stage2", 500)):
                result["projection"][name] = project_gpu_hours(result, steps, 112, 8)
            dump()
            print_table(result)
    finally:
        dump()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n[gpu-check] wrote {out / 'gpu_check.json'} in {result['elapsed_s']} s")
    return result


if __name__ == "__main__":
    main()
