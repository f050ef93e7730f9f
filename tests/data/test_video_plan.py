"""Frame plans equal the reference pipeline (qwen-vl-utils 0.0.10) for every input.

The reference is exercised through its own code: ``smart_nframes`` / ``smart_resize`` directly, and
``fetch_video`` end to end with a stand-in ``decord`` module (reports the frame count and fps we
choose, records the indices requested) and a recording stand-in for the final torchvision resize,
so no pixels are produced and any size can be tested.
"""

from __future__ import annotations

import sys
import types
import warnings
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from museg.config import compose_config
from museg.data.video import plan as P
from museg.data.video.plan import (
    EVAL_SPEC,
    TRAIN_SPEC,
    FramePlan,
    plan_frames,
    smart_nframes,
    smart_resize,
    video_spec_from_cfg,
    video_tokens,
)

vp = pytest.importorskip("qwen_vl_utils.vision_process")

COMMON_FPS = [24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0, 60.0, 15.0, 10.0, 1.0]
fps_st = st.one_of(st.sampled_from(COMMON_FPS),
                   st.floats(0.05, 240.0, allow_nan=False, allow_infinity=False))
pixels_st = st.one_of(st.integers(1, 4_000_000),
                      st.floats(1.0, 4e6, allow_nan=False, allow_infinity=False))


@st.composite
def specs(draw) -> dict:
    spec: dict = {}
    if draw(st.booleans()):
        spec["nframes"] = draw(st.integers(0, 1200))
    else:
        if draw(st.booleans()):
            spec["fps"] = draw(st.one_of(st.sampled_from([0.5, 1.0, 2.0, 4.0]),
                                         st.floats(0.01, 30.0, allow_nan=False)))
        if draw(st.booleans()):
            spec["min_frames"] = draw(st.integers(1, 64))
        if draw(st.booleans()):
            spec["max_frames"] = draw(st.integers(1, 1200))
    for key in ("min_pixels", "max_pixels"):
        if draw(st.booleans()):
            spec[key] = draw(pixels_st)
    if draw(st.booleans()):
        spec["total_pixels"] = draw(st.one_of(st.integers(1, 200_000_000), st.just(2809856)))
    return spec


# -- component equality ------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 8000), w=st.integers(1, 8000), mn=pixels_st, mx=pixels_st)
def test_smart_resize_equals_reference(h, w, mn, mx):
    try:
        ref = vp.smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx)
    except ValueError:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(h, w, 28, mn, mx)
        return
    assert smart_resize(h, w, 28, mn, mx) == ref


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 200_000), fps=fps_st, spec=specs())
def test_smart_nframes_equals_reference(total, fps, spec):
    try:
        ref = vp.smart_nframes(dict(spec), total_frames=total, video_fps=fps)
    except ValueError:
        with pytest.raises(ValueError, match="cannot sample"):
            smart_nframes(spec, total, fps)
        return
    assert smart_nframes(spec, total, fps) == ref


@settings(max_examples=200, deadline=None)
@given(total=st.integers(2, 100_000), data=st.data())
def test_indices_equal_torch_linspace(total, data):
    n = data.draw(st.integers(2, min(total, 2000)))
    assert P.frame_indices(total, n) == torch.linspace(0, total - 1, n).round().long().tolist()


# -- end to end through the reference's fetch_video ---------------------------------------------
@contextmanager
def reference_with_fake_decoder(total: int, fps: float, h: int, w: int):
    """Run qwen-vl-utils' real fetch_video against a stand-in decord; yields a record dict."""
    rec: dict = {}

    class FakeReader:
        def __init__(self, path, *a, **k):
            pass

        def __len__(self):
            return total

        def get_avg_fps(self):
            return fps

        def get_batch(self, idx):
            rec["indices"] = list(idx)
            arr = np.broadcast_to(np.zeros((1, 1, 1, 3), np.uint8), (len(idx), h, w, 3))
            return types.SimpleNamespace(asnumpy=lambda: arr)

    def fake_resize(video, size, **kw):
        rec["size"] = tuple(size)
        return torch.zeros(1)

    class TorchProxy:  # zero-copy torch.tensor for the blank broadcast frames
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def tensor(arr):
            with warnings.catch_warnings():  # read-only broadcast view; never written
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(arr)

    fake = types.ModuleType("decord")
    fake.VideoReader = FakeReader
    with mock.patch.dict(sys.modules, {"decord": fake}), \
            mock.patch.object(vp, "torch", TorchProxy()), \
            mock.patch.object(vp, "get_video_reader_backend", lambda: "decord"), \
            mock.patch.object(vp.transforms.functional, "resize", fake_resize):
        yield rec


def _reference_plan(total, fps, h, w, spec):
    with reference_with_fake_decoder(total, fps, h, w) as rec:
        _, sample_fps = vp.fetch_video({"video": "fake.mp4", **spec}, return_video_sample_fps=True)
    return rec["indices"], rec["size"], sample_fps


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(total=st.integers(1, 20_000), fps=fps_st, spec=specs(),
       hw=st.tuples(st.integers(1, 4000), st.integers(1, 4000)) | st.sampled_from(
           [(480, 854), (360, 640), (1080, 1920), (854, 480), (97, 161), (2, 300)]))
def test_plan_frames_equals_reference_fetch_video(total, fps, spec, hw):
    h, w = hw
    try:
        vp.smart_nframes(dict(spec), total, fps)
        vp.smart_resize(h, w)
    except ValueError:
        with pytest.raises(ValueError):
            plan_frames(total, fps, h, w, spec)
        return
    n = vp.smart_nframes(dict(spec), total, fps)
    indices, (rh, rw), sample_fps = _reference_plan(total, fps, h, w, spec)
    plan = plan_frames(total, fps, h, w, spec)
    assert plan.indices == indices
    assert (plan.height, plan.width) == (rh, rw)
    assert plan.sample_fps == sample_fps
    assert plan.nframes == len(indices) == n
    assert plan.video_tokens == video_tokens(plan) == n // 2 * (rh // 28) * (rw // 28)


@pytest.mark.parametrize("spec", [TRAIN_SPEC, EVAL_SPEC, {"nframes": 16}, {"resized_height": 300,
                                                                          "resized_width": 500}])
@pytest.mark.parametrize("total,fps,h,w", [(5400, 30.0, 480, 854), (36000, 29.97, 720, 1280),
                                           (100, 24000 / 1001, 98, 170), (30, 30.0, 160, 90)])
def test_museg_specs_equal_reference(spec, total, fps, h, w):
    indices, size, sample_fps = _reference_plan(total, fps, h, w, spec)
    plan = plan_frames(total, fps, h, w, spec)
    assert (plan.indices, (plan.height, plan.width), plan.sample_fps) == (indices, size, sample_fps)


# -- behaviour and messages --------------------------------------------------------------------
def test_train_spec_numbers():
    p = plan_frames(5400, 30.0, 480, 854, TRAIN_SPEC)  # 3 min at 30 fps
    assert (p.nframes, p.height, p.width, p.sample_fps) == (360, 84, 140, 2.0)
    assert p.video_tokens == 180 * 3 * 5 and p.second_per_grid_t == 1.0
    long = plan_frames(36000, 30.0, 480, 854, TRAIN_SPEC)  # 20 min: capped at 448 frames
    assert long.nframes == 448 and long.sample_fps == pytest.approx(448 / 1200)
    assert long.video_tokens <= TRAIN_SPEC["total_pixels"] // (28 * 28) * 2 // 2 + 448


def test_errors_are_clear():
    with pytest.raises(ValueError, match="cannot sample 0 frames from a video of 1 frames"):
        plan_frames(1, 25.0, 96, 160, TRAIN_SPEC)
    with pytest.raises(ValueError, match="aspect ratio"):
        plan_frames(100, 25.0, 2, 1000, TRAIN_SPEC)
    with pytest.raises(ValueError, match="unknown key"):
        plan_frames(100, 25.0, 96, 160, {"fsp": 2})
    with pytest.raises(ValueError, match="either `fps` or `nframes`"):
        plan_frames(100, 25.0, 96, 160, {"fps": 2, "nframes": 4})
    with pytest.raises(ValueError, match="fps=0"):
        plan_frames(100, 0.0, 96, 160, TRAIN_SPEC)


def test_spec_from_cfg():
    cfg = {"fps": 2.0, "max_frames": 448, "min_frames": 4, "min_pixels": 12544, "max_pixels": None,
           "total_pixels": 2809856, "backend": "torchcodec", "decode_timeout_s": 120,
           "cache": {"memory_items": 8}}
    assert video_spec_from_cfg(cfg) == TRAIN_SPEC
    assert video_spec_from_cfg({"fps": 2, "nframes": 32, "max_frames": 448}) == {"nframes": 32}
    assert video_spec_from_cfg({"fps": 2, "resize": "fast"}) == {"fps": 2.0, "resize": "fast"}
    with pytest.raises(ValueError, match=r"video\.max_frames: expected an integer"):
        video_spec_from_cfg({"max_frames": 4.5})
    with pytest.raises(ValueError, match=r"video\.fps: must be > 0"):
        video_spec_from_cfg({"fps": 0})
    with pytest.raises(ValueError, match="resize"):
        video_spec_from_cfg({"resize": "nearest"})
    # the composed config's video nodes are MUSEG's specs (plus the resize mode of each)
    composed = compose_config(["task=train", "model=tiny", "data=synthetic"])
    assert video_spec_from_cfg(composed.video) == {**TRAIN_SPEC, "resize": "fast"}
    assert video_spec_from_cfg(composed.eval.video) == {**EVAL_SPEC, "resize": "exact"}


def test_plan_roundtrip():
    p = plan_frames(300, 25.0, 96, 160, EVAL_SPEC)
    assert FramePlan.from_dict(p.to_dict()) == p
