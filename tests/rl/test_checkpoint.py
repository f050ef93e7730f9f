"""Checkpoints: atomic layout, weights_only loading, exact continuation, RNG, pruning, resume."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
from transformers import get_scheduler

from museg.rl import checkpoint as ck


class TiedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 6)
        self.mid = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 10, bias=False)
        self.out.weight = self.emb.weight  # shared tensor, like tied LM heads

    def forward(self, x):
        return self.out(torch.tanh(self.mid(self.emb(x))))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = TiedNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sched = get_scheduler("linear", opt, num_warmup_steps=2, num_training_steps=10)
    return model, opt, sched


def _train(model, opt, sched, steps, gen):
    losses = []
    for _ in range(steps):
        x = torch.randint(10, (4, 3), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_resume_continues_exactly(tmp_path):
    m, o, s = _setup()
    full = _train(m, o, s, 6, torch.Generator().manual_seed(1))

    m1, o1, s1 = _setup()
    g = torch.Generator().manual_seed(1)
    first = _train(m1, o1, s1, 3, g)
    path = ck.save_checkpoint(tmp_path, 3, m1, o1, s1, {"data": {"consumed": 12}},
                              data_generator=g)
    m2, o2, s2 = _setup(seed=123)  # different init: must be overwritten
    g2 = torch.Generator()
    state = ck.load_checkpoint(path, m2, o2, s2)
    ck.set_rng_states(state["rng"], data_generator=g2)
    rest = _train(m2, o2, s2, 3, g2)
    assert first + rest == pytest.approx(full, rel=1e-6)
    assert state["step"] == 3 and state["data"]["consumed"] == 12
    assert m2.out.weight.data_ptr() == m2.emb.weight.data_ptr()  # tie kept
    assert torch.equal(m2.emb.weight, m.emb.weight)


def test_every_file_loads_with_weights_only(tmp_path):
    m, o, s = _setup()
    _train(m, o, s, 1, torch.Generator().manual_seed(0))
    path = ck.save_checkpoint(tmp_path, 1, m, o, s, {"wandb_id": "abc", "history": [{"step": 1}]})
    names = sorted(p.name for p in path.iterdir())
    assert names == ["COMPLETE", "model.safetensors", "optimizer.pt", "scheduler.pt",
                     "trainer_state.json", "trainer_state.pt"]
    for f in path.glob("*.pt"):
        torch.load(f, weights_only=True)


def test_rng_states_roundtrip():
    states = ck.get_rng_states()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.random(), np.random.rand(), torch.rand(3)
    ck.set_rng_states(states)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_incomplete_and_tmp_checkpoints_are_ignored(tmp_path):
    m, o, s = _setup()
    ck.save_checkpoint(tmp_path, 2, m, o, s, {})
    (tmp_path / "checkpoints" / ".tmp-step-4").mkdir()
    shutil.copytree(tmp_path / "checkpoints" / "step-2", tmp_path / "checkpoints" / "step-3")
    (tmp_path / "checkpoints" / "step-3" / "COMPLETE").unlink()  # killed before the marker
    assert ck.latest_checkpoint(tmp_path).name == "step-2"
    with pytest.raises(ck.CheckpointError, match="COMPLETE"):
        ck.load_checkpoint(tmp_path / "checkpoints" / "step-3", m)


def test_keep_last_k_and_resolve_resume(tmp_path):
    m, o, s = _setup()
    for step in (1, 2, 3, 10):
        ck.save_checkpoint(tmp_path, step, m, o, s, {}, save_total_limit=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step-3", "step-10"]
    assert ck.resolve_resume("auto", tmp_path).name == "step-10"
    assert ck.resolve_resume("never", tmp_path) is None
    assert ck.resolve_resume(str(tmp_path), tmp_path / "other").name == "step-10"
    assert ck.resolve_resume(str(tmp_path / "checkpoints" / "step-3"), tmp_path).name == "step-3"
    assert ck.resolve_resume("auto", tmp_path / "fresh") is None
    with pytest.raises(ck.CheckpointError, match="resume="):
        ck.resolve_resume(str(tmp_path / "nothing"), tmp_path)


def test_mismatched_model_is_a_clear_error(tmp_path):
    m, o, s = _setup()
    path = ck.save_checkpoint(tmp_path, 1, m, o, s, {})
    with pytest.raises(ck.CheckpointError, match="does not match"):
        ck.load_checkpoint(path, torch.nn.Linear(2, 2))
