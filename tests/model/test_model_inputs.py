"""Prompt text and video inputs: no resize/resample, grid = plan, second_per_grid_ts from sample fps,
token counts, M-RoPE time spacing, per-generation expansion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from museg.model import (
    VideoInputError,
    build_prompt_text,
    build_tiny_model,
    build_video_inputs,
    expand_inputs,
    load_model_and_processor,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)
    yield load_model_and_processor(path, dtype="float32", attention="sdpa")
    mp.undo()


def _frames(t, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def _decoded(frames, fps):  # duck-typed museg.data.video.DecodedVideo
    return SimpleNamespace(frames=frames, plan=SimpleNamespace(sample_fps=fps), meta={})


def test_prompt_text_has_one_video_and_generation_prompt(loaded):
    proc = loaded[1]
    text = build_prompt_text(proc, "Find all occurrences of jumping.")
    assert text.count("<|video_pad|>") == 1
    assert text.count("<|vision_start|><|video_pad|><|vision_end|>Find all") == 1
    assert text.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("t", "h", "w", "fps"),
    [(8, 56, 84, 2.0), (4, 112, 112, 0.5), (6, 28, 56, 1.998), (2, 84, 28, 30.0)],
)
def test_grid_fps_and_token_count_single(loaded, t, h, w, fps):
    proc = loaded[1]
    text = build_prompt_text(proc, "Q")
    out = build_video_inputs(proc, [text], [_decoded(_frames(t, h, w), fps)])
    assert out["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14]]
    torch.testing.assert_close(out["second_per_grid_ts"], torch.tensor([2.0 / fps]))
    n_pad = int((out["input_ids"] == proc.video_token_id).sum())
    assert n_pad == (t // 2) * (h // 28) * (w // 28)
    assert out["pixel_values_videos"].shape == ((t // 2) * (h // 14) * (w // 14), 3 * 2 * 14 * 14)


def test_batch_of_two_sizes_and_tuple_input(loaded):
    proc = loaded[1]
    texts = [build_prompt_text(proc, "first"), build_prompt_text(proc, "second question")]
    out = build_video_inputs(
        proc, texts, [(_frames(8, 56, 84), 2.0), _decoded(_frames(4, 112, 112), 1.0)]
    )
    assert out["video_grid_thw"].tolist() == [[4, 4, 6], [2, 8, 8]]
    torch.testing.assert_close(out["second_per_grid_ts"], torch.tensor([1.0, 2.0]))
    counts = (out["input_ids"] == proc.video_token_id).sum(1).tolist()
    assert counts == [4 * 2 * 3, 2 * 4 * 4]
    assert proc.tokenizer.padding_side == "left"
    assert out["attention_mask"][:, -1].all()  # left padded: every row ends with a real token


def test_frames_are_neither_resized_nor_resampled(loaded):
    """Frame k is constant 10*k: each patch row must hold exactly frames 2t and 2t+1, normalized."""
    proc = loaded[1]
    t, h, w = 8, 56, 84
    frames = (
        (torch.arange(t, dtype=torch.uint8) * 10).view(t, 1, 1, 1).expand(t, 3, h, w).contiguous()
    )
    out = build_video_inputs(proc, [build_prompt_text(proc, "Q")], [(frames, 2.0)])
    rows = out["pixel_values_videos"].view(t // 2, -1, 3, 2, 14, 14)  # [grid_t, hw, C, T, p, p]
    for gt in range(t // 2):
        for c in range(3):
            for dt in range(2):
                want = (10 * (2 * gt + dt) / 255 - MEAN[c]) / STD[c]
                torch.testing.assert_close(
                    rows[gt, :, c, dt], torch.full_like(rows[gt, :, c, dt], want), atol=1e-5, rtol=0
                )


def test_time_positions_follow_sample_fps(loaded):
    """M-RoPE temporal ids step by tokens_per_second * 2 / sample_fps between temporal patches."""
    model, proc = loaded
    tps = model.config.vision_config.tokens_per_second
    for fps in (2.0, 0.5):
        out = build_video_inputs(proc, [build_prompt_text(proc, "Q")], [(_frames(8, 28, 28), fps)])
        pos, _ = model.model.get_rope_index(
            out["input_ids"],
            out["mm_token_type_ids"],
            video_grid_thw=out["video_grid_thw"],
            second_per_grid_ts=out["second_per_grid_ts"],
            attention_mask=out["attention_mask"],
        )
        vid = out["input_ids"][0] == proc.video_token_id
        temporal = pos[0, 0, vid]
        steps = temporal.diff().tolist()
        assert steps == [int(tps * 2 / fps)] * 3


@pytest.mark.parametrize(
    ("frames", "fps", "match"),
    [
        (torch.zeros(4, 3, 56, 56), 2.0, "uint8"),
        (torch.zeros(5, 3, 56, 56, dtype=torch.uint8), 2.0, "T even"),
        (torch.zeros(4, 3, 50, 56, dtype=torch.uint8), 2.0, "multiples of 28"),
        (torch.zeros(4, 56, 56, 3, dtype=torch.uint8), 2.0, "3 channels"),
        (torch.zeros(4, 3, 56, 56, dtype=torch.uint8), 0.0, "sample_fps"),
    ],
)
def test_bad_frames_raise_clear_errors(loaded, frames, fps, match):
    proc = loaded[1]
    with pytest.raises(VideoInputError, match=match):
        build_video_inputs(proc, [build_prompt_text(proc, "Q")], [(frames, fps)])


def test_object_without_plan_is_rejected(loaded):
    proc = loaded[1]
    with pytest.raises(VideoInputError, match="sample_fps"):
        build_video_inputs(
            proc, [build_prompt_text(proc, "Q")], [SimpleNamespace(frames=_frames(4, 28, 28))]
        )


def test_expand_inputs_keeps_each_rows_video(loaded):
    model, proc = loaded
    texts = [build_prompt_text(proc, "a much longer first question"), build_prompt_text(proc, "b")]
    inputs = build_video_inputs(
        proc, texts, [(_frames(4, 56, 84, 1), 2.0), (_frames(2, 28, 56, 2), 1.0)]
    )
    big = expand_inputs(inputs, 3, proc)
    assert big["input_ids"].shape[0] == 6
    assert big["video_grid_thw"].tolist() == [[2, 4, 6]] * 3 + [[1, 2, 4]] * 3
    torch.testing.assert_close(big["second_per_grid_ts"], torch.tensor([1.0] * 3 + [2.0] * 3))
    with torch.no_grad():
        small_logits = model(**inputs).logits
        big_logits = model(**big).logits
    keep = inputs["attention_mask"].bool()
    for g in range(3):
        rows = torch.tensor([0, 1]) * 3 + g
        torch.testing.assert_close(big_logits[rows][keep], small_logits[keep], atol=1e-5, rtol=1e-5)
