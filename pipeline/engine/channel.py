"""Per-channel detection state: framing, music head, fixed-lag HMM, segments.

The source thread cuts frames (`frames_for`); the embedding thread feeds the
embedded frames back (`on_embedded`) in order, and `finish` closes the
channel's last segment at the end of its audio.
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np

from operators.models.classify import Head
from operators.audio.clip import AudioHistory, audio_field
from operators.decisions.debounce import Debouncer, DebounceParams
from operators.audio.decode import Chunk
from operators.tagging.genre import GenreTagger
from operators.audio.framing import FRAME_SAMPLES, HOP_SAMPLES, SAMPLE_RATE, FrameRing
from operators.decisions.hmm import FixedLagHMM
from operators.decisions.segments import SegmentBuilder
from operators.state import from_text, to_text
from pipeline.heads import TALK_CLASS

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
LEVEL_SAMPLES = FRAME_SAMPLES - FRAME_SAMPLES % 1600    # whole 0.1 s blocks of a frame
log = logging.getLogger("onair.channel")


class ChannelDetector:
    def __init__(self, channel: str, head: Head, hmm: dict, lag_frames: int, emit_segment, metrics=None,
                 debounce: dict | None = None, emit_request=None, genre_model=None, genre: dict | None = None,
                 emit_genre=None, talkover: Head | None = None):
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
        d = dict(debounce or {})
        self.talkover = talkover
        self._talk_threshold = d.pop("talkover_threshold", 0.5)
        self.audio_codec = d.pop("audio_codec", "flac")
        self.history = AudioHistory(d.pop("history_s", 45.0))
        self.debouncer = Debouncer(channel, DebounceParams.from_config(d), audio=self._recent_audio)
        self.emit_request = emit_request
        g = genre or {}
        self.genre = None if genre_model is None else GenreTagger(
            channel, genre_model, g.get("min_music_s", 12.0), g.get("update_s", 30.0), g.get("top_k", 3))
        self.emit_genre = emit_genre
        # per frame inside the HMM window: (embedding, levels, class scores, speech-over-music
        # probability, genre input or None)
        self._pending: deque = deque()
        self._audio_counter = self._music_gauge = None    # this channel's metric children, looked up once

    def frames_for(self, chunk: Chunk) -> list[tuple[float, np.ndarray]]:
        """Decoded audio in, frames out; the one place both runtimes count audio and discontinuities."""
        if chunk.reset:
            self.ring.reset(chunk.time)
        if chunk.reason in ("gap", "discontinuity"):
            log.warning("channel %s: %s in the source at stream time %.2f s", self.channel, chunk.reason, chunk.time)
            if self.metrics is not None:
                self.metrics.count("discontinuities", self.channel, kind=chunk.reason)
        if len(chunk.samples):
            self.newest_time = chunk.time + len(chunk.samples) / SAMPLE_RATE
            if self.metrics is not None:
                if self._audio_counter is None:   # labels() is a locked dict lookup: once, not per chunk
                    self._audio_counter = self.metrics.audio_seconds.labels(self.channel)
                self._audio_counter.inc(len(chunk.samples) / SAMPLE_RATE)
        return self.ring.push(chunk.samples)

    def on_embedded(self, times: list[float], embeddings: np.ndarray, newest: list[float],
                    frames: list[np.ndarray], class_scores: np.ndarray | None = None,
                    features: dict | None = None) -> None:
        """Embedded frames in order, with their audio and the newest stream time when each was cut.
        The clip history is built here, in decision order, because a file source runs far ahead of
        the model; per-frame times keep the decisions independent of how frames were batched."""
        p_music = self.head.predict_proba(embeddings)[:, self._music]
        p_talk = (self.talkover.predict_proba(embeddings)[:, self.talkover.classes.index(TALK_CLASS)].tolist()
                  if self.talkover is not None else [0.0] * len(times))
        scores = class_scores if class_scores is not None else [None] * len(times)
        genre_in = (self.genre.model.frame_inputs(embeddings, features) if self.genre is not None
                    else [None] * len(times))
        # levels of all frames at once (0.1 s blocks): per-frame numpy calls cost more than the maths
        parts = np.stack([f[:LEVEL_SAMPLES] for f in frames]).reshape(len(frames), -1, 1600)
        db = 10 * np.log10(np.mean(parts * parts, axis=2) + 1e-10)
        levels = zip(db.min(axis=1).tolist(), np.median(db, axis=1).tolist())
        for t, p, e, f, newest_time, sc, lv, pt, gx in zip(times, p_music.tolist(), embeddings, frames, newest,
                                                           scores, levels, p_talk, genre_in):
            self.history.push(t, f[:HOP_SAMPLES])
            self._pending.append((e, lv, sc, pt, gx))
            for d in self.hmm.push(p, t):
                self._decided(d, newest_time)

    def finish(self, end_time: float) -> None:
        for d in self.hmm.flush():
            self._decided(d, end_time)
        if self.genre is not None:
            for rec in self.genre.close(end_time):
                self._emit_genre(rec)
        for seg in self.segments.close(end_time):
            self._emit(seg)
        if self.metrics is not None:
            self.metrics.music.labels(self.channel).set(0)

    def state_dict(self) -> dict:
        return {"ring": self.ring.state_dict(), "hmm": self.hmm.state_dict(), "segments": self.segments.state_dict(),
                "newest_time": self.newest_time, "debounce": self.debouncer.state_dict(),
                "pending": [(to_text(e), lv, to_text(sc), pt, to_text(gx)) for e, lv, sc, pt, gx in self._pending],
                "genre": None if self.genre is None else self.genre.state_dict()}

    def load_state_dict(self, d: dict) -> None:
        self.ring.load_state_dict(d["ring"])
        self.hmm.load_state_dict(d["hmm"])
        self.segments.load_state_dict(d["segments"])
        self.newest_time = d["newest_time"]
        self.debouncer.load_state_dict(d["debounce"])
        # older snapshots: three fields per frame (before the talk-over head), four (before genre inputs)
        self._pending = deque((from_text(p[0]), tuple(p[1]), from_text(p[2]), p[3] if len(p) > 3 else 0.0,
                               self._genre_input_of(p)) for p in d["pending"])
        if self.genre is not None and d.get("genre"):
            self.genre.load_state_dict(d["genre"])

    def _genre_input_of(self, p: list):
        """A restored pending frame's genre input: stored, or its embedding for a head that reads
        only that; None where the snapshot was written for another head (operators.tagging.genre)."""
        if self.genre is None:
            return None
        if len(p) > 4 and p[4] is not None:
            x = from_text(p[4])
            return x if x.size == self.genre.model.head.dim else None
        return from_text(p[0]) if self.genre.model.inputs == ["embedding"] else None

    def _decided(self, d, newest_time: float) -> None:
        if self.metrics is not None:
            self.metrics.decision_lag.observe(max(0.0, newest_time - (d.time + FRAME_S)))
            if self._music_gauge is None:
                self._music_gauge = self.metrics.music.labels(self.channel)
            self._music_gauge.set(d.state)
        for seg in self.segments.push(d.time, d.state, d.posterior):
            self._emit(seg)
        emb, (lmin, lmed), scores, p_talk, genre_in = self._pending.popleft()
        if self.genre is not None:
            for rec in self.genre.push(d.time, d.state == 1, genre_in, scores):
                self._emit_genre(rec)
        vetoes = self.debouncer.same_recording_vetoes
        intents = self.debouncer.push(d.time, d.state == 1, emb, lmin, lmed, newest_time,
                                      talk=p_talk > self._talk_threshold)
        if self.metrics is not None and self.debouncer.same_recording_vetoes > vetoes:
            self.metrics.same_recording.labels(self.channel).inc(self.debouncer.same_recording_vetoes - vetoes)
        for intent in intents:
            if self.metrics is not None:
                self.metrics.requests_emitted.labels(self.channel, intent.reason).inc()
            if self.emit_request is not None:
                self.emit_request(self.request_record(intent))

    def _recent_audio(self, start: float, end: float) -> np.ndarray:
        return self.history.clip(start, end)[1].astype(np.float32) / 32768.0

    def _emit_genre(self, rec: dict) -> None:
        if self.emit_genre is not None:
            self.emit_genre(rec)

    def request_record(self, intent) -> dict:
        start, samples = self.history.clip(intent.clip_start, intent.clip_end)
        return {"request_id": intent.request_id, "channel": intent.channel, "clip_start": round(start, 3),
                "clip_end": round(start + len(samples) / SAMPLE_RATE, 3), "emitted_at": intent.emitted_at,
                "song_start": intent.song_start, "reason": intent.reason,
                "audio": audio_field(samples, self.audio_codec)}

    def _emit(self, seg: dict) -> None:
        if self.metrics is not None:
            self.metrics.segments.labels(self.channel, seg["label"]).inc()
        self.emit_segment(seg)
