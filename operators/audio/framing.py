"""Per-channel ring buffer that cuts 16 kHz audio into 0.96 s model frames.

DESIGN.md §2: a frame is 15 600 samples (a full 96 x 64 log-mel patch needs
0.975 s), consecutive frames start 15 360 samples apart. Audio arrives in
decoder-sized pieces; the ring keeps only what the next frames still need.
"""
from __future__ import annotations

import numpy as np

from operators.state import from_text, to_text

from operators.audio.constants import FRAME_SAMPLES, HOP_S, HOP_SAMPLES, SAMPLE_RATE  # noqa: F401 (re-exported)


class FrameRing:
    """Accumulates contiguous audio and yields (stream_time, frame) pairs.

    `start_time` is the stream time of the first sample pushed after a reset;
    a discontinuity (gap, PTS reset) calls `reset(new_time)`, dropping the
    partial frame, since a frame spanning a discontinuity describes no real
    audio.
    """

    def __init__(self, capacity: int = 4 * FRAME_SAMPLES):
        self._buf = np.zeros(capacity, np.float32)
        self._read = 0          # index of the next frame's first sample
        self._write = 0         # one past the last valid sample
        self._run_start = 0.0   # stream time of the first sample since reset
        self._frames = 0        # frames emitted since reset

    def reset(self, start_time: float) -> None:
        self._read = self._write = 0
        self._run_start = float(start_time)
        self._frames = 0

    @property
    def buffered(self) -> int:
        return self._write - self._read

    def push(self, samples: np.ndarray):
        """Append samples; return a list of (time, frame copy) ready now."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        out = []
        pos = 0
        while pos < len(samples):
            room = len(self._buf) - self._write
            if room == 0:
                self._compact()
                room = len(self._buf) - self._write
                if room == 0:  # a frame's worth is buffered but not consumed: cannot happen
                    raise RuntimeError("frame ring overflow")
            n = min(room, len(samples) - pos)
            self._buf[self._write:self._write + n] = samples[pos:pos + n]
            self._write += n
            pos += n
            while self._write - self._read >= FRAME_SAMPLES:
                t = self._run_start + self._frames * HOP_S
                out.append((t, self._buf[self._read:self._read + FRAME_SAMPLES].copy()))
                self._read += HOP_SAMPLES
                self._frames += 1
        return out

    def snapshot(self) -> dict:
        return {"run_start": self._run_start, "frames": self._frames,
                "tail": to_text(self._buf[self._read:self._write])}

    def restore(self, d: dict) -> None:
        tail = from_text(d["tail"])
        self._read, self._write = 0, len(tail)
        self._buf[:len(tail)] = tail
        self._run_start, self._frames = d["run_start"], d["frames"]

    def _compact(self) -> None:
        # Only the unconsumed tail (< one frame) moves, never the history.
        tail = self._write - self._read
        self._buf[:tail] = self._buf[self._read:self._write]
        self._read, self._write = 0, tail
