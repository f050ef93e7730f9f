"""Synthetic test videos whose frames encode their own index, and a corpus of broken videos.

Each frame of :func:`write_index_video` shows ``BITS`` vertical stripes, stripe ``k`` white when bit
``k`` of the frame index is set, black otherwise: flat regions that survive H.264 compression and
any resize, so :func:`read_indices` recovers exactly which source frames a decoder returned.

    >>> p = write_index_video(tmp / "a.mp4", 40, fps=25)           # doctest: +SKIP
    >>> read_indices(decode_video(p, {"nframes": 8}).frames)        # doctest: +SKIP
    [0, 6, 11, 17, 22, 28, 33, 39]

:func:`make_bad_corpus` writes one file per failure mode (0 bytes, truncated mid-stream, audio only,
one frame, variable frame rate, header frame count that lies, garbage bytes, a missing path; two
truncations: moov index lost, and index intact with the media data cut short) and
returns ``{name: path}``.
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from museg.data.synthetic_render import encode_frames

BITS = 10
WHITE, BLACK = 235, 16
FPS_23976 = Fraction(24000, 1001)


def index_frame(i: int, height: int, width: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] frame whose stripes spell ``i`` in binary (stripe 0 = lowest bit)."""
    img = np.full((height, width, 3), BLACK, np.uint8)
    for k in range(BITS):
        if (i >> k) & 1:
            img[:, k * width // BITS:(k + 1) * width // BITS] = WHITE
    return img


def read_index(frame: torch.Tensor | np.ndarray) -> int:
    """Index spelled by one frame ([C,H,W] tensor or [H,W,C] array), read at stripe centres."""
    a = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if isinstance(frame, torch.Tensor):
        a = a.transpose(1, 2, 0)
    h, w = a.shape[:2]
    gray = a.astype(np.float32).mean(axis=2)
    value = 0
    for k in range(BITS):
        lo, hi = k * w / BITS, (k + 1) * w / BITS
        c0, c1 = int(lo + (hi - lo) * 0.3), max(int(lo + (hi - lo) * 0.7), int(lo + (hi - lo) * 0.3) + 1)
        if gray[h // 4: h - h // 4 or h, c0:c1].mean() > 128:
            value |= 1 << k
    return value


def read_indices(frames: torch.Tensor) -> list[int]:
    """Indices spelled by a [T, C, H, W] uint8 tensor."""
    return [read_index(f) for f in frames]


def write_index_video(path: str | Path, n_frames: int, fps: float | Fraction = 30,
                      width: int = 160, height: int = 96, codec: str = "libx264",
                      pix_fmt: str | None = None, pts: list[int] | None = None,
                      time_base: Fraction | None = None, gop: int = 12,
                      container_options: dict | None = None) -> Path:
    """Write an H.264 (default) video of ``n_frames`` index-coded frames; returns the path.

    Odd sizes switch to yuv444p (4:2:0 needs even sides). ``pts`` (in ``time_base`` units) gives a
    variable frame rate. Encoded by museg's one writer, :func:`museg.data.synthetic_render.encode_frames`."""
    path = Path(path)
    if pix_fmt is None:
        pix_fmt = "yuv444p" if (width % 2 or height % 2) else "yuv420p"
    if codec == "libx264":
        options = {"crf": "12", "g": str(gop), "bf": "2", "preset": "veryfast"}
    else:
        options = {"g": str(gop), "qscale": "2", "qmin": "1", "qmax": "3"}
    frames = (index_frame(i, height, width) for i in range(n_frames))
    encode_frames(path, frames, (height, width), fps, codec=codec, pix_fmt=pix_fmt, options=options,
                  time_base=time_base, pts=pts, container_options=container_options)
    return path


def write_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An .mp4 holding one AAC audio stream and no video."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = "mono"
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for k in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k:k + 1024]),
                                               format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = k
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _patch_avi_frame_count(path: Path, count: int) -> None:
    """Overwrite the frame counts in an AVI header (avih.dwTotalFrames, strh.dwLength)."""
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih")
    struct.pack_into("<I", data, avih + 8 + 16, count)  # dwTotalFrames
    strh = data.find(b"strh")
    struct.pack_into("<I", data, strh + 8 + 32, count)  # dwLength
    path.write_bytes(bytes(data))


def make_bad_corpus(root: str | Path) -> dict[str, Path]:
    """Write the broken-video corpus under ``root``; returns ``{name: path}``.

    ``vfr`` and ``lying_header`` are valid videos that must decode (exact frames, content frame
    count); all others must raise ``VideoUnreadableError``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    out["empty"] = root / "empty.mp4"
    out["empty"].write_bytes(b"")
    good = write_index_video(root / "full.mp4", 60, fps=25)
    data = good.read_bytes()
    out["truncated"] = root / "truncated.mp4"
    out["truncated"].write_bytes(data[: len(data) * 6 // 10])  # moov (at the end) is gone
    fast = write_index_video(root / "faststart.mp4", 100, fps=25,
                             container_options={"movflags": "faststart"})
    data = fast.read_bytes()
    out["truncated_faststart"] = root / "truncated_faststart.mp4"  # index intact, data cut
    out["truncated_faststart"].write_bytes(data[: len(data) * 6 // 10])
    out["audio_only"] = write_audio_only(root / "audio_only.mp4")
    out["one_frame"] = write_index_video(root / "one_frame.mp4", 1, fps=25)
    out["garbage"] = root / "garbage.mp4"
    out["garbage"].write_bytes(os.urandom(4096))
    # variable frame rate: 50 frames at irregular times (ms)
    gaps = [20 if i % 3 else 90 for i in range(50)]
    pts = [int(x) for x in np.cumsum([0] + gaps[:-1])]
    out["vfr"] = write_index_video(root / "vfr.mp4", 50, fps=25, pts=pts,
                                   time_base=Fraction(1, 1000))
    # complete AVI whose header claims 10x more frames than it holds
    lying = write_index_video(root / "lying_header.avi", 48, fps=24, codec="mpeg4")
    _patch_avi_frame_count(lying, 480)
    out["lying_header"] = lying
    out["missing"] = root / "does_not_exist.mp4"
    return out
