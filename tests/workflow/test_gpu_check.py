"""The GPU check (tests/gpu/check.py) on CPU with the tiny model, and its wheel list.

``test_gpu_check_tiny_cpu`` runs ``check.py --device cpu --tiny`` in a subprocess (the same code
path as on the GPU: composed config, the trainer with 3 GRPO steps, the eval runner at batch sizes
1/4/16, the projection) and checks the JSON it writes, so the check cannot rot before a GPU is
lent. ``test_wheel_list_resolves`` (slow, needs PyPI) downloads every pinned wheel of
``tests/gpu/wheels*.txt`` for Python 3.12 manylinux x86_64 (sdist-only pins: their sdist).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "tests" / "gpu" / "check.py"
WHEEL_LISTS = [REPO / "tests" / "gpu" / n for n in ("wheels.txt", "wheels-deepspeed.txt")]
STEP_KEYS = {"rollout_s", "reference_s", "policy_s", "optimizer_s", "peak_mem_gb", "tokens_per_s"}


def test_gpu_check_tiny_cpu(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests' / 'gpu'}", WANDB_MODE="disabled",
               HF_HUB_OFFLINE="1", OUT=str(tmp_path / "ignored"))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(CHECK), "--device", "cpu", "--tiny", "--out",
                           str(out), "--work", str(tmp_path / "work")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads((out / "gpu_check.json").read_text())
    assert {"steps", "eval", "versions", "device", "projection", "deepspeed"} <= set(res)
    assert res["device"] == "cpu" and res["versions"]["torch"]
    assert [s["step"] for s in res["steps"]] == [1, 2, 3]
    for s in res["steps"]:
        assert STEP_KEYS <= set(s)
        assert s["completions"] == 8 and s["rollout_s"] > 0 and s["policy_s"] > 0
        assert s["reference_s"] > 0 and s["tokens_per_s"] > 0 and s["peak_mem_gb"] > 0
    assert set(res["eval"]) == {"1", "4", "16"}
    for e in res["eval"].values():
        assert e["items"] == 16 and e["items_per_s"] > 0 and e["peak_mem_gb"] > 0
    assert res["config"]["video_tokens"] > 0
    assert res["config"]["prompt_tokens"] > res["config"]["video_tokens"]
    for stage in ("stage1", "stage2"):
        p = res["projection"][stage]
        assert p["gpu_hours"] > 0 and p["gpus"] == 8 and p["completions_per_step"] == 112
    assert res["projection"]["stage2"]["gpu_hours"] > res["projection"]["stage1"]["gpu_hours"]
    assert res["deepspeed"]["status"] == "skipped"  # no CUDA here
    assert "rollout_s" in proc.stdout and "stage1:" in proc.stdout  # the printed table
    assert not (tmp_path / "work" / "train" / "final").exists()  # stopped before any save
    assert not list((tmp_path / "work" / "train").glob("checkpoint-*"))


def test_check_imports_no_optional_heavy_deps():
    code = ("import sys; sys.argv = ['x']; import check, gpu_model, gpu_frames; "
            "import museg.gpu_projection; "
            "bad = [m for m in ('vllm', 'deepspeed', 'wandb', 'av', 'decord') if m in sys.modules];"
            " print(bad); sys.exit(bool(bad))")
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests' / 'gpu'}")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _pinned() -> list[tuple[str, bool]]:
    """(name==version, sdist-only) for each pin of wheels.txt and wheels-deepspeed.txt."""
    out, sdist = [], False
    lines = [ln for f in WHEEL_LISTS for ln in f.read_text().splitlines()]
    for line in lines:
        if line.startswith("#"):
            sdist = sdist or "sdist only" in line
            continue
        if line.strip():
            out.append((line.strip(), sdist))
            sdist = False
    return out


def test_wheel_list_is_pinned():
    pins = _pinned()
    assert pins and all("==" in p for p, _ in pins)
    names = {p.split("==")[0] for p, _ in pins}
    assert {"transformers", "hydra-core", "omegaconf", "antlr4-python3-runtime",
            "deepspeed", "pydantic"} <= names
    assert len(names) == len(pins)  # one version of each: two would stop the install


@pytest.mark.slow
def test_wheel_list_resolves(tmp_path):
    target = ["--python-version", "3.12", "--implementation", "cp",  # pip matches tags exactly:
              "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
              "--platform", "manylinux2014_x86_64"]  # (pydantic-core is manylinux2014)
    for pin, sdist in _pinned():
        mode = ["--no-binary=:all:"] if sdist else ["--only-binary=:all:"]
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", *mode,
                               *target, "-d", str(tmp_path), pin],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode and any(s in proc.stderr for s in (
                "Failed to establish", "Temporary failure", "Network is unreachable",
                "No route to host", "Could not fetch", "ConnectionError")):
            pytest.skip(f"offline: {pin}")
        assert proc.returncode == 0, f"{pin}: {proc.stderr[-2000:]}"
    assert len(list(tmp_path.iterdir())) == len(_pinned())
