"""Runs that cannot silently mix, lose or corrupt (training side): run fingerprints, verified
checkpoints with fallback, disk full at the checkpoint writer, unreadable-path videos quarantined,
the failure budget over distinct videos."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers_rl import oracle_mix_rollout, tiny_train_cfg
from omegaconf import OmegaConf
from safetensors.torch import load_file

from museg.config import compose_config
from museg.data.sources import materialize_synthetic
from museg.data.video import FailureBudgetExceeded, FailurePolicy, VideoUnreadableError
from museg.fingerprint import RunIdentityError, fingerprint_diff, model_identity, train_fingerprint
from museg.integrity import DiskFullError, verify_checkpoint, write_manifest
from museg.rl import checkpoint as ckpt
from museg.rl.trainer import train


def _weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(Path(run_dir) / "final" / "model.safetensors")


def test_other_dataset_is_refused_then_forced(tmp_path):
    """Same run directory, another training file (data root): refused with the differing keys."""
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, train__completions_every=0)
    train(cfg, rollout_fn=oracle_mix_rollout)
    other = tiny_train_cfg(tmp_path, train__max_steps=2, train__completions_every=0,
                           data__synthetic__seed=1)  # another generated dataset
    with pytest.raises(RunIdentityError) as err:
        train(other, rollout_fn=oracle_mix_rollout)
    msg = str(err.value)
    assert "\n" not in msg and "data.file.sha256" in msg and "resume=never" in msg
    assert "resume=force" in msg and "experiment_name" in msg
    OmegaConf.update(other, "resume", "force")
    summary = train(other, rollout_fn=oracle_mix_rollout)
    assert summary["resumed_from"].endswith("step-1") and summary["step"] == 2


def test_deleted_weights_fall_back_to_previous_intact_checkpoint(tmp_path, caplog):
    """step-3 without model.safetensors is skipped (one line); resuming from step-2 ends with the
    weights of an uninterrupted run."""
    cfg = tiny_train_cfg(tmp_path, train__max_steps=3, train__save_steps=1,
                         train__completions_every=0)
    full = train(cfg, rollout_fn=oracle_mix_rollout)
    expected = _weights(full["run_dir"])
    shutil.rmtree(Path(full["run_dir"]) / "final")
    step3 = Path(cfg.run_dir) / "checkpoints" / "step-3"
    (step3 / "model.safetensors").unlink()
    assert "model.safetensors missing" in verify_checkpoint(step3)
    with caplog.at_level(logging.WARNING, logger="museg.rl.checkpoint"):
        rest = train(cfg, rollout_fn=oracle_mix_rollout)
    skipped = [r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and "step-3" in skipped[0]
    assert rest["resumed_from"].endswith("step-2") and rest["step"] == 3
    got = _weights(rest["run_dir"])
    assert all(torch.allclose(expected[k], got[k], rtol=1e-4, atol=1e-6) for k in expected)
    assert verify_checkpoint(step3) is None  # rewritten intact


def test_truncated_newest_and_no_intact_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, opt, None, {"fingerprint": {"a": 1}})
    newest = tmp_path / "checkpoints" / "step-2"
    data = (newest / "optimizer.pt").read_bytes()
    (newest / "optimizer.pt").write_bytes(data[: len(data) // 2])
    assert ckpt.resolve_resume("auto", tmp_path).name == "step-1"
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.resolve_resume(str(newest), tmp_path)
    older = tmp_path / "checkpoints" / "step-1" / "trainer_state.pt"
    raw = bytearray(older.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    older.write_bytes(bytes(raw))  # same size, other bytes
    with pytest.raises(ckpt.CheckpointError, match="no intact checkpoint.*resume=never"):
        ckpt.resolve_resume("auto", tmp_path)


def test_disk_full_names_directory_and_keeps_previous(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    first = ckpt.save_checkpoint(tmp_path, 1, model, opt, None, {})
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if str(f).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError) as err:
        ckpt.save_checkpoint(tmp_path, 2, model, opt, None, {})
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "checkpoints") in msg and "needs about" in msg
    assert err.value.errno == errno.ENOSPC
    assert not ckpt.tmp_dir(tmp_path, 2).exists()
    assert ckpt.latest_checkpoint(tmp_path) == first and verify_checkpoint(first) is None


def _point_first_record_at(cfg, tmp_path: Path, video: str) -> None:
    materialize_synthetic(cfg)
    lines = Path(cfg.data.train_file).read_text().splitlines()
    first = json.loads(lines[0])
    first["video"] = video
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    OmegaConf.update(cfg, "data.train_file", str(data))


@pytest.mark.parametrize("kind", ["symlink_loop", "path_through_file", "name_too_long"])
def test_unreadable_path_is_quarantined_in_training(tmp_path, kind):
    if kind == "symlink_loop":
        os.symlink(tmp_path / "b.mp4", tmp_path / "a.mp4")
        os.symlink(tmp_path / "a.mp4", tmp_path / "b.mp4")
        video = str(tmp_path / "a.mp4")
    elif kind == "path_through_file":
        (tmp_path / "x.mp4").write_bytes(b"not a directory")
        video = str(tmp_path / "x.mp4" / "child.mp4")
    else:
        video = str(tmp_path / ("v" * 300 + ".mp4"))
    cfg = tiny_train_cfg(tmp_path, train__max_steps=1, data__shuffle=False,
                         train__completions_every=0)
    _point_first_record_at(cfg, tmp_path, video)
    summary = train(cfg, rollout_fn=oracle_mix_rollout)
    assert summary["step"] == 1 and summary["failed_videos"] == [video]
    q = json.loads((Path(cfg.run_dir) / "quarantine.jsonl").read_text().splitlines()[0])
    assert q["error"] == "VideoUnreadableError"
    assert {"symlink_loop": "ELOOP", "path_through_file": "ENOTDIR",
            "name_too_long": "ENAMETOOLONG"}[kind] in q["cause"]


def test_failure_budget_counts_distinct_videos():
    """16 samples on 8 videos, 4 videos broken: 4/8 = 0.5 > 0.2 aborts (it used to be 4/16
    samples, and 2 of the first videos already exceed the budget over the videos seen)."""
    videos = [f"v{i // 2}.mp4" for i in range(16)]
    pol = FailurePolicy(16, max_failure_fraction=0.2, key_fn=lambda i: videos[i])

    def load(i):
        if int(videos[i][1]) % 2 == 0:
            raise VideoUnreadableError(videos[i], "empty file (0 bytes)")
        return i

    with pytest.raises(FailureBudgetExceeded, match=r"distinct videos failed of \d+ distinct "
                                                     r"videos seen.*max_failure_fraction=0.2"):
        for i in range(16):
            pol.load(i, load)
    n, seen = pol.failure_fraction()
    assert n / seen > 0.2 and seen <= 8


def test_final_model_identity_is_its_content_so_a_resave_keeps_it(tmp_path):
    """final/ carries a manifest (sha256 per file): saving the same weights again (a finished run
    rerun) keeps stage 2's fingerprint of its init model; other weights change it."""
    final = tmp_path / "final"
    final.mkdir()
    (final / "config.json").write_text('{"a": 1}')
    (final / "model.safetensors").write_bytes(b"weights-1")
    write_manifest(final, {"kind": "final"})
    first = model_identity(final)
    os.utime(final / "model.safetensors", (1, 1))  # re-saved: same bytes, new mtime
    write_manifest(final, {"kind": "final"})
    assert model_identity(final) == first
    (final / "model.safetensors").write_bytes(b"weights-2")  # retrained: same size, new content
    write_manifest(final, {"kind": "final"})
    assert model_identity(final) != first


def test_generator_parameters_count_only_for_generated_data(tmp_path):
    """Real-data runs carry no data.synthetic keys, so a run fingerprinted before the section was
    typed (it recorded ``data.synthetic: {}``) resumes; generated data keeps every parameter."""
    real = train_fingerprint(compose_config(["task=train", "model=tiny",
                                             f"paths.data_root={tmp_path}"]))
    assert not any(k.startswith("data.synthetic") for k in real)
    assert fingerprint_diff({**real, "data.synthetic": {}}, real) == []
    assert fingerprint_diff({**real, "data.synthetic": {"seed": 1}}, real) == ["data.synthetic"]
    generated = train_fingerprint(tiny_train_cfg(tmp_path))
    assert generated["data.synthetic.n_train_videos"] == 6
    changed = tiny_train_cfg(tmp_path, data__synthetic__seed=5)
    assert fingerprint_diff(generated, train_fingerprint(changed)) == ["data.synthetic.seed"]
