"""Answer parsing for E.T. Bench (``shared/spec/etbench_metrics.md``), implemented from the spec.

Pure functions, no model, no Java:

- :func:`parse_timestamps` — the tvg-style timestamp rule (steps 1–6) used by tvg, epm, tem, tal,
  evs and the grounding half of gvq: ``[[start, end], ...]`` (each pair sorted), ``[]`` = failed.
- :func:`parse_captions` — dense-captioning answers (dvc, slc): ``(segments, captions)``.
- :func:`choice_outcome` / :func:`gvq_letter` — the letter rules of the multiple-choice tasks; the
  similarity fallback itself lives in :mod:`museg.eval.etbench.tasks`.
- :func:`first_number` — the vhd rule (first number of the answer).

Example::

    >>> parse_timestamps("The event happens in 3.5 - 10 seconds.")
    [[3.5, 10.0]]
    >>> parse_captions("0 - 10 seconds, a man walks.\\n10 - 20 seconds, he sits.")
    ([[0.0, 10.0], [10.0, 20.0]], ['a man walks.', 'he sits.'])
    >>> parse_captions("12.30-15.60 18.00-20.00")       # timestamps without captions: failed
    ([], [])

Interpretations where the spec leaves room (documented, tested): in the timestamp rule a matched
number that Python's ``float`` rejects (``"1..5"``) drops its pair (in caption parsing it fails the
whole answer, as the spec says); "A found nothing" (which opens A3 and step B) means no event
after pairing; A2 converts the zipped (start, end) pairs only; A3's form is
``start time X , end time Y`` with any spaces around the comma; a ``:`` time part without an
``mm:ss`` match falls through to the plain-number rule, and the plain-number rule parses only one
or two numbers; a single ``mm:ss`` time becomes a window like a single number; gvq's valid letters
come from the first sample of the group, as for the other multiple-choice tasks.
"""

from __future__ import annotations

import re

__all__ = [
    "parse_timestamps",
    "parse_captions",
    "choice_outcome",
    "gvq_letter",
    "strip_choice",
    "first_number",
    "option_letter",
]

_NUM = r"(\d+\.*\d*)"
RANGE_RE = re.compile(_NUM + r"\s*-\s*" + _NUM)
TO_RE = re.compile(_NUM + r"\s* to \s*" + _NUM)
SINGLE_RE = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
HMS_RE = re.compile(r"\b(\d{1,2}:\d{2}:\d{2})\b")
SENTENCE_SPLIT_RE = re.compile(r"[!?\n]")
KEYWORDS = ("starts", "ends", "happens in", "start time", "end time", "start", "end", "happen")

START_TIME_RE = re.compile(r"start(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?")
END_TIME_RE = re.compile(r"end(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?")
COMMA_TIME_RE = re.compile(r"start time (\d+\.*\d*)\s*,\s*end time (\d+\.*\d*)")
DESCRIPTION_RE = re.compile(r"description: (.*)")
BULLET_RE = re.compile(r"\*\s*(.*)")
MMSS_RE = re.compile(r"(\d+):(\d+\.?\d*)")
PLAIN_NUM_RE = re.compile(r"\d+\.*\d*(?!\.)")
FIRST_NUMBER_RE = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")
PAREN_LETTER_RE = re.compile(r"\(([A-Za-z])\)")


def _float(s: str) -> float | None:
    """``float(s)``, or None where Python rejects the matched text (``"1..5"``).

    >>> _float("12."), _float("1..5")
    (12.0, None)
    """
    try:
        return float(s)
    except ValueError:
        return None


def _pairs(matches: list[tuple[str, str]]) -> list[list[float]]:
    out = []
    for a, b in matches:
        s, e = _float(a), _float(b)
        if s is not None and e is not None:
            out.append([s, e])
    return out


def _pair_flat(values: list[float]) -> list[list[float]]:
    """Pair a flat list in order after truncating it to an even length.

    >>> _pair_flat([1.0, 2.0, 3.0])
    [[1.0, 2.0]]
    """
    values = values[: len(values) // 2 * 2]
    return [[values[i], values[i + 1]] for i in range(0, len(values), 2)]


def _hms(s: str) -> float:
    h, m, sec = (int(x) for x in s.split(":"))
    return float(h * 3600 + m * 60 + sec)


def candidate_sentences(text: str) -> list[str]:
    """Sentences (split on ``!``, ``?``, newline) that mention a start/end keyword.

    >>> candidate_sentences("it starts at 3. and ends at 5!no time here")
    ['it starts at 3. and ends at 5']
    """
    return [s for s in SENTENCE_SPLIT_RE.split(text) if any(k in s for k in KEYWORDS)]


def parse_timestamps(answer: str | None) -> list[list[float]]:
    """All segments of a timestamp answer by the tvg-style rule; ``[]`` means the sample failed.

    >>> parse_timestamps("From 12 to 5.5.")
    [[5.5, 12.0]]
    >>> parse_timestamps("It starts at 4.2 s.\\nIt ends at 9.")
    [[4.2, 9.0]]
    >>> parse_timestamps("no numbers")
    []
    """
    text = (answer or "").lower()
    pairs = _pairs(RANGE_RE.findall(text))
    if not pairs:
        pairs = _pairs(TO_RE.findall(text))
    if not pairs:
        sentences = candidate_sentences(text)
        firsts = []
        for s in sentences:
            m = SINGLE_RE.search(s)
            if m and (v := _float(m.group(1))) is not None:
                firsts.append(v)
        pairs = _pair_flat(firsts)
        if not pairs:
            firsts = [_hms(m.group(1)) for s in sentences if (m := HMS_RE.search(s))]
            pairs = _pair_flat(firsts)
    return [[min(s, e), max(s, e)] for s, e in pairs]


# --------------------------------------------------------------------------- dense captioning
Event = tuple[list[float], str]


class _Failed(Exception):
    """The whole captioning answer counts as failed (invalid number, ``start time X, end time Y``)."""


def _floats(pairs: list[tuple[str, str]]) -> list[list[float]]:
    """All pairs converted, or :class:`_Failed` if any number is not a valid float."""
    try:
        return [[float(a), float(b)] for a, b in pairs]
    except ValueError:
        raise _Failed from None


def _caption_pieces(pieces: list[str]) -> list[str]:
    """Pieces longer than 5 characters, stripped (whitespace, then ``,`` and space).

    >>> _caption_pieces([" , a man walks. ", "ok", " * x  "])
    ['a man walks.', '* x']
    """
    return [p.strip().strip(", ") for p in pieces if len(p) > 5]


def _captions_step_a(text: str) -> list[Event]:
    """Steps A, A2 and A3 on the lowercased answer; raises :class:`_Failed` (whole sample)."""
    matches = RANGE_RE.findall(text)
    if matches:
        times = _floats(matches)
        caps = _caption_pieces(RANGE_RE.sub("\n", text).replace("seconds", "").split("\n"))
    else:
        times = _floats(list(zip(START_TIME_RE.findall(text), END_TIME_RE.findall(text),
                                 strict=False)))
        caps = _caption_pieces(DESCRIPTION_RE.findall(text) or BULLET_RE.findall(text))
    events = list(zip(times, caps, strict=False))
    if not events and COMMA_TIME_RE.search(text):
        raise _Failed
    return events


def _window(t: float) -> list[float]:
    """A single time ``t`` becomes ``[t-20, t+20]`` if ``t > 20`` else ``[t, t+40]``.

    >>> _window(30.0), _window(20.0)
    ([10.0, 50.0], [20.0, 60.0])
    """
    return [t - 20, t + 20] if t > 20 else [t, t + 40]


def parse_time_part(part: str) -> list[float] | None:
    """Step B's time part: ``a - b``; one ``:`` (mm:ss); two ``:`` (two mm:ss); else 1–2 numbers.

    ``None`` = the piece is skipped (nothing parsed, or a number ``float`` rejects).

    >>> parse_time_part("at 01:30 "), parse_time_part("01:00 to 01:10")
    ([70.0, 110.0], [60.0, 70.0])
    >>> parse_time_part("around 5 "), parse_time_part("from 3 until 8 "), parse_time_part("x")
    ([5.0, 45.0], [3.0, 8.0], None)
    >>> parse_time_part("1..5 - 3 "), parse_time_part("at 1..5 ")
    (None, None)
    """
    if m := RANGE_RE.search(part):
        s, e = _float(m.group(1)), _float(m.group(2))
        return None if s is None or e is None else [s, e]
    colons = part.count(":")
    if colons == 1 and (m := MMSS_RE.search(part)):
        return _window(int(m.group(1)) * 60 + float(m.group(2)))
    if colons == 2:
        ms = MMSS_RE.findall(part)
        if len(ms) >= 2:
            return [int(ms[0][0]) * 60 + float(ms[0][1]), int(ms[1][0]) * 60 + float(ms[1][1])]
    found = PLAIN_NUM_RE.findall(part)
    nums = [v for x in found if (v := _float(x)) is not None]
    if len(nums) != len(found):
        return None
    if len(nums) == 1:
        return _window(nums[0])
    if len(nums) == 2:
        return nums
    return None


def _captions_step_b(answer: str) -> list[Event]:
    """At most one event from the original-case answer (newline pieces, else ``.`` pieces).

    >>> _captions_step_b("At 16 seconds, apply primer. At 55 seconds, contour the cheeks.")
    [([16.0, 56.0], 'apply primer.')]
    """
    if "\n" in answer:
        pieces = [p for p in answer.split("\n") if len(p) > 7]
    else:
        pieces = [p + "." for p in answer.split(".") if len(p) > 7]
    for piece in pieces:
        parts = [p.strip(",") for p in piece.split("seconds")]
        seg = parse_time_part(parts[0])
        if seg is not None:
            return [([round(seg[0], 2), round(seg[1], 2)], parts[-1].strip())]
    return []


def parse_captions(answer: str | None) -> tuple[list[list[float]], list[str]]:
    """``(segments, captions)`` of a dense-captioning answer (same length; empty = failed).

    Step A pairs every ``a - b`` (or ``start time:``/``end time:``) with the caption pieces by
    position; an answer in the ``start time X, end time Y`` form, or with a number ``float``
    rejects, fails as a whole; step B (only when A pairs nothing) yields at most one event.

    >>> parse_captions("start time: 1.5s end time: 4 seconds description: a dog runs")
    ([[1.5, 4.0]], ['a dog runs'])
    >>> parse_captions("At 30 seconds the chef cuts onions")
    ([[10.0, 50.0]], ['the chef cuts onions.'])
    >>> parse_captions("start time 5, end time 9, a dog runs")
    ([], [])
    """
    text = answer or ""
    try:
        events = _captions_step_a(text.lower())
    except _Failed:
        return [], []
    if not events:
        events = _captions_step_b(text)
    return [[min(t), max(t)] for t, _ in events], [c for _, c in events]


# --------------------------------------------------------------------------- choices, numbers
def option_letter(i: int) -> str:
    """Letter of option ``i`` (0 → ``A``).

    >>> option_letter(2)
    'C'
    """
    return chr(ord("A") + i)


def strip_choice(answer: str | None, keep_case: bool = False) -> str:
    """The text the letter rules (and the similarity fallback) look at: ``pred`` of the spec.

    Lowercased (unless ``keep_case``, gvq); a ``best option:`` at position 0 (case-insensitive)
    dropped; then leading whitespace, all leading ``(`` and leading whitespace again stripped.

    >>> strip_choice("Best option: (B) a cat"), strip_choice(" Best option: B")
    ('b) a cat', 'best option: b')
    >>> strip_choice(" ((  C) x", keep_case=True), strip_choice("Best option:  ( b) x")
    ('C) x', 'b) x')
    """
    text = answer or ""
    s = text if keep_case else text.lower()
    if text.lower().startswith("best option:"):
        s = s[len("best option:"):]
    return s.lstrip().lstrip("(").lstrip()


def _lone_first(s: str) -> str | None:
    """The first character if it stands alone (alone, or followed by ``.``, ``,``, space, ``)``).

    >>> _lone_first("b) x"), _lone_first("bx"), _lone_first("c"), _lone_first("1. x")
    ('b', None, 'c', '1')
    """
    if s and (len(s) == 1 or s[1] in "., )"):
        return s[0]
    return None


def choice_outcome(answer: str | None, correct: int) -> tuple[str, bool]:
    """Letter rules of rar/eca/rvq: ``(status, matched)``.

    ``status`` is ``hit`` (correct letter), ``empty`` (nothing left after stripping: failed) or
    ``fallback`` (decide by sentence similarity of :func:`strip_choice`'s text). ``matched`` is
    False when neither a ``(x)`` letter nor a lone first character (any character) was found —
    only then does a fallback sample count as failed.

    >>> choice_outcome("The answer is (C).", 2), choice_outcome("(a) wrong", 2)
    (('hit', True), ('fallback', True))
    >>> choice_outcome("best option: c. something", 2), choice_outcome("   ", 0)
    (('hit', True), ('empty', False))
    >>> choice_outcome("the red ball", 1), choice_outcome("1. the red ball", 1)
    (('fallback', False), ('fallback', True))
    """
    right = option_letter(correct).lower()
    m = PAREN_LETTER_RE.search(answer or "")
    matched = m is not None
    if m and m.group(1).lower() == right:
        return "hit", True
    s = strip_choice(answer)
    if not s:
        return "empty", matched
    first = _lone_first(s)
    if first is not None:
        matched = True
        if first == right:
            return "hit", True
    return "fallback", matched


def gvq_letter(answer: str | None, num_options: int) -> int | str:
    """gvq's choice: the option index of a lone valid letter, ``"empty"`` or ``"fallback"``.

    ``num_options`` sets the valid letters (a–d or a–e); the fallback compares
    ``strip_choice(answer, keep_case=True)`` with the options.

    >>> gvq_letter("B. on the table", 4), gvq_letter("(d)", 4), gvq_letter("E", 4)
    (1, 3, 'fallback')
    >>> gvq_letter("", 4), gvq_letter(" Best option: B", 4)
    ('empty', 'fallback')
    """
    s = strip_choice(answer, keep_case=True)
    if not s:
        return "empty"
    first = _lone_first(s)
    valid = [option_letter(i).lower() for i in range(num_options)]
    if first is not None and first.lower() in valid:
        return valid.index(first.lower())
    return "fallback"


def first_number(answer: str | None) -> float | None:
    """The first number of the answer (vhd), or None.

    >>> first_number("Score: -.5 then 3"), first_number("frame 12"), first_number("none")
    (-0.5, 12.0, None)
    """
    m = FIRST_NUMBER_RE.search(answer or "")
    return float(m.group(0)) if m else None
