"""Runs that cannot silently mix, lose or corrupt (entrypoint side): every bad value and path is
refused up front (one line, exit 2, no run directory), one writer per run directory, resume=never
gets a fresh sibling, score input errors, loader edge cases, special tokens, wandb offline
fallback, unreadable videos in eval and preflight."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_eval import eval_cfg, grounding_bench

from museg.config import check_overrides, compose_config
from museg.data.annotations import AnnotationError, load_grounding_eval, load_train_jsonl
from museg.data.preflight import check_video
from museg.eval.runner import evaluate
from museg.eval.score import ScoreError, score
from museg.launch.wandb_probe import WandbUnreachableError, ensure_wandb_reachable
from museg.runguard import (
    CLAIM_NAME,
    acquire_lock,
    prepare_run_dir,
    release_lock,
    select_run_dir,
)

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
BASE = ["task=train", "model=tiny", "data=synthetic"]

BAD_VALUES = [
    ("video.max_frames=0", "video.max_frames"), ("train.temperature=0", "train.temperature"),
    ("train.max_completion_length=0", "train.max_completion_length"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens"),
    ("train.lr_scheduler_type=warp", "train.lr_scheduler_type"),
    ("reward.weights.format=nan", "reward.weights.format"),
    ("video.decode_timeout_s=0", "video.decode_timeout_s"), ("resume=garbage", "resume"),
    ("preflight.target=nope", "preflight.target"),
    ("data.synthetic.n_train_videos=0", "data.synthetic.n_train_videos"),
    ("data.synthetic.queries_per_video=abc", "data.synthetic.queries_per_video"),
    ("init_from=/nonexistent/run", "init_from"), ("train.beta=nan", "train.beta"),
    ("train.top_p=1.5", "train.top_p"), ("train.warmup_ratio=1.5", "train.warmup_ratio"),
    ("video.min_frames=9 video.max_frames=8", "video.min_frames"), ("video.fps=inf", "video.fps"),
    ("eval.batch_size=0", "eval.batch_size"), ("launcher.nproc_per_node=0", "launcher.nproc_per_node"),
    ("eval.limit=0", "eval.limit"), ("eval.limit=-1", "eval.limit"),
    ("data.max_samples=-2", "data.max_samples"), ("paths.output_root=", "paths.output_root"),
    ("experiment_name=../escape", "experiment_name"), ("experiment_name=a/b", "experiment_name"),
    ("experiment_name=" + "x" * 300, "experiment_name"),
    ("model.lora.enabled=true model.lora.target_modules=[]", "model.lora.target_modules"),
    ("launcher.dist_backend=", "launcher.dist_backend"), ("demo.stages=[]", "demo.stages"),
]


def _cli(*args: str, cwd: Path | None = None, env: dict | None = None,
         timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, cwd=str(cwd or REPO), env=env or ENV, timeout=timeout)


@pytest.mark.parametrize(("args", "key"), BAD_VALUES, ids=[a for a, _ in BAD_VALUES])
def test_bad_value_is_one_line_from_the_precheck(args, key, tmp_path):
    problem = check_overrides([*BASE, f"paths.output_root={tmp_path}", *args.split()])
    assert problem is not None and problem.startswith(f"{key}:") and "fix" in problem


def test_slurm_without_client_tools_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch / srun
    problem = check_overrides([*BASE, f"paths.output_root={tmp_path}", "launcher=slurm"])
    assert problem and problem.startswith("launcher:") and "sbatch" in problem


def test_output_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    problem = check_overrides([*BASE, f"paths.output_root={tmp_path / 'f' / 'runs'}"])
    assert problem and "is a file" in problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_root_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert "not writable" in check_overrides([*BASE, f"paths.output_root={ro / 'x'}"])


@pytest.mark.parametrize("args", ["video.max_frames=0", "train.beta=nan", "eval.limit=-1",
                                  "paths.output_root=", "experiment_name=../x", "resume=yes"])
def test_cli_refuses_with_exit_2_and_creates_no_run_directory(args, tmp_path):
    out = tmp_path / "out"
    extra = [] if args.startswith("paths.output_root") else [f"paths.output_root={out}"]
    res = _cli(*BASE, *extra, args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ run directory + lock
def test_resume_never_takes_a_fresh_sibling_and_auto_continues_it(tmp_path):
    base = tmp_path / "default"
    (base / "checkpoints" / "step-3").mkdir(parents=True)  # an old run's state
    d, same = select_run_dir(base, "never", "pid:h:1")
    assert d == tmp_path / "default.run2" and not same
    (d / "metrics.jsonl").write_text("{}\n")
    assert select_run_dir(base, "auto", "pid:h:2")[0] == d  # a plain rerun continues the new run
    assert select_run_dir(base, "never", "pid:h:3")[0] == tmp_path / "default.run3"
    # the same job (a SLURM requeue) gets its own directory back, and continues it
    assert select_run_dir(base, "never", "pid:h:1") == (d, True)


def test_requeued_resume_never_job_continues_its_own_run(tmp_path, monkeypatch):
    monkeypatch.setattr("museg.runguard.job_identity", lambda: ("job:77", 0))
    base = tmp_path / "run"
    (base / "final").mkdir(parents=True)
    overrides = ["task=train", f"run_dir={base}", "resume=never", "wandb.mode=disabled",
                 "launcher.dry_run=false"]
    cfg = compose_config(overrides)
    prepare_run_dir(cfg)
    fresh = Path(cfg.run_dir)
    assert fresh.name == "run.run2" and json.loads((fresh / CLAIM_NAME).read_text())["job"] == "job:77"
    (fresh / "checkpoints").mkdir()
    release_lock(fresh)
    again = compose_config(overrides)  # run_dir=base, resume=never again
    prepare_run_dir(again)  # the requeued job
    assert Path(again.run_dir) == fresh and again.resume == "auto"
    release_lock(fresh)


def _holder(run_dir: Path) -> subprocess.Popen:
    code = ("import sys, time; from museg.runguard import acquire_lock; "
            f"acquire_lock({str(run_dir)!r}, 'pid:holder'); print('locked', flush=True); "
            "time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=str(REPO))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_naming_pid_and_host(tmp_path):
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        res = _cli("task=eval", "benchmark=synthetic", "model=tiny", f"run_dir={run_dir}",
                   f"paths.output_root={tmp_path}")
        assert res.returncode == 2, res.stderr[-2000:]
        line = res.stderr.strip().splitlines()[-1]
        assert f"PID {holder.pid}" in line and socket.gethostname() in line
        assert "Traceback" not in res.stderr and not (run_dir / "predictions.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    fd = acquire_lock(run_dir, "pid:me")  # stale once the owner died
    assert fd >= 0
    release_lock(run_dir)


@pytest.mark.slow
def test_two_concurrent_training_runs_one_refused_clean_log(tmp_path):
    args = [*BASE, f"paths.output_root={tmp_path}", "train.max_steps=3", "train.save_steps=1",
            "data.synthetic.n_train_videos=4", "data.synthetic.n_heldout_videos=1",
            "train.num_generations=2", "train.max_completion_length=8", "video.max_frames=4",
            "train.prompts_per_step=2"]
    procs = [subprocess.Popen([sys.executable, "-m", "museg.run", *args], cwd=str(REPO), env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    refused = outs[[p.returncode for p in procs].index(2)][1]
    assert "is in use by PID" in refused
    run = next((tmp_path / "default" / "train").iterdir())
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# ------------------------------------------------------------------------------ loaders
def test_bom_and_trailing_garbage(tmp_path):
    rec = {"idx": 0, "problem": "When?", "solution": [[0.0, 1.0]], "video": "a.mp4", "task": "tvg"}
    f = tmp_path / "train.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + (json.dumps(rec) + "\n").encode() * 2)
    assert len(load_train_jsonl(f, tmp_path)) == 2
    ev = tmp_path / "eval.json"
    item = {"video": "a.mp4", "question": "When?", "groundtruth": [[0, 1]]}
    ev.write_bytes(b"\xef\xbb\xbf" + json.dumps([item]).encode())
    assert len(load_grounding_eval(ev, tmp_path)) == 1
    ev.write_text(json.dumps([item]) + "\n  garbage")
    with pytest.raises(AnnotationError, match=r"eval.json:2: .*after the list's closing.*offset"):
        load_grounding_eval(ev, tmp_path)


@pytest.mark.parametrize("token", ["<|video_pad|>", "<|im_end|>", "<|vision_start|>"])
def test_special_tokens_in_text_are_rejected_or_skipped(tmp_path, token):
    rec = {"idx": 0, "problem": "When?", "solution": [[0.0, 1.0]], "video": "a.mp4", "task": "tvg"}
    bad = {**rec, "idx": 1, "problem": f"When does {token} happen?"}
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps(rec) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(AnnotationError) as err:
        load_train_jsonl(f, tmp_path, on_bad_record="fail")
    assert f"{f}:2" in str(err.value) and token in str(err.value)
    skipped: list[str] = []
    assert len(load_train_jsonl(f, tmp_path, on_bad_record="skip", bad_records=skipped)) == 1
    assert len(skipped) == 1 and token in skipped[0]


# ------------------------------------------------------------------------------ score
def test_score_input_errors_are_one_line_exit_2(tmp_path):
    pred = tmp_path / "bin.json"
    pred.write_bytes(bytes(range(256)))
    res = _cli("task=score", "benchmark=synthetic", f"predictions={pred}",
               f"paths.output_root={tmp_path / 'out'}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "not a UTF-8 text file" in res.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("empty.json", "", "empty"),
    ("text.json", "hello", "unknown predictions format"),
    ("deep.json", "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("nogt.jsonl", '{"item_id": "0", "answer": "1-2"}\n', "no `groundtruth`"),
    ("ref.json", '[{"video": "a.mp4", "groundtruth": [[0, 1]], "result": "x"}]', "`result` is a str"),
])
def test_score_rejects_bad_files(tmp_path, name, content, needle):
    ann, videos = grounding_bench(tmp_path, n_items=6)
    pred = tmp_path / name
    pred.write_text(content)
    cfg = eval_cfg(tmp_path / "run", ann, videos, predictions=str(pred))
    with pytest.raises((ScoreError, ValueError), match=needle):
        score(cfg)


def test_score_partial_file_needs_allow_partial(tmp_path):
    ann, videos = grounding_bench(tmp_path, n_items=6)
    items = json.loads(ann.read_text())
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps({"item_id": str(i), "answer": "1-2",
                                        "groundtruth": it["groundtruth"]}) + "\n"
                            for i, it in enumerate(items[:4])))
    cfg = eval_cfg(tmp_path / "run", ann, videos, benchmark="syn", predictions=str(pred))
    with pytest.raises(ScoreError, match="2 benchmark item.*allow_partial"):
        score(cfg)
    cfg.eval.allow_partial = True
    score(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "partial: 4 of 6 items" in json.dumps(results)


# ------------------------------------------------------------------------ videos in eval
def test_unreadable_paths_score_zero_and_are_listed_in_eval(tmp_path):
    ann, videos = grounding_bench(tmp_path, n_items=6)
    items = json.loads(ann.read_text())
    os.symlink(tmp_path / "loop_b.mp4", tmp_path / "loop_a.mp4")
    os.symlink(tmp_path / "loop_a.mp4", tmp_path / "loop_b.mp4")
    (tmp_path / "x.mp4").write_bytes(b"file")
    items[0]["video"] = str(tmp_path / "loop_a.mp4")
    items[1]["video"] = str(tmp_path / "x.mp4" / "child.mp4")
    ann.write_text(json.dumps(items))
    cfg = eval_cfg(tmp_path / "run", ann, videos, max_new_tokens=4)
    cfg.video.max_failure_fraction = 1.0
    evaluate(cfg)
    recs = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    errors = {r["item_id"]: r.get("error", "") for r in recs}
    assert "ELOOP" in errors["0"] and "ENOTDIR" in errors["1"]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert str(tmp_path / "loop_a.mp4") in json.dumps(results)
    row = check_video(str(tmp_path / "loop_a.mp4"), {}, "torchcodec", None)
    assert row["status"] == "broken" and "symbolic link loop" in row["error"]


# ------------------------------------------------------------------------------ wandb
def test_wandb_online_without_network_falls_back_or_refuses(monkeypatch, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = compose_config(["wandb.mode=online", "wandb.require_online=true"])
    t0 = time.monotonic()
    with pytest.raises(WandbUnreachableError, match="require_online"):
        ensure_wandb_reachable(cfg)
    cfg.wandb.require_online = False
    assert ensure_wandb_reachable(cfg) == "offline" and os.environ["WANDB_MODE"] == "offline"
    assert time.monotonic() - t0 < 20
    assert sum("logging offline" in r.getMessage() for r in caplog.records) == 1
