"""FrameCache (LRU, disk, keys, shared in-flight decodes), FailurePolicy and Prefetcher, ending with
a training-style loader over good, broken and hanging videos that completes."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import torch
from helpers_video import make_bad_corpus, read_indices, write_index_video

from museg.config import compose_config
from museg.data.video import (
    TRAIN_SPEC,
    FailureBudgetExceeded,
    FailurePolicy,
    FrameCache,
    Prefetcher,
    VideoError,
    VideoLoader,
    VideoUnreadableError,
    decode_video,
    video_spec_from_cfg,
)


class CountingDecode:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, path, spec, backend, timeout_s):
        with self.lock:
            self.calls.append(path)
        time.sleep(self.delay)
        return decode_video(path, spec, backend=backend, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    good = [write_index_video(root / f"g{i}.mp4", 30 + 10 * i, fps=25) for i in range(3)]
    return good, make_bad_corpus(root / "bad")


def test_memory_lru_and_keys(files, tmp_path):
    good, _ = files
    dec = CountingDecode()
    cache = FrameCache(memory_items=1, decode_fn=dec)
    a = cache.get(good[0], TRAIN_SPEC)
    assert cache.get(good[0], TRAIN_SPEC) is a and len(dec.calls) == 1
    assert cache.stats()["hits"] == 1
    cache.get(good[1], TRAIN_SPEC)  # evicts good[0]
    cache.get(good[0], TRAIN_SPEC)
    assert len(dec.calls) == 3
    cache.get(good[0], {"nframes": 4})  # spec in key
    cache.get(good[0], {"nframes": 4}, backend="decord")  # backend in key
    assert len(dec.calls) == 5
    # an edited file (new mtime/size) is never served from the cache
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(good[0].read_bytes())
    v1 = cache.get(copy, TRAIN_SPEC)
    copy.write_bytes(good[2].read_bytes())
    v2 = cache.get(copy, TRAIN_SPEC)
    assert len(dec.calls) == 7 and v1.meta["total_frames"] != v2.meta["total_frames"]


def test_disk_cache_roundtrip_and_torn_file(files, tmp_path):
    good, _ = files
    dec = CountingDecode()
    first = FrameCache(memory_items=0, disk_dir=tmp_path / "frames", decode_fn=dec)
    v = first.get(good[1], TRAIN_SPEC)
    second = FrameCache(memory_items=0, disk_dir=tmp_path / "frames", decode_fn=dec)
    w = second.get(good[1], TRAIN_SPEC)
    assert len(dec.calls) == 1 and second.stats()["disk_hits"] == 1
    assert torch.equal(v.frames, w.frames) and v.plan == w.plan and v.meta == w.meta
    for f in (tmp_path / "frames").glob("*.pt"):
        f.write_bytes(b"torn")
    third = FrameCache(memory_items=0, disk_dir=tmp_path / "frames", decode_fn=dec)
    assert torch.equal(third.get(good[1], TRAIN_SPEC).frames, v.frames) and len(dec.calls) == 2


def test_concurrent_gets_share_one_decode_and_failures_are_remembered(files):
    good, bad = files
    dec = CountingDecode(delay=0.3)
    cache = FrameCache(memory_items=4, decode_fn=dec)
    out = []
    threads = [threading.Thread(target=lambda: out.append(cache.get(good[2], TRAIN_SPEC)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dec.calls) == 1 and len(out) == 4 and all(o is out[0] for o in out)
    for _ in range(2):
        with pytest.raises(VideoUnreadableError, match="0 bytes"):
            cache.get(bad["empty"], TRAIN_SPEC)
    assert dec.calls.count(str(bad["empty"])) == 1 and cache.stats()["failures"] == 1
    with pytest.raises(VideoError, match="not found"):
        cache.get(bad["missing"], TRAIN_SPEC)


def test_policy_fail_mode_and_budget(tmp_path):
    def load(i):
        if i % 4 == 0:
            raise VideoUnreadableError(f"v{i}.mp4", "empty file (0 bytes)")
        return i

    strict = FailurePolicy(8, on_failure="fail", quarantine_path=tmp_path / "q.jsonl")
    with pytest.raises(VideoUnreadableError):
        strict.load(0, load)
    assert json.loads((tmp_path / "q.jsonl").read_text())["path"] == "v0.mp4"
    pol = FailurePolicy(8, max_failure_fraction=0.2)
    assert pol.load(0, load)[1] % 4 != 0  # 1 of 8 failed: replaced
    with pytest.raises(FailureBudgetExceeded, match=r"2 distinct videos failed of 8 distinct videos seen.*max_failure_fraction=0.2"):
        pol.load(4, load)
    with pytest.raises(ValueError, match="on_failure"):
        FailurePolicy(8, on_failure="skip")


def test_training_loader_over_good_bad_and_hanging_videos_completes(files, tmp_path):
    """Batches of 2 over 12 samples (6 good, 5 broken, 1 hanging); next batch prefetched while the
    'step' runs; every step gets decoded frames; broken ones land in the quarantine file."""
    good, bad = files
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)
    broken = [bad[k] for k in ("empty", "truncated", "audio_only", "one_frame", "missing")]
    paths = [str(p) for p in [good[0], broken[0], good[1], broken[1], good[2], fifo, broken[2],
                              good[0], broken[3], good[1], broken[4], good[2]]]
    run_dir = tmp_path / "run"
    cfg = compose_config(["task=train", "model=tiny", "data=synthetic",
                          "video.on_failure=replace", "video.max_failure_fraction=0.75"])
    policy = FailurePolicy.from_cfg(cfg.video, num_items=len(paths), run_dir=run_dir, seed=3,
                                    key_fn=lambda i: paths[i])
    cache = FrameCache(memory_items=8)
    pf = Prefetcher(cache, TRAIN_SPEC, timeout_s=3.0, workers=2)
    batches = [list(range(i, i + 2)) for i in range(0, len(paths), 2)]
    steps = []
    with pf:
        pf.submit(paths[i] for i in batches[0])
        for b, batch in enumerate(batches):
            if b + 1 < len(batches):
                pf.submit(paths[i] for i in batches[b + 1])
            got = [policy.load(i, lambda j: pf.get(paths[j])) for i in batch]
            for used, v in got:
                assert v.meta["path"] == paths[used] and read_indices(v.frames) == v.plan.indices
            steps.append([used for used, _ in got])
    assert len(steps) == len(batches)
    assert all(paths[u] in {str(g) for g in good} for s in steps for u in s)
    rows = [json.loads(line) for line in (run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert {r["key"] for r in rows} == {str(p) for p in broken} | {str(fifo)}
    assert {r["error"] for r in rows} >= {"VideoUnreadableError", "VideoNotFoundError",
                                          "VideoTimeoutError"}
    assert policy.num_replaced == 6


def test_prefetch_keeps_decode_off_the_critical_path(files):
    good, _ = files
    cache = FrameCache(memory_items=8, decode_fn=CountingDecode(delay=0.25))
    with Prefetcher(cache, TRAIN_SPEC, workers=1) as pf:
        pf.submit([good[0]])
        waits = []
        for k in range(3):
            if k + 1 < 3:
                pf.submit([good[k + 1]])  # next step's video decodes while this step "trains"
            t0 = time.perf_counter()
            pf.get(good[k])
            waits.append(time.perf_counter() - t0)
            time.sleep(0.4)  # the training step
        s = pf.stats()
    assert s["decoded"] == 3 and s["decode_s"] >= 0.75
    assert sum(waits[1:]) < 0.1 and s["wait_s"] < s["decode_s"] / 2


def test_loader_and_policy_from_the_composed_video_config(tmp_path):
    """``VideoLoader.from_cfg`` / ``FailurePolicy.from_cfg`` read every setting from ``cfg.video``
    (the schema's values, then overrides): frame spec, backend, timeout, cache, workers."""
    cfg = compose_config(["task=train", "model=tiny", "data=synthetic"])
    with VideoLoader.from_cfg(cfg.video, cache_dir=tmp_path) as loader:
        assert loader.spec == video_spec_from_cfg(cfg.video)
        assert loader.cache.memory_items == cfg.video.cache.memory_items
        assert loader.cache.disk_dir is None  # video.cache.disk is false by default
        assert loader.prefetcher.backend == cfg.video.backend
        assert loader.prefetcher.timeout_s == cfg.video.decode_timeout_s
        assert loader.prefetcher._pool._max_workers == min(2, cfg.video.prefetch)
    cfg = compose_config(["task=train", "model=tiny", "data=synthetic", "video.cache.disk=true",
                          "video.cache.memory_items=3", "video.prefetch=0",
                          "video.decode_timeout_s=null", "video.on_failure=fail"])
    with VideoLoader.from_cfg(cfg.video, spec={"nframes": 4}, cache_dir=tmp_path) as loader:
        assert loader.spec == {"nframes": 4} and loader.cache.memory_items == 3
        assert loader.cache.disk_dir == tmp_path / "frames"
        assert loader.prefetcher.timeout_s is None and loader.prefetcher._pool._max_workers == 1
    policy = FailurePolicy.from_cfg(cfg.video, num_items=4, run_dir=tmp_path, rank=1)
    assert policy.on_failure == "fail"
    assert policy.max_failure_fraction == cfg.video.max_failure_fraction
    assert policy.quarantine_path == tmp_path / "quarantine.rank1.jsonl"
