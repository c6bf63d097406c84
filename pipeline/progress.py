"""A progress line on stderr while streams are processed as fast as the machine allows.

For each channel: how far into its stream it is (seconds of stream time, of the total when
known) and the share of the decided seconds that were music; for the run: how many times
real time it goes (stream seconds of all channels per wall-clock second).

    [  12 s] 312x real time | dev-radio-aac 1200/1331 s (90%) music 41% | dev-tv-aac 1180/1237 s (95%) music 66%

On a terminal the line is rewritten in place (carriage return) at most every `every_s`.
Elsewhere (a log file, CI, a pipe) it is a new line every max(`every_s`, 30 s), so a log of a
long run stays readable. `close()` always ends with one final line.

`note()` may be called from any thread (one per source, or the engine's); it only updates
numbers under a lock and writes when a line is due, so it costs nothing between lines.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

NOT_TTY_EVERY_S = 30.0   # a line every 2 s would flood a log file


@dataclass(frozen=True)
class ChannelProgress:
    position_s: float = 0.0   # newest decoded stream time
    music_s: float = 0.0      # decided seconds that were music
    decided_s: float = 0.0    # decided seconds so far


class Progress:
    def __init__(self, channels: list[str], stream: TextIO | None = None, every_s: float = 2.0,
                 totals: dict[str, float] | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, label: str = "real time"):
        """`totals`: stream seconds per channel when known (files), for "done / total".
        `tty`: rewrite one line (default: whether `stream` is a terminal). `clock`: seconds,
        monotonic. `label`: what the speed is a multiple of."""
        self.stream = stream if stream is not None else sys.stderr
        self.totals = dict(totals or {})
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s if self.tty else max(every_s, NOT_TTY_EVERY_S)
        self.clock = clock
        self.label = label
        self._channels = {ch: ChannelProgress() for ch in channels}
        self._lock = threading.Lock()
        self._t0: float | None = None
        self._last_line = -float("inf")
        self._width = 0          # length of the line on screen, to blank what a shorter one leaves
        self._closed = False

    def start(self) -> "Progress":
        with self._lock:
            self._t0 = self.clock()
            self._last_line = self._t0
        return self

    def note(self, channel: str, position_s: float, music_s: float = 0.0, decided_s: float = 0.0) -> None:
        with self._lock:
            if self._closed:
                return
            if self._t0 is None:
                self._t0 = self._last_line = self.clock()
            self._channels[channel] = ChannelProgress(position_s, music_s, decided_s)
            now = self.clock()
            if now - self._last_line >= self.every_s:
                self._last_line = now
                self._write(self.line(now))

    def close(self) -> None:
        """Print the final line (and end the rewritten one on a terminal). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            now = self.clock()
            if self._t0 is None:
                self._t0 = now
            self._write(self.line(now, final=True), end=True)

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- rendering
    def speed(self, now: float) -> float:
        elapsed = now - (self._t0 if self._t0 is not None else now)
        done = sum(c.position_s for c in self._channels.values())
        return done / elapsed if elapsed > 0 else 0.0

    def line(self, now: float, final: bool = False) -> str:
        elapsed = now - (self._t0 if self._t0 is not None else now)
        head = f"done in {elapsed:.1f} s" if final else f"[{elapsed:4.0f} s]"
        parts = [f"{head}: {self.speed(now):.0f}x {self.label}"]
        for ch, c in self._channels.items():
            total = self.totals.get(ch)
            where = f"{c.position_s:.0f}/{total:.0f} s ({min(c.position_s / total, 1):.0%})" if total \
                else f"{c.position_s:.0f} s"
            music = f" music {c.music_s / c.decided_s:.0%}" if c.decided_s > 0 else ""
            parts.append(f"{ch} {where}{music}")
        return " | ".join(parts)

    def _write(self, text: str, end: bool = False) -> None:
        if self.tty:
            cols = shutil.get_terminal_size((120, 24)).columns
            if len(text) >= cols and not end:   # a wrapped line cannot be rewritten with \r
                text = text[:cols - 2] + "…"
            pad = " " * max(self._width - len(text), 0)
            self._width = 0 if end else len(text)
            self.stream.write("\r" + text + pad + ("\n" if end else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def for_files(inputs: list[tuple[str, str]], live_setting="auto", stream: TextIO | None = None):
    """A Progress for a run of files (None when any input is live: a live channel has no end to
    count towards), with each file's duration from its container when it says."""
    import av

    from pipeline.sources import is_live
    if any(is_live(url, live_setting) for _, url in inputs):
        return None
    totals = {}
    for ch, url in inputs:
        try:
            with av.open(url) as c:
                if c.duration:
                    totals[ch] = c.duration / 1e6
        except Exception:  # unreadable here: the source reports it properly when it opens
            pass
    return Progress([ch for ch, _ in inputs], stream, totals=totals)
