"""Recording identity: is the music after a candidate song boundary the same record as before it?

YAMNet's embedding says what kind of sound is playing, not which record: a break
inside a track (the band drops out, a synth pad takes over, the drums come back)
moves it as far as a change of record does. Two things survive such a break
and rarely match between two different records:

- the harmony: the chroma profile (energy per pitch class over 60 Hz - 2.5 kHz);
- the pulse: the autocorrelation of the onset-strength envelope (spectral flux)
  at lags of 0.25 - 2 s (30 - 240 beats per minute), averaged over 6 s windows.

Both are compared as Pearson correlations. A candidate boundary is the same
record when both are high; either alone matches too many pairs of different
records (two songs in the same key, or at the same tempo). Computed only when a
candidate boundary has passed the embedding and level tests (a few times an
hour per channel), from the channel's recent audio, so it costs nothing per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import stft

from operators.audio.framing import SAMPLE_RATE

ONSET_HOP = 160                     # 10 ms: the onset envelope at 100 Hz
ONSET_RATE = SAMPLE_RATE // ONSET_HOP
TEMPO_LAGS = (25, 200)              # 0.25 - 2 s
TEMPO_WINDOW_S = 6.0


@dataclass(frozen=True)
class Identity:
    chroma: float        # correlation of the chroma profiles, -1..1
    tempo: float         # correlation of the onset autocorrelations, -1..1

    def same_recording(self, chroma_min: float, tempo_min: float) -> bool:
        return self.chroma >= chroma_min and self.tempo >= tempo_min


def chroma_profile(audio: np.ndarray, nfft: int = 2048) -> np.ndarray:
    """Mean pitch-class distribution (12 values summing to 1) of `audio` at 16 kHz."""
    f, _, z = stft(np.asarray(audio, np.float32), SAMPLE_RATE, nperseg=nfft, noverlap=nfft // 2,
                   boundary=None, padded=False)
    keep = (f >= 60.0) & (f <= 2500.0)
    pitch_class = np.round(12 * np.log2(f[keep] / 440.0)).astype(int) % 12
    per_class = np.zeros((12, z.shape[1]))
    np.add.at(per_class, pitch_class, np.abs(z[keep]))
    # each STFT window weighs the same, loud or quiet: the profile is about harmony, not level
    per_class /= per_class.sum(axis=0, keepdims=True) + 1e-9
    return per_class.mean(axis=1)


def tempo_profile(audio: np.ndarray) -> np.ndarray | None:
    """Autocorrelation of the onset envelope at lags 0.25-2 s, mean over 6 s windows
    (None when `audio` is shorter than one window)."""
    if len(audio) < TEMPO_WINDOW_S * SAMPLE_RATE + 512:
        return None
    _, _, z = stft(np.asarray(audio, np.float32), SAMPLE_RATE, nperseg=512, noverlap=512 - ONSET_HOP,
                   boundary=None, padded=False)
    mag = np.log1p(100.0 * np.abs(z))
    flux = np.maximum(np.diff(mag, axis=1), 0.0).sum(axis=0)
    win = int(TEMPO_WINDOW_S * ONSET_RATE)
    out = []
    for start in range(0, len(flux) - win + 1, win // 2):
        x = flux[start:start + win] - flux[start:start + win].mean()
        r = np.correlate(x, x, "full")[win - 1:]
        out.append(r[TEMPO_LAGS[0]:TEMPO_LAGS[1]] / (r[0] + 1e-9))
    return np.mean(out, axis=0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def compare(before: np.ndarray, after: np.ndarray) -> Identity | None:
    """How alike two stretches of music are as recordings; None when either is too short to tell."""
    tb, ta = tempo_profile(before), tempo_profile(after)
    if tb is None or ta is None:
        return None
    return Identity(_pearson(chroma_profile(before), chroma_profile(after)), _pearson(tb, ta))
