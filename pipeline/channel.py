"""Per-channel detection state: framing, music head, fixed-lag HMM, segments.

The source thread cuts frames (`frames_for`); the embedding thread feeds the
embedded frames back (`on_embedded`) in order, and `finish` closes the
channel's last segment at the end of its audio.
"""
from __future__ import annotations

import numpy as np

from operators.classify import Head
from operators.decode import Chunk
from operators.framing import FRAME_SAMPLES, SAMPLE_RATE, FrameRing
from operators.hmm import FixedLagHMM
from operators.segments import SegmentBuilder

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


class ChannelDetector:
    def __init__(self, channel: str, head: Head, hmm: dict, lag_frames: int, emit_segment, metrics=None):
        self.channel = channel
        self.head = head
        self._music = head.classes.index("music")
        self.ring = FrameRing()
        self.hmm = FixedLagHMM(hmm["transition"], hmm["prior"], lag_frames, hmm["class_prior"],
                               hmm["emission_weight"])
        self.segments = SegmentBuilder(channel)
        self.emit_segment = emit_segment
        self.metrics = metrics
        self.newest_time = 0.0

    def frames_for(self, chunk: Chunk) -> list[tuple[float, np.ndarray]]:
        if chunk.reset:
            self.ring.reset(chunk.time)
        if len(chunk.samples):
            self.newest_time = chunk.time + len(chunk.samples) / SAMPLE_RATE
        return self.ring.push(chunk.samples)

    def on_embedded(self, times: list[float], embeddings: np.ndarray, newest_time: float) -> None:
        p_music = self.head.predict_proba(embeddings)[:, self._music]
        for t, p in zip(times, p_music):
            for d in self.hmm.push(float(p), t):
                self._decided(d, newest_time)

    def finish(self, end_time: float) -> None:
        for d in self.hmm.flush():
            self._decided(d, end_time)
        for seg in self.segments.close(end_time):
            self._emit(seg)
        if self.metrics is not None:
            self.metrics.music.labels(self.channel).set(0)

    def state_dict(self) -> dict:
        return {"ring": self.ring.state_dict(), "hmm": self.hmm.state_dict(), "segments": self.segments.state_dict(),
                "newest_time": self.newest_time}

    def load_state_dict(self, d: dict) -> None:
        self.ring.load_state_dict(d["ring"])
        self.hmm.load_state_dict(d["hmm"])
        self.segments.load_state_dict(d["segments"])
        self.newest_time = d["newest_time"]

    def _decided(self, d, newest_time: float) -> None:
        if self.metrics is not None:
            self.metrics.decision_lag.observe(max(0.0, newest_time - (d.time + FRAME_S)))
            self.metrics.music.labels(self.channel).set(d.state)
        for seg in self.segments.push(d.time, d.state, d.posterior):
            self._emit(seg)

    def _emit(self, seg: dict) -> None:
        if self.metrics is not None:
            self.metrics.segments.labels(self.channel, seg["label"]).inc()
        self.emit_segment(seg)
