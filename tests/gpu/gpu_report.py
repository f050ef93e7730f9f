"""Reporting helpers of the GPU check: device text, package versions, the printed table.

Example::

    device_info("cpu")          # -> "cpu"; on CUDA the output of nvidia-smi
    versions()["transformers"]  # read from package metadata, nothing imported
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import shutil
import subprocess

PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "huggingface-hub",
            "safetensors", "hydra-core", "omegaconf", "antlr4-python3-runtime", "deepspeed",
            "pydantic", "numpy")


def device_info(device: str) -> str:
    """``nvidia-smi`` output on CUDA, else ``"cpu"``."""
    if not device.startswith("cuda") or shutil.which("nvidia-smi") is None:
        return "cpu" if not device.startswith("cuda") else "cuda (nvidia-smi not found)"
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"nvidia-smi failed: {e}"


def versions() -> dict[str, str | None]:
    """Versions of the packages that matter (read from metadata: nothing heavy is imported)."""
    out: dict[str, str | None] = {"python": platform.python_version(),
                                  "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    if out.get("torch"):
        import torch

        out["cuda"] = torch.version.cuda
    return out


def print_table(result: dict) -> None:
    print("\nstep  rollout_s  reference_s  policy_s  optimizer_s   step_s  peak_GB  tokens/s")
    for name, steps in (("", result["steps"]),
                        ("zero3 ", (result.get("deepspeed") or {}).get("steps") or [])):
        for s in steps:
            print(f"{name}{s['step']:>4}  {s['rollout_s']:9.2f}  {s['reference_s']:11.2f}  "
                  f"{s['policy_s']:8.2f}  {s['optimizer_s']:11.2f}  {s['step_s']:7.2f}  "
                  f"{s['peak_mem_gb']:7.2f}  {s['tokens_per_s']:8.0f}")
    print("\neval batch  items/s  peak_GB")
    for bs, e in result["eval"].items():
        print(f"{bs:>10}  " + (f"{e['items_per_s']:7.3f}  {e['peak_mem_gb']:7.2f}"
                               if "items_per_s" in e else e.get("skipped", "")))
    for name, p in (result.get("projection") or {}).items():
        if "gpu_hours" in p:
            print(f"{name}: {p['gpu_hours']:.1f} GPU-hours ({p['wall_hours']:.2f} h on "
                  f"{p['gpus']} GPUs, {p['seconds_per_step']:.1f} s/step)")
    if result.get("projection"):
        first = next(iter(result["projection"].values()))
        for a in first.get("assumptions", []):
            print(f"  - {a}")
