"""Rendering and encoding for the synthetic grounding videos (used by ``museg.data.synthetic``).

A video is a plain background on which at most one big, saturated shape is visible at a time. An
:class:`Event` shows one colour's shape during frames ``[start_frame, end_frame)``, optionally moving
linearly from one position to another. :func:`render_video` turns a list of events into frames and
encodes them with :func:`encode_frames`, museg's one PyAV writer (H.264 ``libx264``, ``yuv420p``;
``mpeg4`` if libx264 is unavailable; the tests' index videos use it too).

Example::

    from museg.data.synthetic_render import Event, render_video
    ev = [Event("red", 10, 30, (0, 0), (40, 40))]
    render_video("/tmp/x.mp4", ev, n_frames=50, size=(112, 112), fps=10, blob_frac=0.6)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

# Saturated colours far apart in RGB, and one shape per colour (the query names both).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (235, 20, 20),
    "green": (20, 210, 40),
    "blue": (30, 60, 240),
    "yellow": (240, 220, 20),
    "magenta": (220, 30, 220),
    "cyan": (20, 220, 230),
}
SHAPES: dict[str, str] = {
    "red": "square",
    "green": "circle",
    "blue": "triangle",
    "yellow": "diamond",
    "magenta": "square",
    "cyan": "circle",
}
BACKGROUND: tuple[int, int, int] = (48, 48, 48)


@dataclass(frozen=True)
class Event:
    """``colour``'s shape is visible in frames ``[start_frame, end_frame)``; its top-left corner
    moves linearly from ``pos0`` to ``pos1`` (``(y, x)`` pixels)."""

    colour: str
    start_frame: int
    end_frame: int
    pos0: tuple[int, int]
    pos1: tuple[int, int]


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean ``side x side`` mask of a shape ('square', 'circle', 'triangle', 'diamond').

    >>> int(shape_mask("square", 4).sum()), int(shape_mask("circle", 9)[4].sum())
    (16, 9)
    """
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    c = side / 2.0
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= c * c
    if shape == "triangle":  # apex at the top, base at the bottom
        return np.abs(xx - c) <= yy / 2.0
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= c
    raise ValueError(f"unknown shape {shape!r}; known: square, circle, triangle, diamond")


def blob_side(size: tuple[int, int], blob_frac: float) -> int:
    """Side of the shape's bounding box in pixels for a frame ``size=(height, width)``.

    >>> blob_side((112, 112), 0.6)
    67
    """
    return max(4, int(round(min(size) * blob_frac)))


def blob_centre(event: Event, frame: int, side: int) -> tuple[int, int]:
    """Pixel ``(y, x)`` at the centre of the shape in ``frame`` (inside every shape's mask)."""
    y, x = _position(event, frame)
    return y + side // 2, x + side // 2


def _position(event: Event, frame: int) -> tuple[int, int]:
    span = max(1, event.end_frame - event.start_frame - 1)
    a = (frame - event.start_frame) / span
    y = round(event.pos0[0] + a * (event.pos1[0] - event.pos0[0]))
    x = round(event.pos0[1] + a * (event.pos1[1] - event.pos0[1]))
    return int(y), int(x)


def render_frames(
    events: list[Event],
    n_frames: int,
    size: tuple[int, int],
    blob_frac: float,
    background: tuple[int, int, int] = BACKGROUND,
    noise: float = 0.0,
    noise_seed: int = 0,
    clock_rows: int = 0,
    clock_frames: int = 0,
):
    """Yield ``n_frames`` RGB uint8 frames ``[H, W, 3]`` showing ``events`` (no overlap allowed).

    With ``clock_rows`` > 0 the bottom rows show a white bar whose length grows with the frame
    index (full width at ``clock_frames``): the time is then visible in the pixels, which a tiny
    model trained for minutes needs (a real Qwen2.5-VL reads it from M-RoPE time positions).
    """
    h, w = size
    side = blob_side(size, blob_frac)
    masks = {c: shape_mask(SHAPES[c], side) for c in {e.colour for e in events}}
    active: list[Event | None] = [None] * n_frames
    for ev in events:
        for f in range(ev.start_frame, min(ev.end_frame, n_frames)):
            if active[f] is not None:
                raise ValueError(f"events overlap at frame {f}: {active[f]} and {ev}")
            active[f] = ev
    bg = np.empty((h, w, 3), dtype=np.uint8)
    bg[:] = background
    rng = np.random.default_rng(noise_seed)
    # pixel noise: a small bank of Gaussian noise images, one picked at random per frame (fast)
    bank = rng.normal(0.0, noise, size=(8, h, w, 3)).astype(np.int16) if noise > 0 else None
    for f in range(n_frames):
        frame = bg.copy()
        ev = active[f]
        if ev is not None:
            y, x = _position(ev, f)
            region = frame[y:y + side, x:x + side]
            region[masks[ev.colour][: region.shape[0], : region.shape[1]]] = PALETTE[ev.colour]
        if clock_rows > 0:
            frame[h - clock_rows:] = 0
            frame[h - clock_rows:, : round(w * min(1.0, f / max(1, clock_frames)))] = 255
        if bank is not None:
            noisy = frame.astype(np.int16) + bank[rng.integers(len(bank))]
            frame = np.clip(noisy, 0, 255).astype(np.uint8)
        yield frame


def pick_codec() -> str:
    """'libx264' when PyAV has it, else 'mpeg4'."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_frames(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: float | Fraction,
    *,
    codec: str | None = None,
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
    time_base: Fraction | None = None,
    pts: Sequence[int] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> str:
    """Encode RGB uint8 frames ``[H, W, 3]`` of ``size=(height, width)`` into a video file at
    ``fps``; returns the codec used. The one PyAV writer of museg and its tests.

    ``codec``: None picks libx264, else mpeg4 (:func:`pick_codec`). ``pix_fmt``: yuv420p needs even
    sides (an odd size raises ``ValueError``; use yuv444p). ``options``: encoder options (None: the
    synthetic data's, libx264 crf 16 / mpeg4 qscale 2, one thread). ``pts``: each frame's
    timestamp in ``time_base`` units (None: the frame index in ``1 / fps``), e.g. a variable frame
    rate. ``container_options``: muxer options, e.g. ``{"movflags": "faststart"}``.

    Determinism: the same frames nearly always give the same bytes, but on a busy machine about one
    libx264 video in a few thousand has a frame coded differently (decoded pixels then differ by a few
    levels in a few frames); compare decoded pixels with a small tolerance, not file bytes.
    """
    h, w = size
    if pix_fmt == "yuv420p" and (h % 2 or w % 2):
        raise ValueError(f"frame size must be even for yuv420p, got {size}")
    codec = codec or pick_codec()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(os.fspath(path), "w", options=dict(container_options or {})) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.time_base = time_base or 1 / rate
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if options is not None:
            stream.options = dict(options)
        elif codec == "libx264":
            stream.options = {"crf": "16", "preset": "veryfast", "threads": "1"}
        else:
            stream.options = {"qscale": "2"}
            stream.thread_count = 1
        for i, arr in enumerate(frames):
            # converted here, on one thread: the same pixels as the encoder's own conversion
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(format=pix_fmt,
                                                                            threads=1)
            frame.pts = i if pts is None else pts[i]
            if time_base is not None:
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return codec


def render_video(
    path: str | os.PathLike,
    events: list[Event],
    n_frames: int,
    size: tuple[int, int],
    fps: float,
    blob_frac: float,
    background: tuple[int, int, int] = BACKGROUND,
    noise: float = 0.0,
    noise_seed: int = 0,
    clock_rows: int = 0,
    clock_frames: int = 0,
) -> str:
    """Render ``events`` and write the video to ``path``; returns the codec used."""
    frames = render_frames(events, n_frames, size, blob_frac, background, noise, noise_seed,
                           clock_rows, clock_frames)
    return encode_frames(path, frames, size, fps)
