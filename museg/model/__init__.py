"""Qwen2.5-VL loading, the offline tiny model and prompt/video inputs (generation: museg.generation).

Example::

    from museg.config import compose_config
    from museg.generation.hf import generate_completions
    from museg.model import (build_prompt_text, build_video_inputs, load_model_and_processor,
                             model_path_from_cfg)
    cfg = compose_config(["model=tiny"])
    model, processor = load_model_and_processor(model_path_from_cfg(cfg.model), dtype="float32")
    text = build_prompt_text(processor, "When does the person open the door?")
    inputs = build_video_inputs(processor, [text], [decoded_video])
    rollout = generate_completions(model, processor, inputs, num_generations=4, max_new_tokens=64)
"""

from museg.model.inputs import (
    VideoInputError,
    build_prompt_text,
    build_video_inputs,
    expand_inputs,
)
from museg.model.load import (
    ModelPathError,
    load_from_cfg,
    load_model_and_processor,
    model_path_from_cfg,
    resolve_attention,
    resolve_dtype,
    vision_tower,
)
from museg.model.tiny import build_tiny_model

__all__ = [
    "ModelPathError",
    "VideoInputError",
    "build_prompt_text",
    "build_tiny_model",
    "build_video_inputs",
    "expand_inputs",
    "load_from_cfg",
    "load_model_and_processor",
    "model_path_from_cfg",
    "resolve_attention",
    "resolve_dtype",
    "vision_tower",
]
