"""The vLLM request for pre-planned frames is the same in training and evaluation (CPU, no vLLM:
the engine is a recorder), and the HF processor given that request sees the HF backend's pixels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from museg.config import compose_config
from museg.generation import vllm as vllm_module
from museg.generation.backends import VLLMBackend
from museg.generation.vllm import VLLMRollout, video_request
from museg.model import build_prompt_text, build_tiny_model, build_video_inputs

QUESTION = "When does the red square appear?"


class RecordingLLM:
    """Stands in for ``vllm.LLM``: records what ``generate`` is sent, answers one EOS each."""

    def __init__(self, eos: int) -> None:
        self.eos, self.requests, self.params = eos, [], []

    def generate(self, requests, sampling_params=None, use_tqdm=True):
        self.requests += list(requests)
        self.params.append(sampling_params)
        done = SimpleNamespace(token_ids=[self.eos], text="")
        return [SimpleNamespace(outputs=[done]) for _ in requests]


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield AutoProcessor.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("t") / "ckpt"))
    mp.undo()


@pytest.fixture()
def video():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 3, 56, 84), dtype=torch.uint8, generator=g)
    return SimpleNamespace(frames=frames, plan=SimpleNamespace(sample_fps=1.5))


def _train_requests(processor, video) -> list[dict]:
    """What the trainer's vLLM rollout sends (prompt text built as rl.step._prompt_inputs does)."""
    roll = object.__new__(VLLMRollout)  # no engine: vLLM is not installed here
    roll.llm = RecordingLLM(processor.tokenizer.eos_token_id)
    roll._vllm = SimpleNamespace(SamplingParams=lambda **kw: kw)
    out = roll(None, processor, None, num_generations=2, max_new_tokens=8, temperature=0.9,
               seeds=[3, 4], prompt_text=build_prompt_text(processor, QUESTION), video=video)
    assert out.completion_mask.sum().item() == 2  # one EOS token each
    assert [p["seed"] for p in roll.llm.params[0]] == [3, 4]
    return roll.llm.requests


def _eval_requests(processor, video) -> list[dict]:
    """What the evaluation vLLM backend sends for the same question and frames."""
    backend = object.__new__(VLLMBackend)
    backend.processor = processor
    backend.llm = RecordingLLM(processor.tokenizer.eos_token_id)
    backend.sampling = {"temperature": 0.0}
    assert backend.generate([QUESTION], [video]) == [""]
    return backend.llm.requests


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b) == {"prompt", "multi_modal_data", "mm_processor_kwargs"}
    assert a["prompt"] == b["prompt"]
    assert a["mm_processor_kwargs"] == b["mm_processor_kwargs"]
    assert set(a["multi_modal_data"]) == set(b["multi_modal_data"]) == {"video"}
    va, vb = a["multi_modal_data"]["video"], b["multi_modal_data"]["video"]
    assert type(va) is type(vb) is np.ndarray
    assert va.dtype == vb.dtype and va.shape == vb.shape and np.array_equal(va, vb)


def test_training_and_evaluation_send_the_same_vllm_request(processor, video):
    train, evaluation = _train_requests(processor, video), _eval_requests(processor, video)
    assert len(train) == 2 and len(evaluation) == 1  # one request per seeded completion
    for req in train:
        _same(req, evaluation[0])
    _same(evaluation[0], video_request(build_prompt_text(processor, QUESTION), video))
    req = evaluation[0]
    assert req["prompt"].count("<|video_pad|>") == 1
    assert req["multi_modal_data"]["video"].shape == (4, 56, 84, 3)  # [T, H, W, C]
    assert req["mm_processor_kwargs"] == {"fps": 1.5, "do_resize": False,
                                          "do_sample_frames": False}


def test_the_request_gives_the_hf_backend_pixels(processor, video):
    """The HF processor called with the request (as vLLM calls it) gives the HF backend's patches
    and grid: frames neither resized nor resampled."""
    req = video_request(build_prompt_text(processor, QUESTION), video)
    seen = processor(text=[req["prompt"]], videos=[req["multi_modal_data"]["video"]],
                     return_tensors="pt", **req["mm_processor_kwargs"])
    hf = build_video_inputs(processor, [req["prompt"]], [video])
    assert seen["video_grid_thw"].tolist() == hf["video_grid_thw"].tolist() == [[2, 4, 6]]
    assert torch.equal(seen["pixel_values_videos"], hf["pixel_values_videos"])
    assert torch.equal(seen["input_ids"], hf["input_ids"])


def test_rollout_engine_settings_come_from_the_composed_config(monkeypatch):
    """``rollout=vllm``: the engine gets ``rollout.tensor_parallel_size`` and
    ``gpu_memory_utilization``, ``model.dtype`` and the context ``train.max_total_length`` of the
    composed config (CPU: a recording stand-in for ``vllm.LLM``)."""
    made = {}
    fake_vllm = SimpleNamespace(LLM=lambda **kw: made.update(kw) or SimpleNamespace())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(vllm_module, "require_vllm", lambda *args: fake_vllm)
    monkeypatch.setattr(VLLMRollout, "sync_weights", lambda self, policy: None)
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    cfg = compose_config(["task=train", "model=7b", "rollout=vllm",
                          "rollout.gpu_memory_utilization=0.4"])
    VLLMRollout(cfg, "/models/7b", processor=None, policy=None)
    assert made["model"] == "/models/7b" and made["tensor_parallel_size"] == 1
    assert made["gpu_memory_utilization"] == 0.4 and made["dtype"] == "bfloat16"
    assert made["max_model_len"] == cfg.train.max_total_length == 4096
