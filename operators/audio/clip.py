"""Recent audio of a channel, kept to cut recognition clips, and clip encoding.

The history is 16-bit at 16 kHz (what recognition services take), so each
channel holds `seconds` x 32 kB. Clips are FLAC (lossless, about half the
bytes of WAV) or 16-bit WAV, base64 in the request record.
"""
from __future__ import annotations

import base64
import io
import wave

import av
import numpy as np

from operators.audio.constants import SAMPLE_RATE as RATE
from operators.audio.decode import decode_whole


class AudioHistory:
    def __init__(self, seconds: float = 40.0):
        self._buf = np.zeros(int(seconds * RATE), np.int16)
        self._w = 0               # next write position in the ring
        self._end_time = 0.0      # stream time just after the newest sample
        self._filled = 0

    def push(self, time: float, samples: np.ndarray) -> None:
        """Append samples starting at stream time `time` (a gap is filled with silence, up to the ring size)."""
        x = np.clip(np.asarray(samples, np.float32), -1, 1)
        gap = int(round((time - self._end_time) * RATE)) if self._filled else 0
        if gap > 0:
            self._append(np.zeros(min(gap, len(self._buf)), np.int16))
        self._append((x * 32767).astype(np.int16))
        self._end_time = time + len(x) / RATE

    def _append(self, x: np.ndarray) -> None:
        n = len(self._buf)
        x = x[-n:]
        first = min(len(x), n - self._w)
        self._buf[self._w:self._w + first] = x[:first]
        self._buf[:len(x) - first] = x[first:]
        self._w = (self._w + len(x)) % n
        self._filled = min(n, self._filled + len(x))

    @property
    def start_time(self) -> float:
        return self._end_time - self._filled / RATE

    def clip(self, start: float, end: float) -> tuple[float, np.ndarray]:
        """The audio of [start, end) that is still held; returns its actual start and int16 samples."""
        start = max(start, self.start_time)
        end = min(end, self._end_time)
        if end <= start:
            return start, np.zeros(0, np.int16)
        back_a = int(round((self._end_time - start) * RATE))
        back_b = int(round((self._end_time - end) * RATE))
        idx = (self._w - back_a + np.arange(back_a - back_b)) % len(self._buf)
        return start, self._buf[idx]


def encode(samples: np.ndarray, codec: str = "flac") -> bytes:
    samples = np.asarray(samples, np.int16)
    if codec == "wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(samples.tobytes())
        return out.getvalue()
    out = io.BytesIO()
    with av.open(out, "w", format="flac") as c:
        s = c.add_stream("flac", rate=RATE)
        s.layout = "mono"
        for i in range(0, len(samples), 4096):
            f = av.AudioFrame.from_ndarray(samples[None, i:i + 4096], format="s16", layout="mono")
            f.sample_rate, f.pts = RATE, i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return out.getvalue()


def audio_field(samples: np.ndarray, codec: str = "flac") -> dict:
    return {"codec": codec, "sample_rate": RATE, "data": base64.b64encode(encode(samples, codec)).decode()}


def decode_clip(data: bytes) -> np.ndarray:
    """A clip's bytes (WAV or FLAC, as `encode` writes them) -> float32 mono at 16 kHz."""
    if data[:4] == b"RIFF":
        with wave.open(io.BytesIO(data)) as w:
            if w.getsampwidth() != 2 or w.getframerate() != RATE:
                raise ValueError("clip is not 16-bit WAV at 16 kHz")
            x = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, w.getnchannels()).mean(axis=1)
        return (x / 32768.0).astype(np.float32)
    return decode_whole(io.BytesIO(data), "clip")
