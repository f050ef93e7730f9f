"""Build the offline tiny Qwen2.5-VL checkpoint (real transformers classes, ~1M parameters).

The tiny model lets every code path of a real Qwen2.5-VL checkpoint run on a CPU in seconds: it is a
``Qwen2_5_VLForConditionalGeneration`` with a 2-layer text model (hidden 128, 4 heads, 2 KV heads,
M-RoPE sections [4, 6, 6]) and a 2-block vision tower (hidden 64, patch 14, 2x2 merge, temporal
patch 2, window attention with a full-attention last block), plus a ``Qwen2_5_VLProcessor`` with a
locally trained byte-level BPE tokenizer (:mod:`museg.model.tokenizer`). Everything is saved with
``save_pretrained`` and must be loaded back with ``from_pretrained`` like a real checkpoint.

Builds are deterministic in ``seed`` and cached: the default directory is
``$MUSEG_CACHE/tiny-qwen2.5-vl-seed{seed}-v{TINY_VERSION}`` (``~/.cache/museg`` without
``MUSEG_CACHE``); a build writes to a temporary sibling directory and renames it into place, so a
directory that exists is complete.

Example::

    from museg.model.tiny import build_tiny_model
    path = build_tiny_model(seed=0)            # built once, then reused
    # model, processor = museg.model.load_model_and_processor(path, dtype="float32")
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from museg.model.tokenizer import CHAT_TEMPLATE, build_tokenizer

#: Bump when the architecture, tokenizer or processor settings change (invalidates caches).
TINY_VERSION = 1
MARKER = "museg_tiny.json"

TEXT_HIDDEN = 128
VISION_HIDDEN = 64
BPE_VOCAB = 1024


def default_cache_root() -> Path:
    """``$MUSEG_CACHE`` if set, else ``~/.cache/museg``."""
    env = os.environ.get("MUSEG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "museg"


def tiny_config(tokenizer) -> Qwen2_5_VLConfig:
    """The tiny architecture; token ids are taken from ``tokenizer``."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "use_sliding_window": False,
        "max_window_layers": 2,
        "attention_dropout": 0.0,
        # head_dim 32 -> M-RoPE sections (t, h, w) sum to head_dim / 2, like [16, 24, 24] for 128
        "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]},
        "rope_theta": 1000000.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 2,
        "hidden_size": VISION_HIDDEN,
        "hidden_act": "silu",
        "intermediate_size": 128,
        "num_heads": 4,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "tokens_per_second": 2,
        "window_size": 56,  # 2x2 merged tokens per window: windows matter even on 112x112 frames
        "out_hidden_size": TEXT_HIDDEN,
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def tiny_processor(tokenizer) -> Qwen2_5_VLProcessor:
    """Processor with Qwen2.5-VL's image/video settings (patch 14, merge 2, temporal patch 2)."""
    common = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 1280, **common)
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28, **common
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _write(tmp: Path, seed: int) -> dict:
    tokenizer = build_tokenizer(seed=seed, vocab_size=BPE_VOCAB)
    config = tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    eos = [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]
    model.generation_config = GenerationConfig(
        bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1]
    )
    model.save_pretrained(tmp)
    tiny_processor(tokenizer).save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    return {"seed": seed, "version": TINY_VERSION, "parameters": n_params}


def tiny_dir_name(seed: int = 0) -> str:
    """Directory name of a tiny build: ``tiny-qwen2.5-vl-seed{seed}-v{TINY_VERSION}``."""
    return f"tiny-qwen2.5-vl-seed{seed}-v{TINY_VERSION}"


def build_tiny_model(out_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build (or reuse) the tiny checkpoint directory and return its path.

    ``out_dir`` defaults to ``default_cache_root() / tiny_dir_name(seed)``. A directory holding the
    completion marker is reused as is.
    """
    path = Path(out_dir) if out_dir is not None else default_cache_root() / tiny_dir_name(seed)
    path = path.expanduser().resolve()
    if (path / MARKER).is_file():
        return path
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(
            f"{path}: exists but is not a complete tiny-model build (fix: delete it or pick another out_dir)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        start = time.perf_counter()
        info = _write(tmp, seed)
        info["build_seconds"] = round(time.perf_counter() - start, 3)
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        try:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()  # empty directory left by a caller
            os.rename(tmp, path)
        except OSError:
            if not (path / MARKER).is_file():  # not a concurrent builder that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
