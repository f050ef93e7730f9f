"""The newcomer's path (issue 14): museg's --help, -m with --cfg job, checkpoint-aware model
settings, the MUSEG release's data layout, eval without videos, demo progress pieces."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from museg.cli_help import config_groups, render_help, sweep_runs, task_lines
from museg.config import CONFIG_PATH, TASKS, compose_config
from museg.data.layout import first_existing
from museg.demo.progress import PhaseClock, _Relay
from museg.model.checkpoint_info import (
    CheckpointMismatch,
    apply_checkpoint_settings,
    choose_model_settings,
    read_checkpoint_info,
)

REPO = Path(__file__).resolve().parents[2]


def _museg(args: list[str], tmp_path: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUSEG_OUTPUT_ROOT=str(tmp_path / "out"))
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=timeout)


# ------------------------------------------------------------------------------------ --help
def test_help_lists_every_task_group_and_examples():
    text = render_help(TASKS, CONFIG_PATH)
    for task in TASKS:  # the task list is museg.run.TASKS, whatever it holds
        assert f"\n  {task} " in text
    assert all(line.strip() for line in task_lines(TASKS).values())
    groups = config_groups(CONFIG_PATH)
    assert {"model", "stage", "benchmark", "launcher", "experiment", "data"} <= set(groups)
    assert "slurm_example" not in text and "deepspeed" not in groups
    assert "tiny*" in text and "no arguments: the offline demo" in text
    assert text.count("\n  python -m museg.run") == 5


def test_new_task_without_a_line_gets_its_docstring():
    lines = task_lines({"x": "museg.eval.score:score"})
    assert lines["x"].startswith("Score ``cfg.eval.predictions``")


def test_help_cli_and_hydra_help(tmp_path):
    out = _museg(["--help"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("museg:") and not out.stderr.strip()
    hydra = _museg(["--hydra-help"], tmp_path)
    assert hydra.returncode == 0 and "Hydra" in hydra.stdout


# ------------------------------------------------------------------------- -m ... --cfg job
def test_sweep_runs_is_the_cartesian_product():
    runs = sweep_runs(["model=7b", "reward.weights.format=0.5,1.0", "seed=1,2"])
    assert len(runs) == 4 and all(r[1][0] == "model=7b" for r in runs)
    assert runs[3][0] == "reward.weights.format=1.0,seed=2"


def test_multirun_cfg_job_prints_each_run(tmp_path):
    out = _museg(["-m", "stage=1", "model=7b", "reward.weights.format=0.5,1.0", "--cfg", "job"],
                 tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stdout.count("# sweep run ") == 2
    assert "format: 0.5" in out.stdout and "format: 1.0" in out.stdout


# ---------------------------------------------------------------- checkpoint-aware settings
def _ckpt(tmp_path: Path, name: str, config: dict) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return d


QWEN7B = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
          "hidden_size": 3584, "num_hidden_layers": 28, "torch_dtype": "bfloat16"}
QWEN3B_V5 = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "dtype": "bfloat16",
             "text_config": {"hidden_size": 2048, "num_hidden_layers": 36}}
TINY = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "dtype": "float32",
        "text_config": {"hidden_size": 128, "num_hidden_layers": 2}}


def test_eval_of_a_real_checkpoint_under_model_tiny_gets_its_settings(tmp_path):
    info = read_checkpoint_info(str(_ckpt(tmp_path, "m7", QWEN7B)))
    assert info is not None and info.size == "7b"
    choice = choose_model_settings(info, "tiny", "eval", "float32", "sdpa")
    assert (choice.dtype, choice.attention) == ("bfloat16", "auto")
    assert "model=7b" in choice.note
    kept = choose_model_settings(info, "tiny", "eval", "float32", "sdpa", {"model.dtype"})
    assert (kept.dtype, kept.attention) == ("float32", "auto")
    info3 = read_checkpoint_info(str(_ckpt(tmp_path, "m3", QWEN3B_V5)))
    assert info3.size == "3b"
    assert "model=3b" in choose_model_settings(info3, "tiny", "eval", "float32", "sdpa").note


def test_refusals_are_one_line_naming_the_model_choice(tmp_path):
    info = read_checkpoint_info(str(_ckpt(tmp_path, "m7", QWEN7B)))
    with pytest.raises(CheckpointMismatch, match=r"fix: add model=7b\)$"):
        choose_model_settings(info, "tiny", "train", "float32", "sdpa")
    with pytest.raises(CheckpointMismatch, match="model=7b or model=3b"):
        choose_model_settings(None, "tiny", "eval", "float32", "sdpa", model_path="/x")
    other = read_checkpoint_info(str(_ckpt(tmp_path, "q2", QWEN7B | {
        "architectures": ["Qwen2VLForConditionalGeneration"]})))
    with pytest.raises(CheckpointMismatch, match="museg loads Qwen2_5_VL"):
        choose_model_settings(other, "tiny", "eval", "float32", "sdpa")


def test_tiny_checkpoints_and_named_models_are_left_alone(tmp_path):
    tiny = read_checkpoint_info(str(_ckpt(tmp_path, "t", TINY)))
    assert tiny.size == "tiny"
    assert choose_model_settings(tiny, "tiny", "train", "float32", "sdpa") is None
    seven = read_checkpoint_info(str(_ckpt(tmp_path, "m7", QWEN7B)))
    assert choose_model_settings(seven, "7b", "train", "bfloat16", "auto") is None


def test_apply_checkpoint_settings_on_a_composed_config(tmp_path):
    ck = _ckpt(tmp_path, "m7", QWEN7B)
    cfg = compose_config(["task=eval", f"model.path={ck}"])
    assert apply_checkpoint_settings(cfg, [f"model.path={ck}"]) is not None
    assert (cfg.model.dtype, cfg.model.attention) == ("bfloat16", "auto")
    cfg = compose_config(["task=score", f"model.path={ck}"])
    assert apply_checkpoint_settings(cfg) is None


def test_train_refusal_from_the_command_line(tmp_path, shared_data):
    ck = _ckpt(tmp_path, "m7", QWEN7B)
    (tmp_path / "videos").mkdir()
    out = _museg(["task=train", f"model.path={ck}", f"paths.data_root={shared_data}",
                  f"paths.video_root={tmp_path / 'videos'}"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "fix: add model=7b" in out.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------ data layout
def _release_layout(root: Path, shared: Path) -> Path:
    """The MUSEG release as cloned: data/train, data/eval/grounding, data/eval/et_bench, videos/."""
    data = root / "MUSEG" / "data"
    (data / "train").mkdir(parents=True)
    (data / "eval" / "grounding").mkdir(parents=True)
    (data / "eval" / "et_bench").mkdir(parents=True)
    (root / "MUSEG" / "videos" / "et_bench_processed").mkdir(parents=True)
    for f in ("stage_1.jsonl", "stage_2.jsonl"):
        (data / "train" / f).symlink_to(shared / "train" / f)
    for b in ("charades_sta", "thumos14", "thumos15"):
        (data / "eval" / "grounding" / f"{b}.json").symlink_to(shared / "eval" / f"{b}.json")
    (data / "eval" / "et_bench" / "subset.json").symlink_to(shared / "eval" / "et_bench_subset.json")
    (data / "eval" / "et_bench" / "et_bench.json").write_text("[]")
    return data


def test_release_layout_as_downloaded(tmp_path, shared_data):
    data = _release_layout(tmp_path, shared_data)
    cfg = compose_config([f"paths.data_root={data}", "benchmark=et_bench_subset"])
    assert cfg.paths.video_root == str(tmp_path / "MUSEG" / "videos")
    assert cfg.data.train_file == str(data / "train" / "stage_1.jsonl")
    assert cfg.eval.annotation == str(data / "eval" / "et_bench" / "et_bench.json")
    assert cfg.eval.subset == str(data / "eval" / "et_bench" / "subset.json")
    assert cfg.eval.video_root == str(tmp_path / "MUSEG" / "videos" / "et_bench_processed")
    cfg = compose_config([f"paths.data_root={data}", "benchmark=thumos15"])
    assert cfg.eval.annotation == str(data / "eval" / "grounding" / "thumos15.json")
    assert cfg.eval.video_root is None


def test_museg_layout_still_first(tmp_path, shared_data):
    cfg = compose_config([f"paths.data_root={shared_data}"])
    assert cfg.eval.annotation == str(shared_data / "eval" / "charades_sta.json")
    assert first_existing(str(tmp_path / "a"), str(tmp_path)) == str(tmp_path)


def test_stage1_dry_run_on_the_release_layout(tmp_path, shared_data):
    data = _release_layout(tmp_path, shared_data)
    out = _museg(["-m", "launcher=slurm", "stage=1", "model=7b", f"paths.data_root={data}",
                  "launcher.dry_run=true"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sbatch" in out.stdout.lower() or "#SBATCH" in out.stdout


# ---------------------------------------------------------------------------- eval, no videos
def test_eval_with_no_videos_is_one_line(tmp_path, shared_data):
    (tmp_path / "videos").mkdir()
    out = _museg(["task=eval", "benchmark=charades_sta", f"paths.data_root={shared_data}",
                  f"paths.video_root={tmp_path / 'videos'}"], tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr and "ERROR" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("museg: error: eval: none of the ") and "paths.video_root=" in last
    assert "first missing: " + str(tmp_path / "videos" / "charades") in last


# ------------------------------------------------------------------------------ demo progress
def test_phase_clock_counts_and_estimates():
    lines: list[str] = []
    t = [0.0]
    clock = PhaseClock(total=6, now=lambda: t[0])
    for kind, units in [("warmup", 600), ("eval", 586), ("train", 150), ("eval", 586),
                        ("train", 100), ("eval", 586)]:
        clock.start(kind, kind, units, out=lines.append)
        t[0] += units * 0.5  # each phase takes 0.5 s per unit
    clock.finish(out=lines.append)
    starts = [ln for ln in lines if "done in" not in ln]
    assert [ln.split()[1] for ln in starts] == [f"{i}/6" for i in range(1, 7)]
    assert "ETA: see its progress bar" in starts[1] and "ETA 4 min 53 s" in starts[3]
    assert "ETA 50 s" in starts[4] and lines[-1].endswith("(elapsed 21 min 44 s)")


def test_relay_collapses_bar_updates_off_a_terminal():
    console, log = io.StringIO(), io.StringIO()
    relay = _Relay(log, console, tty=False)
    relay.feed_bytes("a line\r\ntrain:  10%|█".encode())
    relay.feed_bytes("   | 1/10\rtrain: 100%|██| 10/10\r\ndone\n".encode())
    relay.close()
    assert log.getvalue().splitlines() == ["a line", "train: 100%|██| 10/10", "done"]
    assert "train:  10%|█   | 1/10" in console.getvalue()  # first bar state, then none for 30 s


# ---------------------------------------------------------------------------- preflight verdict
def test_preflight_verdict_sources_and_exit_code(tmp_path, shared_data):
    (tmp_path / "videos").mkdir()
    out = _museg(["task=preflight", "data=museg_stage1", f"paths.data_root={shared_data}",
                  f"paths.video_root={tmp_path / 'videos'}"], tmp_path, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in out.stdout.splitlines() if ln[:1].isalpha()}
    from collections import Counter

    from museg.data.annotations import load_train_jsonl
    from museg.data.preflight_report import source_of

    policy = compose_config(["data=museg_stage1"]).data.on_bad_record  # as the run used
    kept = load_train_jsonl(shared_data / "train" / "stage_1.jsonl", tmp_path, policy)
    expect = Counter(source_of(v) for v in {s.video for s in kept})
    assert {k: int(v.replace(",", "")) for k, v in rows.items() if k in expect} == dict(expect)
    assert rows["charades"] == "2,260" and rows["tacos"] == "28"  # as in issue 14
    assert "token budget: not measured" in out.stdout and "elapsed: " in out.stdout
    assert "set data.on_bad_record=skip" not in out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    n = len({s.video for s in kept})
    assert last.startswith(f"verdict: BLOCKED: {n} of {n} ") and "max_failure_fraction" in last
    summary = json.loads(next((tmp_path / "out").rglob("summary.json")).read_text())
    assert summary["samples_over_max_prompt_length"] is None and summary["histogram"] is None


def test_preflight_eval_target_with_missing_annotation_is_one_line(tmp_path, shared_data):
    (tmp_path / "videos").mkdir()
    out = _museg(["task=preflight", "preflight.target=eval", "benchmark=perception_test",
                  f"paths.data_root={shared_data}", f"paths.video_root={tmp_path / 'videos'}"],
                 tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "museg: error: preflight: eval.annotation=")
