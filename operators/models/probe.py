"""A fixed probe signal whose embedding is stored with every trained head.

The same model file gives different embeddings on different kernels: YAMNet's
dynamic-range int8 TFLite run by XNNPACK (TensorFlow's default) and by TFLite's
own kernels give clearly different embeddings of the same frames (docs/figures.md).
A head fitted on one and run on the other is silently wrong, so a head carries
the embedding of this probe and the runtime compares it with its own.
"""
from __future__ import annotations

import numpy as np

from operators.audio.framing import FRAME_SAMPLES, SAMPLE_RATE

MIN_AGREEMENT = 0.99   # cosine; the same runtime gives > 0.999, other kernels ~0.9


def probe_frames() -> np.ndarray:
    """[3, 15600]: a harmonic chord with a slow tremolo, noise over a bass tone, and
    a rising chirp. Deterministic, so it never needs storing."""
    t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
    chord = sum(np.sin(2 * np.pi * f * k * t) / k for f in (220.0, 277.18, 329.63) for k in (1, 2, 3))
    chord *= 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    noise = np.random.default_rng(0).normal(0, 1, FRAME_SAMPLES)
    noise = np.cumsum(noise) * 0.02 + noise * 0.2 + np.sin(2 * np.pi * 82.4 * t)
    chirp = np.sin(2 * np.pi * (200 * t + 1800 * t ** 2))
    frames = np.stack([chord, noise, chirp])
    return (0.3 * frames / np.abs(frames).max(axis=1, keepdims=True)).astype(np.float32)


def fingerprint(embedder) -> np.ndarray:
    """The embedder's mean embedding of the probe (computed once per embedder)."""
    fp = getattr(embedder, "_probe_fingerprint", None)
    if fp is None:
        fp = embedder.embed(probe_frames()).embeddings.mean(0).astype(np.float64)
        embedder._probe_fingerprint = fp
    return fp


def agreement(stored, now) -> float:
    a, b = np.asarray(stored, np.float64), np.asarray(now, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
