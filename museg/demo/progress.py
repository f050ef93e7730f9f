"""What the demo shows while it runs: numbered phases with an ETA, and its children's progress bars.

The demo (:mod:`museg.demo.pipeline`) runs six phases: the warm-up (in a spawned process, with its
own tqdm bar), then held-out evaluation, stage-1 GRPO, evaluation, stage-2 GRPO, evaluation (each a
``python -m museg.run`` child); :data:`PHASES` names the models they evaluate. :class:`PhaseClock`
numbers the phases ``1/6`` … ``6/6`` and gives each an ETA from the measured rate of the same kind
of phase (seconds per evaluated item, per GRPO step); the first phase of a kind has no measurement
yet and points at its progress bar instead.

:func:`run_child` runs a child on a pseudo-terminal, so its tqdm bars (``disable=None`` turns them
off on pipes) draw in place on a terminal; without a terminal (a log file, CI) the bar updates are
collapsed to one line every :data:`NON_TTY_BAR_INTERVAL_S` seconds.

>>> clock = PhaseClock(total=3)
>>> clock.start("stage-1 GRPO", "train", 10, out=lambda s: None)
'[demo] 1/3 stage-1 GRPO: 10 steps (ETA: see its progress bar)'
>>> clock.rates["train"] = 2.0
>>> clock.eta_text("train", 5)
'ETA 10 s'
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PHASES = ("warmup", "stage1", "stage2")  # the models the demo evaluates, in order
LABELS = {"warmup": "the warm-up", "stage1": "stage 1", "stage2": "stage 2"}
NON_TTY_BAR_INTERVAL_S = 30.0
UNIT_NAMES = {"warmup": "steps", "train": "steps", "eval": "items"}


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``.

    >>> format_duration(45.2), format_duration(185), format_duration(3725)
    ('45 s', '3 min 05 s', '1 h 02 min')
    """
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@dataclass
class PhaseClock:
    """Numbers the demo's phases and estimates each one's duration from finished ones."""

    total: int
    index: int = 0
    rates: dict[str, float] = field(default_factory=dict)  # kind -> seconds per unit
    now: Callable[[], float] = time.time
    _current: tuple[str, str, int, float] | None = None
    t0: float | None = None

    def eta_text(self, kind: str, units: int | None) -> str:
        rate = self.rates.get(kind)
        if rate is None or not units:
            return "ETA: see its progress bar"
        return f"ETA {format_duration(rate * units)}"

    def start(self, label: str, kind: str, units: int | None,
              out: Callable[[str], None] | None = None) -> str:
        """Print (and return) ``[demo] i/N label: units (ETA ...)``; ends the previous phase."""
        self.finish(out)
        self.index += 1
        if self.t0 is None:
            self.t0 = self.now()
        self._current = (label, kind, int(units or 0), self.now())
        size = f"{units} {UNIT_NAMES.get(kind, 'units')}" if units else "size unknown"
        line = f"[demo] {self.index}/{self.total} {label}: {size} ({self.eta_text(kind, units)})"
        (out or _print)(line)
        return line

    def finish(self, out: Callable[[str], None] | None = None, units: int | None = None) -> None:
        """Close the current phase: record its rate (``units`` if now known) and say how long."""
        if self._current is None:
            return
        label, kind, planned, started = self._current
        n = int(units or planned)
        took = self.now() - started
        if n:
            self.rates[kind] = took / n
        self._current = None
        (out or _print)(f"[demo] {self.index}/{self.total} {label}: done in "
                        f"{format_duration(took)} (elapsed {format_duration(self.now() - (self.t0 or 0))})")


def _print(line: str) -> None:
    print(line, flush=True)


class _Relay:
    """Writes a child's output to the console and a log file, handling ``\\r`` bar updates."""

    def __init__(self, log, console=None, tty: bool | None = None) -> None:
        self.log, self.console = log, console or sys.stdout
        self.tty = self.console.isatty() if tty is None else tty
        self.pending, self.last_bar = "", 0.0
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # bars use multi-byte chars

    def feed_bytes(self, chunk: bytes) -> None:
        self.feed(self.decoder.decode(chunk))

    def feed(self, text: str) -> None:
        text = self.pending + text
        parts = re.split(r"(\r\n|\n|\r)", text)
        self.pending = parts.pop()  # incomplete tail
        for segment, sep in zip(parts[0::2], parts[1::2], strict=True):
            if sep == "\r":  # a progress-bar redraw
                self._bar(segment)
            else:
                self._line(segment)

    def _bar(self, segment: str) -> None:
        now = time.time()
        if self.tty:
            self.console.write("\r" + segment)
            self.console.flush()
        elif segment.strip() and now - self.last_bar >= NON_TTY_BAR_INTERVAL_S:
            self.console.write(segment.strip() + "\n")
            self.console.flush()
            self.last_bar = now

    def _line(self, segment: str) -> None:
        last = segment.split("\r")[-1]
        self.log.write(last + "\n")
        self.console.write(("\r" if self.tty else "") + last + "\n")
        self.console.flush()

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""


def _terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.lines, size.columns
    except (OSError, ValueError):
        return 24, 100


def run_child(cmd: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd`` with its output on a pseudo-terminal (a pipe where there is none), relayed to
    the console and to ``log_path``; returns the exit code."""
    with open(log_path, "w", encoding="utf-8") as log:
        relay = _Relay(log)
        try:
            import fcntl
            import pty
            import struct
            import termios

            master, slave = pty.openpty()
            rows, cols = _terminal_size()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        except (ImportError, OSError):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read1(4096), b""):
                relay.feed_bytes(chunk)
            relay.close()
            return proc.wait()
        proc = subprocess.Popen(cmd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL,
                                env=env, close_fds=True)
        os.close(slave)
        try:
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                relay.feed_bytes(chunk)
        finally:
            os.close(master)
            relay.close()
        return proc.wait()
