"""HF generate rollout: G completions per prompt, EOS cutting (pure and end to end), explicit
sampling settings, per-prompt video routing with num_return_sequences, seeding."""

from __future__ import annotations

import pytest
import torch

from museg.generation.hf import (
    eos_token_ids,
    generate,
    generate_completions,
    generation_config,
    truncate_at_eos,
)
from museg.model import (
    build_prompt_text,
    build_tiny_model,
    build_video_inputs,
    load_model_and_processor,
)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield build_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)
    mp.undo()


@pytest.fixture(scope="module")
def loaded(tiny_path):
    return load_model_and_processor(tiny_path, dtype="float32", attention="sdpa")


def _frames(t, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, 3, h, w), dtype=torch.uint8, generator=g)


@pytest.fixture(scope="module")
def inputs(loaded):
    proc = loaded[1]
    texts = [build_prompt_text(proc, "When does the door open?"), build_prompt_text(proc, "Jumps?")]
    return build_video_inputs(
        proc, texts, [(_frames(4, 56, 84, 0), 2.0), (_frames(2, 56, 56, 1), 1.0)]
    )


# --- pure EOS cutting -------------------------------------------------------------------------


def test_truncate_at_eos_cases():
    ids = torch.tensor(
        [
            [5, 7, 2, 6, 2],  # eos mid-row, a second eos later
            [2, 6, 6, 6, 6],  # eos first
            [5, 6, 7, 8, 9],  # no eos
            [5, 3, 2, 6, 6],  # the other eos id first
            [5, 6, 7, 8, 3],  # eos last
        ]
    )
    out, mask, is_eos = truncate_at_eos(ids, eos_ids=[2, 3], pad_id=0)
    assert mask.tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ]
    assert out.tolist() == [
        [5, 7, 2, 0, 0],
        [2, 0, 0, 0, 0],
        [5, 6, 7, 8, 9],
        [5, 3, 0, 0, 0],
        [5, 6, 7, 8, 3],
    ]
    assert is_eos.tolist() == [True, True, False, True, True]
    assert mask.dtype == torch.long and out.dtype == ids.dtype


def test_truncate_at_eos_empty_and_pad_is_eos():
    out, mask, is_eos = truncate_at_eos(torch.zeros(2, 0, dtype=torch.long), [1], pad_id=1)
    assert out.shape == mask.shape == (2, 0) and not is_eos.any()
    out, mask, _ = truncate_at_eos(torch.tensor([[4, 1, 1, 1]]), [1], pad_id=1)
    assert mask.tolist() == [[1, 1, 0, 0]]


# --- generate ---------------------------------------------------------------------------------


def test_g_completions_per_prompt(loaded, inputs):
    model, proc = loaded
    model.train()
    roll = generate_completions(model, proc, inputs, num_generations=3, max_new_tokens=12, seed=0)
    assert model.training  # mode restored
    n = inputs["input_ids"].shape[0] * 3
    assert len(roll.texts) == n and roll.num_generations == 3
    assert roll.completion_ids.shape[0] == roll.completion_mask.shape[0] == n
    assert roll.completion_ids.shape[1] <= 12
    assert torch.equal(roll.prompt_ids, inputs["input_ids"].repeat_interleave(3, 0))
    assert torch.equal(roll.prompt_mask, inputs["attention_mask"].repeat_interleave(3, 0))
    eos = eos_token_ids(proc.tokenizer)
    assert eos == [proc.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    _, mask, is_eos = truncate_at_eos(roll.completion_ids, eos, proc.tokenizer.pad_token_id)
    assert torch.equal(mask, roll.completion_mask) and torch.equal(is_eos, roll.is_eos)
    assert len(set(roll.texts[:3])) > 1  # sampling differs within a group


def test_mask_stops_at_first_eos(tiny_path, inputs):
    """Rewire lm_head so <|im_end|> takes over a token greedy decoding emits mid-completion."""
    model, proc = load_model_and_processor(tiny_path, dtype="float32", attention="sdpa")
    base = generate_completions(model, proc, inputs, 1, 16, do_sample=False)
    row = base.completion_ids[0]
    tok = int(row[3])  # a token emitted at step 3 of prompt 0
    im_end = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        w = model.lm_head.weight
        w[im_end] = w[tok]
        w[tok] = 0.0
    roll = generate_completions(model, proc, inputs, 2, 16, do_sample=False)
    first = int((row == tok).nonzero()[0])
    for r in (0, 1):  # both generations of prompt 0
        assert roll.completion_mask[r].sum() == first + 1
        assert roll.completion_ids[r, first] == im_end and roll.is_eos[r]
        assert torch.equal(roll.completion_ids[r, :first], row[:first])
        assert (roll.completion_ids[r, first + 1 :] == proc.tokenizer.pad_token_id).all()
        assert "<|im_end|>" not in roll.texts[r]
    assert roll.texts[0] == proc.tokenizer.decode(row[:first])


def test_num_return_sequences_routes_each_prompts_video(loaded, inputs):
    """Sampling with top_k=1 over G copies equals greedy decoding of each prompt alone."""
    model, proc = loaded
    roll = generate_completions(model, proc, inputs, 3, 10, do_sample=True, top_k=1, seed=0)
    for b, text in enumerate(["When does the door open?", "Jumps?"]):
        frames = _frames(*[(4, 56, 84, 0), (2, 56, 56, 1)][b])
        one = build_video_inputs(proc, [build_prompt_text(proc, text)], [(frames, [2.0, 1.0][b])])
        alone = generate_completions(model, proc, one, 1, 10, do_sample=False)
        for g in range(3):
            row = roll.completion_ids[b * 3 + g]
            assert torch.equal(row[: alone.completion_ids.shape[1]], alone.completion_ids[0])


def test_seed_is_reproducible_and_leaves_global_rng(loaded, inputs):
    model, proc = loaded
    state = torch.random.get_rng_state()
    a = generate_completions(model, proc, inputs, 2, 10, seed=123)
    b = generate_completions(model, proc, inputs, 2, 10, seed=123)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    c = generate_completions(model, proc, inputs, 2, 10, seed=124)
    assert not torch.equal(a.completion_ids, c.completion_ids)


def test_checkpoint_generation_defaults_do_not_leak(tiny_path, inputs):
    """Qwen ships top_k=1 / repetition_penalty=1.05 in generation_config.json; rollouts ignore them."""
    model, proc = load_model_and_processor(tiny_path, dtype="float32", attention="sdpa")
    model.generation_config.top_k = 1
    model.generation_config.repetition_penalty = 1.05
    roll = generate_completions(model, proc, inputs, 4, 12, seed=0)
    assert len(set(map(tuple, roll.completion_ids[:4].tolist()))) > 1
    cfg = generation_config(proc.tokenizer, 4, 12, temperature=0.7, top_p=0.9)
    assert (cfg.top_k, cfg.repetition_penalty, cfg.temperature, cfg.top_p) == (0, 1.0, 0.7, 0.9)
    assert cfg.num_return_sequences == 4 and cfg.max_new_tokens == 12


def test_greedy_with_several_generations_and_contract_alias(loaded, inputs):
    model, proc = loaded
    roll = generate_completions(model, proc, inputs, 2, 8, do_sample=False)
    assert torch.equal(roll.completion_ids[0], roll.completion_ids[1])
    assert roll.prompt_ids.shape[0] == 4
    assert generate(model, proc, inputs, 2, 8, do_sample=False) == roll.texts


def test_right_padded_inputs_are_rejected(loaded, inputs):
    model, proc = loaded
    bad = dict(inputs)
    bad["attention_mask"] = inputs["attention_mask"].flip(1)
    if bool(bad["attention_mask"][:, -1].all()):
        pytest.skip("prompts have equal length")
    with pytest.raises(ValueError, match="left padding"):
        generate_completions(model, proc, bad, 2, 4)
