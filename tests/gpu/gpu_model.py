"""Random-weight Qwen2.5-VL checkpoints for the GPU check: a 3B-shaped config (or the tiny one).

No weights are downloaded or written. :func:`write_model_dir` saves a checkpoint directory that
holds only ``config.json`` and the processor files (the offline tokenizer of
:mod:`museg.model.tokenizer` with Qwen's special tokens, Qwen2.5-VL's video processor settings);
:func:`random_weights` then swaps the model class that :mod:`museg.model.load` calls
``from_pretrained`` on for one that builds the model from that ``config.json`` with random
weights, directly on the target device. Everything else (dtype, attention backend, gradient
checkpointing, the trainer's reference copy, the eval backend) runs through museg's real code.

Why an in-memory hook rather than ``save_pretrained`` once: a 3B checkpoint is 7.5 GB in bf16; writing
it and reading it back twice (trainer, eval) costs tens of seconds of a 15-minute GPU lease and
7.5 GB of its 64 GiB disk, and the weights are random anyway. The hook is a context manager that
restores the real class on exit.

Example::

    path = write_model_dir(tmp / "model", tiny=False)     # config.json + processor, no weights
    with random_weights("cuda"):
        model, processor = museg.model.load_model_and_processor(path, dtype="bfloat16")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

#: Qwen2.5-VL-3B-Instruct's language model, from the public
#: https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json (top-level keys).
QWEN25_VL_3B_TEXT: dict[str, Any] = {
    "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
    "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
    "hidden_act": "silu", "max_position_embeddings": 128000, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 70,
    "attention_dropout": 0.0, "tie_word_embeddings": True,
}
#: Its vision tower: ``hidden_size`` 1280, ``out_hidden_size`` 2048, patch 14 and
#: ``tokens_per_second`` 2 are in that config.json's ``vision_config``; the rest are the defaults of
#: transformers' ``Qwen2_5_VLVisionConfig`` that the checkpoint relies on (depth 32, MLP 3420,
#: 16 heads, window 112, full attention in blocks 7/15/23/31, 2x2 merge, temporal patch 2).
QWEN25_VL_3B_VISION: dict[str, Any] = {
    "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
    "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
    "out_hidden_size": 2048, "hidden_act": "silu",
}
MARKER = "museg_random_init.json"


def qwen25_vl_3b_config(tokenizer: Any):
    """A ``Qwen2_5_VLConfig`` with the 3B sizes; special-token ids come from ``tokenizer``.

    The vocabulary stays 151,936 rows (the real embedding / LM-head cost); the offline tokenizer's
    ids (about 1,040) all fall inside it.
    """
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    if len(tokenizer) > QWEN25_VL_3B_TEXT["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} ids > vocab {QWEN25_VL_3B_TEXT['vocab_size']}")
    text = dict(QWEN25_VL_3B_TEXT, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(QWEN25_VL_3B_VISION),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)


def write_model_dir(out: str | Path, tiny: bool = False) -> Path:
    """Write ``config.json`` (3B-shaped, or museg's tiny architecture) + processor into ``out``."""
    from transformers import GenerationConfig

    from museg.model.tiny import tiny_config, tiny_processor
    from museg.model.tokenizer import build_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed=0)
    config = tiny_config(tokenizer) if tiny else qwen25_vl_3b_config(tokenizer)
    config.save_pretrained(out)
    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    GenerationConfig(bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1]).save_pretrained(out)
    tiny_processor(tokenizer).save_pretrained(out)
    (out / MARKER).write_text(json.dumps({"shape": "tiny" if tiny else "qwen2.5-vl-3b"}) + "\n")
    return out


def count_parameters(config: Any) -> int:
    """Parameters of the model ``config`` describes (built on the meta device, no memory)."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


class _RandomInit:
    """Stands in for ``Qwen2_5_VLForConditionalGeneration`` inside :mod:`museg.model.load`."""

    device: str = "cpu"
    built: list[float] = []  # seconds of each build

    @classmethod
    def from_pretrained(cls, src: str, dtype: torch.dtype | None = None,
                        attn_implementation: str | None = None, **kwargs: Any):
        import time

        from transformers import AutoConfig, AutoModelForImageTextToText

        if not (Path(src) / MARKER).is_file():
            raise FileNotFoundError(f"{src}: not a random-init model dir (no {MARKER})")
        t0 = time.perf_counter()
        config = AutoConfig.from_pretrained(src)
        with torch.device(cls.device):
            model = AutoModelForImageTextToText.from_config(
                config, dtype=dtype, attn_implementation=attn_implementation)
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(src)
        cls.built.append(time.perf_counter() - t0)
        return model


@contextlib.contextmanager
def random_weights(device: str) -> Iterator[type[_RandomInit]]:
    """Within the block, museg's loader builds models with random weights on ``device``."""
    import museg.model.load as load

    real = load.Qwen2_5_VLForConditionalGeneration
    _RandomInit.device = device
    load.Qwen2_5_VLForConditionalGeneration = _RandomInit  # type: ignore[misc,assignment]
    try:
        yield _RandomInit
    finally:
        load.Qwen2_5_VLForConditionalGeneration = real
