"""Tiny offline Qwen2.5-VL: deterministic build, from_pretrained round trip, tokenizer, template,
forward pass with video, loading options (attention, dtype, LoRA, frozen vision, checkpointing)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from museg.config import compose_config
from museg.model import (
    ModelPathError,
    build_prompt_text,
    build_tiny_model,
    build_video_inputs,
    load_from_cfg,
    load_model_and_processor,
    model_path_from_cfg,
    resolve_attention,
    resolve_dtype,
    vision_tower,
)
from museg.model.tiny import MARKER, TINY_VERSION
from museg.model.tokenizer import SPECIAL_TOKENS


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_model_and_processor(tiny_dir, dtype="float32", attention="sdpa")


def _video(t=4, h=56, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


def test_build_is_deterministic_in_seed(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "a", seed=0)
    other = build_tiny_model(tmp_path / "b", seed=1)
    sd0, sd1 = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert sd0.keys() == sd1.keys()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert (tiny_dir / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()
    sd2 = load_file(other / "model.safetensors")
    assert any(not torch.equal(sd0[k], sd2[k]) for k in sd0)


def test_parameter_count_and_marker(tiny_dir, loaded):
    model, _ = loaded
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 <= n <= 5_000_000
    info = json.loads((tiny_dir / MARKER).read_text())
    assert info["parameters"] == n and info["seed"] == 0 and info["version"] == TINY_VERSION


def test_build_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSEG_CACHE", str(tmp_path / "cache"))
    path = build_tiny_model(seed=3)
    assert path == (tmp_path / "cache" / f"tiny-qwen2.5-vl-seed3-v{TINY_VERSION}").resolve()
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    assert build_tiny_model(seed=3) == path
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp dirs left behind
    cfg = compose_config(["model=tiny", "model.seed=3"])
    assert model_path_from_cfg(cfg.model) == str(path)
    cfg.model.path = ""  # model.name=tiny alone names the tiny model too
    other = model_path_from_cfg(cfg.model, cache_dir=tmp_path / "c2")
    assert other == str((tmp_path / "c2" / path.name).resolve())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not a complete"):
        build_tiny_model(broken)


def test_concurrent_builds_share_one_directory(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    target = tmp_path / "shared"
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: build_tiny_model(target, seed=0), range(2)))
    assert paths == [target.resolve()] * 2 and (target / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]


def test_from_pretrained_round_trip(tiny_dir, tmp_path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_dir)
    proc = AutoProcessor.from_pretrained(tiny_dir)
    assert type(proc).__name__ == "Qwen2_5_VLProcessor"
    assert type(proc.video_processor).__name__ == "Qwen2VLVideoProcessor"
    saved = load_file(tiny_dir / "model.safetensors")
    # hub layout of real Qwen2.5-VL checkpoints (what vLLM and older transformers load)
    assert {"model.embed_tokens.weight", "visual.merger.mlp.0.weight", "lm_head.weight"} <= set(
        saved
    )
    model.save_pretrained(tmp_path)
    resaved = load_file(tmp_path / "model.safetensors")
    assert saved.keys() == resaved.keys()
    assert all(torch.equal(saved[k], resaved[k]) for k in saved)
    cfg, tok = model.config, proc.tokenizer
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>") == proc.video_token_id
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.text_config.vocab_size == len(tok)
    text, vision = cfg.text_config, cfg.vision_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    assert all(0 <= i < vision.depth for i in vision.fullatt_block_indexes)
    assert vision.out_hidden_size == text.hidden_size
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (14, 2, 2)
    assert model.generation_config.eos_token_id == [
        tok.convert_tokens_to_ids("<|im_end|>"),
        tok.convert_tokens_to_ids("<|endoftext|>"),
    ]


def test_tokenizer_round_trip_and_special_tokens(loaded):
    tok = loaded[1].tokenizer
    text = "<think>at 12.50 ...</think><answer>1.20-3.40 5.00-6.00</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(tok) - len(SPECIAL_TOKENS), len(tok)))  # Qwen order, at the end
    for t, i in zip(SPECIAL_TOKENS, ids, strict=True):
        assert tok(t)["input_ids"] == [i]
        assert tok(f"a{t}b")["input_ids"][1:-1] == [i]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.decode(ids, skip_special_tokens=True) == ""


def test_chat_template_renders_video_and_generation_prompt(loaded):
    proc = loaded[1]
    text = build_prompt_text(proc, "When does it happen?")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>When does it happen?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    custom = build_prompt_text(proc, "Q", system_prompt="Be brief.")
    assert (
        custom.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "helpful" not in custom
    )
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    out = proc.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
    assert out.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n")


def test_forward_with_video_sdpa_and_eager_agree(tiny_dir, loaded):
    model, proc = loaded
    eager, _ = load_model_and_processor(tiny_dir, dtype="float32", attention="eager")
    assert model.config._attn_implementation == "sdpa"
    assert eager.config._attn_implementation == "eager"
    texts = [build_prompt_text(proc, "Find the jumps."), build_prompt_text(proc, "Q")]
    inputs = build_video_inputs(
        proc, texts, [(_video(8, 56, 84), 2.0), (_video(4, 112, 112, 1), 1.0)]
    )
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        out_eager = eager(**inputs, labels=labels)
    assert out.logits.shape == (*inputs["input_ids"].shape, len(proc.tokenizer))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    keep = inputs["attention_mask"].bool()
    torch.testing.assert_close(out.logits[keep], out_eager.logits[keep], atol=1e-4, rtol=1e-4)


def test_lora_frozen_vision_and_checkpointing(tiny_dir):
    lora = compose_config(["model=tiny", "model.lora.enabled=true", "model.lora.r=4",
                           "model.lora.alpha=8", "model.lora.dropout=0.0",
                           "model.lora.target_modules=[q_proj,v_proj,gate_proj]"]).model.lora
    model, proc = load_model_and_processor(
        tiny_dir, dtype="float32", attention="eager", gradient_checkpointing=True, lora=lora
    )
    peft = model.peft_config["default"]
    assert (peft.r, peft.lora_alpha, peft.lora_dropout) == (4, 8, 0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert not any(p.requires_grad for p in vision_tower(model).parameters())
    assert any(
        getattr(m, "gradient_checkpointing", False) for m in model.get_base_model().modules()
    )
    inputs = build_video_inputs(proc, [build_prompt_text(proc, "Q")], [(_video(), 2.0)])
    model.train()
    loss = model(**inputs, labels=inputs["input_ids"], use_cache=False).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)

    full, _ = load_model_and_processor(tiny_dir, dtype="bfloat16", freeze_vision=False)
    assert full.dtype == torch.bfloat16
    assert all(p.requires_grad for p in full.parameters())
    no_lora = compose_config(["model=tiny"]).model.lora  # lora.enabled is false by default
    default, _ = load_model_and_processor(tiny_dir, dtype="float32", lora=no_lora)
    assert all(p.requires_grad for p in vision_tower(default).parameters())  # MUSEG: all trained
    frozen, _ = load_model_and_processor(tiny_dir, dtype="float32", lora=no_lora,
                                         freeze_vision=True)
    assert not any(p.requires_grad for p in vision_tower(frozen).parameters())
    assert all(p.requires_grad for p in frozen.model.language_model.parameters())


def test_load_from_cfg_lora_takes_the_schema_values(tiny_dir):
    """``model.lora.enabled=true`` alone: rank, alpha, dropout and target layers are the schema's
    (:class:`museg.config.schema.LoraConfig`), read from the composed config."""
    cfg = compose_config(["model=tiny", "model.lora.enabled=true"])
    cfg.model.path = str(tiny_dir)
    model, _ = load_from_cfg(cfg.model)
    peft = model.peft_config["default"]
    lora = cfg.model.lora
    assert (peft.r, peft.lora_alpha, peft.lora_dropout) == (lora.r, lora.alpha, lora.dropout)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    adapted = {n.split(".lora_A")[0].split(".")[-1] for n, _ in model.named_parameters()
               if ".lora_A" in n}
    assert adapted == set(lora.target_modules)
    cfg.model.lora.target_modules = []
    with pytest.raises(ValueError, match="model.lora.target_modules is empty"):
        load_from_cfg(cfg.model)


def test_option_resolution_and_errors(tmp_path):
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="model.dtype"):
        resolve_dtype("int3")
    with pytest.raises(ValueError, match="model.attention"):
        resolve_attention("flash")
    assert resolve_attention("eager") == "eager"
    if not torch.cuda.is_available():
        assert resolve_attention("auto") == "sdpa"
    with pytest.raises(ModelPathError, match="no such directory"):
        load_model_and_processor(tmp_path / "missing")
    with pytest.raises(ModelPathError, match="no config.json"):
        load_model_and_processor(tmp_path)
    with pytest.raises(ModelPathError, match="HF_HUB_OFFLINE"):
        load_model_and_processor("museg-test-org/not-a-cached-model")
    cfg = compose_config(["model=7b", "model.path=Qwen/Qwen2.5-VL-7B-Instruct"])
    assert model_path_from_cfg(cfg.model) == "Qwen/Qwen2.5-VL-7B-Instruct"
    cfg.model.path = ""
    with pytest.raises(ModelPathError, match="model.path is empty"):
        model_path_from_cfg(cfg.model)
