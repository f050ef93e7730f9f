"""Prompt text and processor inputs for Qwen2.5-VL with pre-planned, pre-resized video frames.

``build_prompt_text`` renders a question through the processor's chat template with one video
placeholder and the assistant generation prompt. ``build_video_inputs`` turns prompt texts plus
decoded videos (``museg.data.video.DecodedVideo``-like objects with ``.frames`` uint8 ``[T,C,H,W]``
and ``.plan.sample_fps``, or ``(frames, sample_fps)`` tuples) into model inputs, without resizing or
re-sampling the frames (the frame planner already did both, exactly like qwen-vl-utils) and with
``second_per_grid_ts = temporal_patch_size / sample_fps`` per video, so M-RoPE time positions follow
the real sampling rate. The resulting ``video_grid_thw`` is checked against ``(T/2, H/14, W/14)``.
``expand_inputs`` repeats a batch per generation (video patches repeated per sample, in order).

Example::

    text = build_prompt_text(processor, "When does the person open the door?")
    inputs = build_video_inputs(processor, [text], [decoded_video])   # BatchFeature, tensors
    inputs_g = expand_inputs(inputs, 8, processor)                    # 8 rows per prompt
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature

from museg.model.tokenizer import DEFAULT_SYSTEM_PROMPT


class VideoInputError(ValueError):
    """Frames or processor outputs do not match what the frame plan promised."""


def build_prompt_text(processor, question: str, system_prompt: str | None = None) -> str:
    """Chat-templated prompt: (system,) user turn = [video, question], then the assistant prompt.

    Without ``system_prompt`` the template's default system turn is used (Qwen: "You are a helpful
    assistant.").
    """
    messages: list[dict[str, Any]] = []
    if system_prompt is not None and system_prompt != DEFAULT_SYSTEM_PROMPT:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append(
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}
    )
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    video_token = getattr(processor, "video_token", "<|video_pad|>")
    if text.count(video_token) != 1:
        raise VideoInputError(
            f"chat template rendered {text.count(video_token)} {video_token} placeholders, expected 1 "
            "(fix: use a Qwen2.5-VL chat template that renders video content items)"
        )
    return text


def _unpack(video: Any, i: int) -> tuple[torch.Tensor, float]:
    if isinstance(video, (tuple, list)) and len(video) == 2:
        frames, fps = video
    else:
        frames = getattr(video, "frames", None)
        plan = getattr(video, "plan", None)
        fps = getattr(plan, "sample_fps", None)
        if frames is None or fps is None:
            raise VideoInputError(
                f"videos[{i}]: need .frames and .plan.sample_fps or a (frames, sample_fps) tuple, "
                f"got {type(video).__name__}"
            )
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4:
        desc = f"{type(frames).__name__} {getattr(frames, 'dtype', '')} {tuple(getattr(frames, 'shape', ()))}"
        raise VideoInputError(f"videos[{i}].frames: expected uint8 tensor [T,C,H,W], got {desc}")
    t, c, h, w = frames.shape
    if c != 3:
        raise VideoInputError(
            f"videos[{i}].frames: expected 3 channels at dim 1 ([T,C,H,W]), got {c}"
        )
    if t < 2 or t % 2 or h % 28 or w % 28:
        raise VideoInputError(
            f"videos[{i}].frames: shape {tuple(frames.shape)} needs T even >= 2 and H, W multiples of "
            "28 (fix: use museg.data.video.plan_frames / decode_video to sample and resize)"
        )
    fps = float(fps)
    if not fps > 0:
        raise VideoInputError(f"videos[{i}].plan.sample_fps={fps}: must be > 0")
    return frames, fps


def build_video_inputs(
    processor, texts: Sequence[str], videos: Sequence[Any], return_tensors: str = "pt"
) -> BatchFeature:
    """Tokenize ``texts`` with ``videos`` (one per ``<|video_pad|>`` placeholder, in order).

    Frames are passed unresized and unsampled; ``second_per_grid_ts[i] = temporal_patch_size /
    sample_fps[i]``. Raises ``VideoInputError`` if the processor's grid differs from the plan.
    """
    unpacked = [_unpack(v, i) for i, v in enumerate(videos)]
    vp = processor.video_processor
    tps = int(vp.temporal_patch_size)
    patch = int(vp.patch_size)
    merge = int(vp.merge_size)
    frames = [f for f, _ in unpacked]
    fps = [s for _, s in unpacked]
    kwargs: dict[str, Any] = {
        "do_resize": False,
        "do_sample_frames": False,
        "video_metadata": [
            {"total_num_frames": len(f), "fps": s, "frames_indices": list(range(len(f)))}
            for f, s in unpacked
        ],
    }
    if "cap_pixels_per_frame" in getattr(vp.valid_kwargs, "__annotations__", {}):
        kwargs["cap_pixels_per_frame"] = False  # irrelevant without resizing; silences a warning
    out = processor(
        text=list(texts), videos=frames, padding=True, return_tensors=return_tensors, **kwargs
    )
    grid = out["video_grid_thw"]
    for i, f in enumerate(frames):
        want = [len(f) // tps, f.shape[2] // patch, f.shape[3] // patch]
        if grid[i].tolist() != want:
            raise VideoInputError(
                f"videos[{i}]: processor grid {grid[i].tolist()} != planned {want} for frames "
                f"{tuple(f.shape)} (the processor resized or resampled frames)"
            )
    # Set explicitly (float32, like the reference's list -> tensor), whatever fps the processor
    # inferred from metadata.
    out["second_per_grid_ts"] = torch.tensor([tps / s for s in fps], dtype=torch.float32)
    n_tokens = int((out["input_ids"] == processor.video_token_id).sum())
    want_tokens = int(grid.prod(-1).sum()) // (merge * merge)
    if n_tokens != want_tokens:
        raise VideoInputError(
            f"{n_tokens} video tokens in input_ids != {want_tokens} from video_grid_thw "
            "(fix: do not truncate prompts that contain video)"
        )
    return out


def videos_per_row(input_ids: torch.Tensor, video_token_id: int) -> list[int]:
    """Number of video placeholder runs in each row of ``input_ids``.

    >>> videos_per_row(torch.tensor([[1, 9, 9, 2, 9], [1, 2, 3, 4, 5]]), 9)
    [2, 0]
    """
    is_vid = (input_ids == video_token_id).long()
    starts = is_vid[:, 1:] & (1 - is_vid[:, :-1])
    return (starts.sum(1) + is_vid[:, 0]).tolist()


def expand_inputs(inputs: BatchFeature | dict, n: int, processor) -> BatchFeature:
    """Repeat every prompt ``n`` times in place (row order ``[p0]*n + [p1]*n + ...``).

    Per-row tensors are ``repeat_interleave``d; per-video tensors (``pixel_values_videos``,
    ``video_grid_thw``, ``second_per_grid_ts``) are repeated per sample so row ``k`` keeps its own
    videos.
    """
    if n == 1:
        return BatchFeature(dict(inputs))
    ids = inputs["input_ids"]
    rows = ids.shape[0]
    out: dict[str, Any] = {}
    for key, val in inputs.items():
        if key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            continue
        if isinstance(val, torch.Tensor) and val.ndim >= 1 and val.shape[0] == rows:
            out[key] = val.repeat_interleave(n, dim=0)
        elif key in ("pixel_values", "image_grid_thw"):
            raise NotImplementedError("expand_inputs: image inputs are not supported")
        else:
            out[key] = val
    grid = inputs.get("video_grid_thw")
    if grid is not None:
        counts = videos_per_row(ids, processor.video_token_id)
        sizes = grid.prod(-1).tolist()
        patches = list(torch.split(inputs["pixel_values_videos"], sizes, dim=0))
        spg = inputs.get("second_per_grid_ts")
        order: list[int] = []
        start = 0
        for c in counts:
            order += list(range(start, start + c)) * n
            start += c
        out["pixel_values_videos"] = torch.cat([patches[j] for j in order], dim=0)
        out["video_grid_thw"] = grid[order]
        if spg is not None:
            out["second_per_grid_ts"] = torch.as_tensor(spg)[order]
    return BatchFeature(out)
