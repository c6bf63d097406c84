"""Frame-level music F1 by the rules of DESIGN.md §4 (0.1 s grid, music
positive, speech_over_music and 0.5 s around true boundaries not scored), and
an offline replay of the HMM over per-frame probabilities. Used by `onair
train` to calibrate the HMM on labelled programmes."""
from __future__ import annotations

import csv

import numpy as np

from operators.audio.framing import FRAME_SAMPLES, HOP_S, SAMPLE_RATE
from operators.decisions.hmm import FixedLagHMM
from operators.decisions.segments import SegmentBuilder

STEP = 0.1


def read_labels(path) -> list[tuple[float, float, str]]:
    with open(path, newline="") as f:
        return [(float(r["start"]), float(r["end"]), r["label"]) for r in csv.DictReader(f)]


def truth_grid(rows) -> np.ndarray:
    n = int(np.ceil(rows[-1][1] / STEP))
    y = np.zeros(n, np.int8)
    for s, e, lab in rows:
        y[int(round(s / STEP)):int(round(e / STEP))] = 1 if lab == "music" else (-1 if lab == "speech_over_music" else 0)
    for s, e, _ in rows:
        for t in (s, e):
            k = int(round(t / STEP))
            y[max(0, k - 5):k + 5] = -1
    return y


def music_f1(rows, segments: list[dict]) -> float:
    y = truth_grid(rows)
    p = np.zeros(len(y), np.int8)
    for seg in segments:
        if seg["label"] == "music":
            p[max(0, int(round(seg["start"] / STEP))):max(0, min(len(y), int(round(seg["end"] / STEP))))] = 1
    m = y >= 0
    tp = np.sum((p == 1) & (y == 1) & m)
    fp = np.sum((p == 1) & (y == 0) & m)
    fn = np.sum((p == 0) & (y == 1) & m)
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def replay(p_music: np.ndarray, transition, prior, class_prior, lag: int, emission_weight: float) -> list[dict]:
    hmm = FixedLagHMM(transition, prior, lag, class_prior, emission_weight)
    seg = SegmentBuilder("replay")
    out = []
    for i, p in enumerate(p_music):
        for d in hmm.push(float(p), i * HOP_S):
            out += seg.push(d.time, d.state, d.posterior)
    for d in hmm.flush():
        out += seg.push(d.time, d.state, d.posterior)
    return out + seg.close((len(p_music) - 1) * HOP_S + FRAME_SAMPLES / SAMPLE_RATE)
