"""Decoding: exact frames (index-coded synthetic videos), reference-equal pixels, processor grid,
typed errors on a corpus of broken files, and a hard timeout through the worker process."""

from __future__ import annotations

import os
import time

import pytest
import torch
from helpers_video import FPS_23976, make_bad_corpus, read_indices, write_index_video

from museg.data.video import (
    EVAL_SPEC,
    TRAIN_SPEC,
    VideoNotFoundError,
    VideoTimeoutError,
    VideoUnreadableError,
    decode_video,
    plan_frames,
    probe_video,
)
from museg.data.video.worker import WorkerPool, run_in_worker

BACKENDS = ["torchcodec", "decord"]
CASES = {  # name: (n_frames, fps, width, height)
    "23.976fps": (72, FPS_23976, 170, 98),
    "25fps_odd": (50, 25, 161, 97),
    "30fps_portrait": (60, 30, 90, 160),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {name: write_index_video(root / f"{name}.mp4", n, fps=fps, width=w, height=h)
            for name, (n, fps, w, h) in CASES.items()}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return make_bad_corpus(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_exact_frames(videos, name, backend):
    n_frames, fps, w, h = CASES[name]
    path = videos[name]
    info = probe_video(path, backend)
    assert (info.total_frames, info.height, info.width) == (n_frames, h, w)
    assert info.fps == pytest.approx(float(fps))
    for spec in (EVAL_SPEC, {"nframes": 9, "min_pixels": 3136, "total_pixels": 500_000}):
        v = decode_video(path, spec, backend=backend)
        plan = plan_frames(n_frames, info.fps, h, w, spec)
        assert v.plan == plan
        assert v.frames.dtype == torch.uint8 and v.frames.is_contiguous()
        assert tuple(v.frames.shape) == (plan.nframes, 3, plan.height, plan.width)
        assert read_indices(v.frames) == plan.indices  # the exact source frames
        assert v.meta["backend"] == backend and v.meta["path"] == str(path)
        assert v.meta["total_frames"] == n_frames and v.meta["sample_fps"] == plan.sample_fps
        assert v.meta["pts"] == pytest.approx([i / float(fps) for i in plan.indices], abs=2e-3)


def test_same_pixels_as_reference(videos, monkeypatch, capsys):
    """Same frames and pixels as qwen-vl-utils 0.0.10 fetch_video (decord): identical in 'exact'
    mode with either backend; 'fast' mode differs by less than a grey level on average."""
    vp = pytest.importorskip("qwen_vl_utils.vision_process")
    monkeypatch.setattr(vp, "get_video_reader_backend", lambda: "decord")
    for name, path in videos.items():
        ref, ref_fps = vp.fetch_video({"video": str(path), **TRAIN_SPEC},
                                      return_video_sample_fps=True)
        for backend in BACKENDS:
            v = decode_video(path, {**TRAIN_SPEC, "resize": "exact"}, backend=backend)
            assert v.plan.sample_fps == ref_fps and v.frames.shape == ref.shape
            assert torch.equal(v.frames.float(), ref), (name, backend)
        fast = decode_video(path, TRAIN_SPEC).frames.float()  # default: "fast"
        diff = (fast - ref).abs()
        with capsys.disabled():
            print(f"\n[resize=fast vs reference] {name}: max |diff| {diff.max():.0f}, "
                  f"mean {diff.mean():.3f} grey levels")
        assert diff.mean() < 1.0


def test_processor_grid_matches_plan(videos):
    """Our resized frames pass through the Qwen2-VL video processor unchanged in size."""
    tr = pytest.importorskip("transformers.models.qwen2_vl.video_processing_qwen2_vl")
    proc = tr.Qwen2VLVideoProcessor()  # patch 14, merge 2, temporal patch 2
    assert (proc.patch_size, proc.merge_size, proc.temporal_patch_size) == (14, 2, 2)
    for path in videos.values():
        v = decode_video(path, TRAIN_SPEC)
        out = proc(videos=[v.frames], do_resize=False, cap_pixels_per_frame=False,
                   return_tensors="pt")
        n, h, w = v.plan.nframes, v.plan.height, v.plan.width
        assert out["video_grid_thw"].tolist() == [[n // 2, h // 14, w // 14]]
        assert out["pixel_values_videos"].shape[0] // 4 == v.plan.video_tokens


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_corpus_typed_errors(bad, backend):
    for name in ("empty", "truncated", "truncated_faststart", "audio_only", "one_frame", "garbage",
                 "missing"):
        path = bad[name]
        err_type = VideoNotFoundError if name == "missing" else VideoUnreadableError
        with pytest.raises(err_type) as ei:
            decode_video(path, TRAIN_SPEC, backend=backend)
        err = ei.value
        assert err.path == str(path) and str(path) in str(err) and err.cause, name
        assert "\n" not in str(err), f"{name}: one-line message expected, got {err}"
    for name, cause in (("empty", "0 bytes"), ("missing", "not found"),
                        ("audio_only", "no video stream"), ("one_frame", "cannot plan frames")):
        with pytest.raises(VideoUnreadableError, match=cause):
            decode_video(bad[name], TRAIN_SPEC, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vfr_and_lying_header_decode_exactly(bad, backend):
    v = decode_video(bad["vfr"], {"nframes": 10}, backend=backend)
    assert read_indices(v.frames) == v.plan.indices and v.meta["total_frames"] == 50
    gaps = [b - a for a, b in zip(v.meta["pts"], v.meta["pts"][1:], strict=False)]
    assert max(gaps) - min(gaps) > 0.05  # the pts show the variable rate
    v = decode_video(bad["lying_header"], EVAL_SPEC, backend=backend)
    assert v.meta["total_frames"] == 48  # counted from the content, not the header's 480
    assert read_indices(v.frames) == v.plan.indices
    if backend == "torchcodec":
        assert v.meta["total_frames_header"] == 480


def test_errors_through_worker_and_unknown_backend(bad, videos):
    with pytest.raises(VideoUnreadableError, match="0 bytes"):
        decode_video(bad["empty"], TRAIN_SPEC, timeout_s=60)
    v = decode_video(videos["25fps_odd"], TRAIN_SPEC, timeout_s=60)
    assert read_indices(v.frames) == v.plan.indices
    with pytest.raises(ValueError, match="unknown backend 'pyav'"):
        decode_video(videos["25fps_odd"], TRAIN_SPEC, backend="pyav")


def test_timeout_kills_hung_decoder(tmp_path, videos):
    """Opening a FIFO with no writer blocks forever inside FFmpeg: the worker is killed."""
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    pool = WorkerPool(1)
    try:
        from museg.data.video.decode import _decode_wire

        pool.call(_decode_wire, str(videos["25fps_odd"]), TRAIN_SPEC, "torchcodec", 0,
                  timeout_s=60)  # warm start: worker start-up is not part of the timeout
        t0 = time.perf_counter()
        with pytest.raises(VideoTimeoutError, match=r"hang\.mp4.*decode_timeout_s=1s"):
            pool.call(_decode_wire, str(fifo), TRAIN_SPEC, "torchcodec", 0, timeout_s=1.0,
                      path=str(fifo))
        assert time.perf_counter() - t0 < 5
        assert pool.timeouts == 1
        frames, plan, _ = pool.call(_decode_wire, str(videos["25fps_odd"]), TRAIN_SPEC,
                                    "torchcodec", 0, timeout_s=60)  # fresh worker
        assert read_indices(torch.from_numpy(frames)) == plan["indices"]
    finally:
        pool.close()
    with pytest.raises(VideoTimeoutError):  # the public entry point, default pool
        decode_video(fifo, TRAIN_SPEC, timeout_s=1.0)


def test_worker_crash_is_typed():
    with pytest.raises(VideoUnreadableError, match="decoder process died"):
        run_in_worker(os.abort, timeout_s=30, path="x.mp4")
