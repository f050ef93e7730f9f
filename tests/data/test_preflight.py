"""Tests for museg.data.preflight on real files: synthetic videos, a missing and a broken file,
the real stage-1 annotations against a mostly empty video root, resume after a kill, eval target."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from museg.config import compose_config
from museg.data.synthetic import generate_synthetic
from museg.data.synthetic_render import Event, render_video

video = pytest.importorskip("museg.data.video", reason="museg.data.video (helper 'video') not present yet")
if not all(hasattr(video, n) for n in ("decode_video", "plan_frames", "video_spec_from_cfg")):
    pytest.skip("museg.data.video is incomplete (decode_video/plan_frames/video_spec_from_cfg)",
                allow_module_level=True)
from museg.data.preflight import MANIFEST, preflight  # noqa: E402


def make_cfg(run_dir: Path, train_file: Path, video_root: Path, **over) -> DictConfig:
    """The composed ``task=preflight model=tiny data=synthetic`` config pointed at these files,
    decoding in-process (``video.decode_timeout_s=null``), the first bad record failing; ``over``
    is merged on top (a misspelt key fails: the schema is in struct mode)."""
    cfg = compose_config(["task=preflight", "model=tiny", "data=synthetic"])
    values = {
        "run_dir": str(run_dir),
        "paths": {"video_root": str(video_root), "cache_dir": str(run_dir / "cache")},
        "data": {"train_file": str(train_file), "on_bad_record": "fail"},
        "video": {"decode_timeout_s": None},
        "train": {"max_prompt_length": 4096},
        "preflight": {"target": "train", "limit": None},
    }
    return OmegaConf.merge(cfg, values, over)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """3 synthetic videos + a record for a missing file and one for a broken (garbage) file."""
    paths = generate_synthetic(tmp_path_factory.mktemp("pf") / "syn", n_train_videos=3,
                               n_heldout_videos=1, queries_per_video=2, duration_range=(8, 10),
                               progress=False)
    (paths.video_root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    recs = [json.loads(x) for x in paths.train_file.read_text().splitlines()]
    base = {"problem": "Find 'x'.", "solution": [[1.0, 2.0]], "duration": 9.0, "task": "tvg"}
    extra = [base | {"idx": 100, "video": "videos/missing.mp4"},
             base | {"idx": 101, "video": "videos/broken.mp4"},
             base | {"idx": 102, "video": "videos/broken.mp4"}]
    f = paths.root / "mixed.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs + extra))
    return paths, f, len(recs)


def test_mixed_good_missing_broken(syn, tmp_path):
    paths, f, n_good = syn
    cfg = make_cfg(tmp_path / "run", f, paths.video_root)
    s = preflight(cfg)
    assert (s["samples"], s["samples_scanned"], s["videos"], s["scanned"]) == (n_good + 3,) * 2 + (5, 5)
    assert (s["ok"], s["missing"], s["broken"], s["timeout"]) == (3, 1, 1, 0)
    assert s["samples_affected"] == 3 and s["samples_over_max_prompt_length"] == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == s
    png = tmp_path / "run" / "token_budget.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "run" / MANIFEST)}
    assert rows["missing.mp4"]["status"] == "missing" and not rows["missing.mp4"]["ok"]
    assert rows["broken.mp4"]["status"] == "broken" and "broken.mp4" not in ("",) \
        and rows["broken.mp4"]["error"] and rows["broken.mp4"]["n_samples"] == 2
    good = rows["syn_train_0000.mp4"]
    first = json.loads(paths.train_file.read_text().splitlines()[0])
    assert good["ok"] and good["backend"] == "torchcodec" and good["fps"] == pytest.approx(10.0)
    assert good["total_frames"] == round(first["duration"] * 10)
    assert good["duration"] == pytest.approx(first["duration"], abs=0.11)
    assert good["annotation_duration"] == first["duration"] and good["duration_mismatch"] is False
    # the plan matches the planner's own answer for this file
    plan = video.plan_frames(good["total_frames"], 10.0, 112, 112, video.video_spec_from_cfg(cfg.video))
    assert good["planned_frames"] == len(plan.indices) == plan.nframes
    assert good["video_tokens"] == plan.video_tokens > 0
    assert s["video_tokens"]["max"] <= s["prompt_tokens_est"]["min"] + 10**6


def test_token_budget_over_limit_counted(syn, tmp_path):
    paths, f, n_good = syn
    s = preflight(make_cfg(tmp_path / "run", f, paths.video_root, train={"max_prompt_length": 60}))
    assert s["samples_over_max_prompt_length"] == n_good  # every usable sample exceeds 60 tokens
    assert s["prompt_tokens_est"]["min"] > 60


def test_resume_skips_done_videos_and_drops_partial_line(syn, tmp_path):
    paths, f, _ = syn
    cfg = make_cfg(tmp_path / "run", f, paths.video_root)
    full = preflight(cfg)
    manifest = tmp_path / "run" / MANIFEST
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed mid-write
    seen = []

    def counting_check(path, spec, backend, timeout_s):
        from museg.data.preflight import check_video

        seen.append(Path(path).name)
        return check_video(path, spec, backend, timeout_s)

    again = preflight(cfg, check=counting_check)
    done = {Path(json.loads(x)["path"]).name for x in lines[:2]}
    assert len(seen) == 3 and done.isdisjoint(seen)
    rows = read_rows(manifest)  # every line parses again: the partial one was dropped
    assert len(rows) == 5 and len({r["path"] for r in rows}) == 5
    for key in ("ok", "missing", "broken", "samples_affected", "video_tokens"):
        assert again[key] == full[key]
    seen.clear()
    preflight(cfg, check=counting_check)
    assert seen == []  # nothing left to do
    # a different frame spec invalidates the old rows
    preflight(make_cfg(tmp_path / "run", f, paths.video_root, video={"fps": 1.0}),
              check=counting_check)
    assert len(seen) == 5


def test_limit_and_eval_target_on_synthetic_config(tmp_path):
    cfg = make_cfg(tmp_path / "run", Path("generated"), tmp_path / "unused",
                   data={"train_file": "generated",
                         "synthetic": {"n_train_videos": 3, "n_heldout_videos": 2,
                                       "queries_per_video": 1, "duration_range": [8, 9]}},
                   eval={"kind": "tvg", "annotation": "generated", "template": "{problem}",
                         "video": {"fps": 2.0, "min_pixels": 12544, "total_pixels": 2809856,
                                   "max_frames": None, "max_pixels": None}},
                   preflight={"target": "train", "limit": 2})
    s = preflight(cfg)
    assert (s["videos"], s["scanned"], s["ok"], s["unscanned_videos"]) == (3, 2, 2, 1)
    assert s["samples"] == 3 and s["samples_scanned"] == 2
    assert s["annotation"].endswith("train.jsonl")
    cfg.preflight.target = "eval"
    cfg.preflight.limit = None
    cfg.run_dir = str(tmp_path / "run_eval")
    s = preflight(cfg)
    assert s["target"] == "eval" and s["annotation"].endswith("heldout_eval.json")
    assert (s["videos"], s["ok"]) == (2, 2)


def test_real_stage1_with_mostly_missing_videos(tmp_path, shared_data):
    shared = shared_data
    records = [json.loads(x) for x in (shared / "train" / "stage_1.jsonl").open().readlines()[:2]]
    root = tmp_path / "videos"  # the training paths carry 'videos/'; the root is that folder
    for r in records:
        target = root / r["video"].removeprefix("videos/")
        target.parent.mkdir(parents=True, exist_ok=True)
        render_video(target, [Event("red", 10, 40, (0, 0), (10, 10))], 80, (112, 112), 10, 0.6)
    cfg = make_cfg(tmp_path / "run", shared / "train" / "stage_1.jsonl", root,
                   data={"on_bad_record": "skip"}, preflight={"limit": 6})
    s = preflight(cfg)
    assert s["bad_records"] == 2 and s["samples"] == 5598
    assert (s["scanned"], s["ok"], s["missing"], s["unscanned_videos"]) == (6, 2, 4, s["videos"] - 6)
    assert 5000 < s["videos"] <= 5010
    rows = read_rows(tmp_path / "run" / MANIFEST)
    assert [r["video"] for r in rows[:2]] == [r["video"] for r in records]
    assert s["samples_affected"] == sum(r["n_samples"] for r in rows if not r["ok"]) > 0
    # 8-second stand-ins for an 80 s video / a clip with a segment ending at 25.3 s
    assert rows[0]["duration_mismatch"] is True and rows[0]["annotation_duration"] == 80.0
    assert rows[1]["duration_mismatch"] is True and rows[1]["max_segment_end"] >= 25.3
    assert s["duration_mismatch_videos"] == 2
    # the default policy refuses the real file loudly (two degenerate segments)
    from museg.data.annotations import AnnotationError

    with pytest.raises(AnnotationError, match="stage_1.jsonl:1349: field `solution`"):
        preflight(make_cfg(tmp_path / "run2", shared / "train" / "stage_1.jsonl", root))
    shutil.rmtree(tmp_path / "run2", ignore_errors=True)


@pytest.mark.slow
def test_worker_timeout_path_and_parallel_workers(syn, tmp_path):
    """The CLI default: decodes in killable worker processes (video.decode_timeout_s), 2 at once."""
    paths, f, n_good = syn
    cfg = make_cfg(tmp_path / "run", f, paths.video_root, video={"decode_timeout_s": 60},
                   preflight={"workers": 2})
    s = preflight(cfg)
    assert (s["ok"], s["missing"], s["broken"], s["timeout"]) == (3, 1, 1, 0)
    assert s["samples_affected"] == 3
