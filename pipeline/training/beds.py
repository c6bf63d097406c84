"""Programmes with music beds under speech, for training the music head to hear them.

Stretches of plain speech, of speech over a music bed 9-21 dB under the voice, and of plain music,
made from a manifest's clips (speech at -20 dBFS of active speech; a bed's level set against the
voice's active level, the gap drawn per stretch; 0.3 s fades; a -60 dBFS noise floor). Frames wholly
inside one stretch are labelled `speech`, `bed` or `music`; the music head learns beds as music
(issue #22: a monitor counts that music), the usage of the music comes from the talk-over head.
"""
from __future__ import annotations

import csv
import logging
import random
from pathlib import Path

import numpy as np

from operators.audio.constants import FRAME_S, HOP_S, SAMPLE_RATE as SR
from pipeline.training.audiofile import frames_of, read_audio

log = logging.getLogger("onair.train")

WEIGHTS = {"speech": 0.35, "bed": 0.40, "music": 0.25}
GAP_DB = (9.0, 21.0)            # the bed under the voice's active level
SPEECH_DBFS = -20.0
MUSIC_DBFS = (-22.0, -16.0)


def _win_rms(x: np.ndarray, w: int = 320) -> np.ndarray:
    n = len(x) // w
    return np.sqrt(np.mean(x[:n * w].reshape(n, w) ** 2, 1) + 1e-12)


def active_rms(x: np.ndarray) -> float:
    """RMS over active speech: 20 ms windows within 30 dB of the loudest 5 % (pauses do not count)."""
    r = _win_rms(x)
    if not len(r):
        return 0.0
    act = r > np.percentile(r, 95) * 10 ** (-30 / 20)
    return float(np.sqrt(np.mean(r[act] ** 2)))


def mix_bed(voice: np.ndarray, bed: np.ndarray, gap_db: float) -> np.ndarray:
    """The voice over the bed, the bed's RMS `gap_db` under the voice's active level."""
    bed = np.pad(bed, (0, max(0, len(voice) - len(bed))))[:len(voice)]
    rms = max(float(np.sqrt(np.mean(bed ** 2))), 1e-6)
    return voice + bed * (active_rms(voice) * 10 ** (-gap_db / 20) / rms)


class BedComposer:
    def __init__(self, manifest: Path, root: Path | None = None):
        self.root = root or manifest.parent
        self.speech: dict[str, list[dict]] = {}
        self.music: dict[str, list[dict]] = {}
        with open(manifest, newline="") as f:
            for r in csv.DictReader(f):
                if r["label"] == "speech" and float(r.get("duration_s") or 0) >= 0.5:
                    self.speech.setdefault(r["source"], []).append(r)
                elif r["label"] == "music":
                    self.music.setdefault(r["source"], []).append(r)
        self._audio: dict[str, np.ndarray] = {}

    def _load(self, path: str) -> np.ndarray:
        if path not in self._audio:
            self._audio[path] = read_audio(str(self.root / path)).astype(np.float32)
        return self._audio[path]

    def _talk(self, rng: random.Random, seconds: float) -> np.ndarray:
        """Utterances of one source, each at SPEECH_DBFS of active speech, 0.15-0.6 s apart."""
        rows = self.speech[rng.choice(sorted(self.speech))]
        parts, total = [], 0
        for _ in range(10000):
            if total >= seconds * SR:
                break
            a = self._load(rng.choice(rows)["path"])
            level = active_rms(a)
            if len(a) < SR * 0.2 or level < 1e-5:
                continue
            parts += [a * (10 ** (SPEECH_DBFS / 20) / level), np.zeros(int(rng.uniform(0.15, 0.6) * SR), np.float32)]
            total += len(parts[-2]) + len(parts[-1])
        return np.concatenate(parts)[:int(seconds * SR)] if parts else np.zeros(int(seconds * SR), np.float32)

    def _music(self, rng: random.Random, seconds: float) -> np.ndarray:
        """Music of one source: an excerpt of a clip long enough, else its clips in a row."""
        rows = self.music[rng.choice(sorted(self.music))]
        n = int(seconds * SR)
        long = [r for r in rows if float(r.get("duration_s") or 0) >= seconds]
        if long:
            a = self._load(rng.choice(long)["path"])
            start = rng.randrange(0, max(1, len(a) - n))
            return a[start:start + n]
        parts, total = [], 0
        while total < n:
            parts.append(self._load(rng.choice(rows)["path"]))
            total += len(parts[-1])
        return np.concatenate(parts)[:n]

    def build(self, rng: random.Random, minutes: float) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
        blocks, labels, t = [], [], 0
        kinds, weights = zip(*WEIGHTS.items())
        while t < minutes * 60 * SR:
            kind = rng.choices(kinds, weights)[0]
            if kind == "speech":
                a = self._talk(rng, rng.uniform(20, 90))
            elif kind == "music":
                a = self._music(rng, rng.uniform(30, 90))
                a = a * (10 ** (rng.uniform(*MUSIC_DBFS) / 20) / max(float(np.sqrt(np.mean(a ** 2))), 1e-6))
            else:
                voice = self._talk(rng, rng.uniform(20, 90))
                a = mix_bed(voice, self._music(rng, len(voice) / SR), rng.uniform(*GAP_DB))
            a = a.astype(np.float32)
            ramp = min(int(0.3 * SR), len(a) // 2)
            if ramp:
                r = np.linspace(0, 1, ramp, dtype=np.float32)
                a[:ramp] *= r
                a[-ramp:] *= r[::-1]
            labels.append((t / SR, (t + len(a)) / SR, kind))
            blocks.append(a)
            t += len(a)
        audio = np.concatenate(blocks)
        audio += np.random.default_rng(rng.randrange(1 << 30)).normal(0, 1e-3, len(audio)).astype(np.float32)
        return np.clip(audio, -1, 1), labels


def frame_labels(labels, n: int) -> list[str]:
    """Per frame: the stretch it lies wholly inside, else '' (left out)."""
    out = []
    for i in range(n):
        s = i * HOP_S
        out.append(next((k for a, b, k in labels if a <= s and s + FRAME_S <= b), ""))
    return out


def bed_frames(manifest: Path, count: int, minutes: float, embedder, cache: Path, root: Path | None = None):
    """Embeddings and labels (speech | bed | music) of `count` bed programmes, cached per seed."""
    composer = None
    xs, ys = [], []
    for seed in range(count):
        key = cache / f"beds-{embedder.name}-{seed}-{minutes}.npz"
        if not key.exists():
            composer = composer or BedComposer(manifest, root)
            audio, labels = composer.build(random.Random(5000 + seed), minutes)
            frames = frames_of(audio)
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(key, emb=embedder.embed(frames).embeddings, labels=np.array(frame_labels(labels, len(frames))))
            log.info("bed programme %d (%.0f min) embedded", seed, minutes)
        d = np.load(key)
        keep = d["labels"] != ""
        xs.append(d["emb"][keep])
        ys += [str(v) for v in d["labels"][keep]]
    return (np.concatenate(xs) if xs else np.zeros((0, embedder.dim), np.float32)), ys
