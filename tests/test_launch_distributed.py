"""launcher=local with 2 gloo processes runs the real trainer: the data is sharded over the ranks,
rewards/advantages are gathered in rank order, and one optimizer step equals the single-process
step on the same global batch (same completions, rewards, advantages, loss and weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_launch import TEXT_REWARD_ENV, TINY_TRAIN, record_train, run_uses_run_job
from safetensors.torch import load_file

from museg.launch.local import launch_local
from museg.run import compose_config


def _cfg(tmp_path: Path, name: str, per_device: int, nproc: int):
    cfg = compose_config([*TINY_TRAIN, "train.max_steps=1", "train.save_steps=100",
                          "train.num_generations=4", f"train.per_device_train_batch_size={per_device}",
                          f"launcher.nproc_per_node={nproc}", f"paths.output_root={tmp_path}"])
    cfg.run_dir = str(tmp_path / name)
    return cfg


def _records(run_dir: Path, rank: int = 0) -> list[dict]:
    return json.loads((run_dir / f"records_rank{rank}.json").read_text())


def _completions(run_dir: Path) -> list[tuple[int, int, str]]:
    rows = [json.loads(ln) for ln in (run_dir / "completions.jsonl").read_text().splitlines()]
    return [(r["position"], r["generation"], r["completion"]) for r in rows]


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_on_the_same_batch(tmp_path, monkeypatch):
    monkeypatch.setenv(TEXT_REWARD_ENV, "1")  # non-zero advantages (inherited by the ranks)
    # one prompt x G=4 per step: 4 completions on one process, or 2 + 2 on two (the group spans
    # the ranks, so its advantages need the other rank's rewards)
    two = _cfg(tmp_path, "two", per_device=2, nproc=2)
    s2 = launch_local(record_train, two, nproc=2, backend="gloo")
    one = _cfg(tmp_path, "one", per_device=4, nproc=1)
    s1 = record_train(one)
    assert s2["world_size"] == 2 and s1["world_size"] == 1
    assert s2["step"] == s1["step"] == 1

    r2, r2b, r1 = _records(tmp_path / "two")[0], _records(tmp_path / "two", 1)[0], \
        _records(tmp_path / "one")[0]
    # sharded: each rank sampled its half of the group, the single process all of it
    assert r2["slots"] == [{"position": 0, "generations": [0, 1]}]
    assert r2b["slots"] == [{"position": 0, "generations": [2, 3]}]
    assert r1["slots"] == [{"position": 0, "generations": [0, 1, 2, 3]}]
    # the same completions (one seed per completion), gathered in order
    assert _completions(tmp_path / "two") == _completions(tmp_path / "one")
    assert [g for _, g, _ in _completions(tmp_path / "one")] == [0, 1, 2, 3]
    # rewards and advantages gathered over the ranks == the single-process ones, on both ranks
    assert r2["positions"] == r2b["positions"] == r1["positions"] == [0]
    assert r2["rewards"].keys() == r1["rewards"].keys()
    for k in r1["rewards"]:
        assert r2["rewards"][k] == pytest.approx(r1["rewards"][k], abs=1e-6), k
        assert r2b["rewards"][k] == r2["rewards"][k]
    assert len(r1["advantages"]) == 4 and any(abs(a) > 0.1 for a in r1["advantages"])
    assert r2["advantages"] == pytest.approx(r1["advantages"], abs=1e-6)
    assert r2b["advantages"] == r2["advantages"]
    m2, m1 = r2["metrics"], r1["metrics"]
    assert m2["reward/total"] == pytest.approx(m1["reward/total"], abs=1e-6)
    assert m2["loss"] == pytest.approx(m1["loss"], rel=1e-4, abs=1e-6)
    assert m2["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-3)
    # the same update: DDP's averaged gradient == the single-process gradient of the batch
    w2 = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    w1 = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    assert w2.keys() == w1.keys()
    worst = max(float((w2[k].float() - w1[k].float()).abs().max()) for k in w1)
    from museg.model import build_tiny_model

    w0 = load_file(str(build_tiny_model() / "model.safetensors"))
    moved = max(float((w1[k].float() - w0[k].float()).abs().max()) for k in w1 if k in w0)
    assert worst < 1e-5 and moved > 100 * worst, (worst, moved)  # a real, identical update


@pytest.mark.slow
@pytest.mark.skipif(not run_uses_run_job(), reason="needs museg.run -> museg.launch.job.run_job")
def test_cli_local_two_processes(tmp_path):
    from helpers_launch import cli

    res = cli([*TINY_TRAIN, "train.max_steps=1", "launcher.nproc_per_node=2",
               f"paths.output_root={tmp_path}", "experiment_name=ddp"], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "ddp" / "train").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 1
    assert "[rank 0]" in (run / "run.log").read_text()  # the ranks' log joins the run log
