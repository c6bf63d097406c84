"""Whole-file decoding for training and `onair genre`: any file PyAV opens
-> 16 kHz mono float32, through the same decode operators as live input."""
from __future__ import annotations

import numpy as np

from operators.audio.decode import decode_whole
from operators.audio.framing import FRAME_SAMPLES, HOP_SAMPLES


def read_audio(path: str) -> np.ndarray:
    return decode_whole(str(path), str(path))


def frames_of(audio: np.ndarray, max_frames: int | None = None) -> np.ndarray:
    """[N, 15600] frames of a clip; a clip shorter than one frame is zero-padded
    around its centre; `max_frames` keeps evenly spaced ones."""
    if len(audio) < FRAME_SAMPLES:
        pad = FRAME_SAMPLES - len(audio)
        return np.pad(audio, (pad // 2, pad - pad // 2))[None].astype(np.float32)
    n = 1 + (len(audio) - FRAME_SAMPLES) // HOP_SAMPLES
    idx = np.arange(n)
    if max_frames and n > max_frames:
        idx = np.unique(np.linspace(0, n - 1, max_frames).round().astype(int))
    return np.stack([audio[i * HOP_SAMPLES:i * HOP_SAMPLES + FRAME_SAMPLES] for i in idx]).astype(np.float32)
