"""Reading annotation files: UTF-8 text, JSON lists with each item's line number, video paths.

:func:`open_text` reads a file (a missing one is :class:`AnnotationFileNotFoundError`, non-UTF-8
text an :class:`AnnotationError`); :func:`iter_json_list` walks a top-level JSON list yielding
``(index, line, item)`` so a bad item is reported as ``FILE:LINE``; :func:`resolve_video_path` turns
an annotation's ``video`` into an absolute path under the video root. The loaders of
:mod:`museg.data.annotations` are built on these::

    path, text = open_text("data/eval/charades_sta.json")
    for i, line, item in iter_json_list(path, text): ...
    resolve_video_path("videos/charades/X.mp4", "/data/museg")   # '/data/museg/videos/charades/X.mp4'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from museg.data.annotation_records import AnnotationError, AnnotationFileNotFoundError

__all__ = ["iter_json_list", "open_text", "resolve_video_path"]


def resolve_video_path(video: str, video_root: str | os.PathLike | None) -> str:
    """Resolve a video path from an annotation against ``video_root``; returns an absolute path.

    Deterministic rule (the first existing candidate wins; existence is NOT required, preflight
    checks it):

    1. ``video`` absolute -> itself.
    2. ``root/video``.
    3. ``video`` starts with ``videos/`` -> ``root/<video without 'videos/'>``
       (a training path used with a root that already is the ``videos`` folder).
    4. otherwise -> ``root/videos/video`` (an evaluation path used with the root above ``videos``).
    5. none exists -> candidate 3 when the root's basename is ``videos`` and the prefix is there,
       else candidate 2.

    >>> resolve_video_path("videos/a/b.mp4", "/nonexistent/videos")
    '/nonexistent/videos/a/b.mp4'
    >>> resolve_video_path("videos/a/b.mp4", "/nonexistent/data")
    '/nonexistent/data/videos/a/b.mp4'
    >>> resolve_video_path("a/b.mp4", "/nonexistent/videos")
    '/nonexistent/videos/a/b.mp4'
    """
    if os.path.isabs(video):
        return os.path.normpath(video)
    root = os.path.abspath(os.path.expanduser(os.fspath(video_root))) if video_root else os.getcwd()
    direct = os.path.join(root, video)
    if os.path.exists(direct):
        return os.path.normpath(direct)
    prefixed = video.startswith("videos/")
    alt = os.path.join(root, video[len("videos/"):]) if prefixed else os.path.join(root, "videos", video)
    if os.path.exists(alt):
        return os.path.normpath(alt)
    if prefixed and os.path.basename(root) == "videos":
        return os.path.normpath(alt)
    return os.path.normpath(direct)


def open_text(path: str | os.PathLike) -> tuple[str, str]:
    """``(path, text)`` of an annotation file read as UTF-8 (a leading byte-order mark dropped)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise AnnotationFileNotFoundError(f"{p}: annotation file not found (check the path in the config)")
    try:  # utf-8-sig: a UTF-8 byte-order mark is not part of the first record
        with open(p, encoding="utf-8-sig") as f:
            return p, f.read()
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}) (fix: give the "
                              "annotation file as UTF-8 JSON)") from None


def iter_json_list(path: str, text: str) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(index, line, element)`` of a top-level JSON list, with each element's line number."""
    dec = json.JSONDecoder()
    ws = " \t\r\n"
    last = [0, 1]  # (position, line) of the previous lookup; positions only grow

    def line_of(pos: int) -> int:
        if pos < last[0]:
            last[:] = [0, 1]
        last[1] += text.count("\n", last[0], pos)
        last[0] = pos
        return last[1]

    def fail(pos: int, what: str) -> AnnotationError:
        return AnnotationError(f"{path}:{line_of(pos)}: malformed JSON: {what} (fix the file)")

    pos = len(text) - len(text.lstrip(ws))
    if pos >= len(text) or text[pos] != "[":
        raise fail(pos, "expected a JSON list of items at the top level")
    pos += 1
    i = 0
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos < len(text) and text[pos] == "]" and i == 0:
            _check_end(path, text, pos + 1, line_of)
            return
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise fail(e.pos, e.msg) from None
        yield i, line_of(pos), obj
        i += 1
        pos = end
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            _check_end(path, text, pos + 1, line_of)
            return
        else:
            raise fail(pos, "expected ',' or ']' after an item")


def _check_end(path: str, text: str, pos: int, line_of: Any) -> None:
    """Only whitespace may follow the closing ``]`` of a JSON list."""
    rest = len(text) - len(text[pos:].lstrip(" \t\r\n"))
    if rest < len(text):
        raise AnnotationError(f"{path}:{line_of(rest)}: malformed JSON: unexpected data after the "
                              f"list's closing ']' at offset {rest}: {text[rest:rest + 20]!r} "
                              "(fix the file)")
