"""One run of one channel: framing, music head, fixed-lag HMM, segments, debounce, genre.

The engine cuts frames with `frames_for` (the feeding thread), hands the embedded
frames back to `on_embedded` in order (the embedding thread) and calls `finish` at
the end of the run's audio. Each returns the records it decided, as (kind, record)
pairs; the engine hands them to its outputs. A run is a timeline: a channel whose
source ends and starts again gets a new ChannelDetector.

The operators work in stream time; this is where records get their UTC (the run's
StreamClock, pipeline.clock) and their ids, built from UTC so that no two runs,
restarts or days share one. An outage of the source (a gap in stream time of at
least `min_no_signal_s`) is a `no_signal` segment: the day's record accounts for it.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque

import numpy as np

from operators.audio.clip import AudioHistory, audio_field
from operators.audio.constants import FRAME_S, HOP_S, HOP_SAMPLES, SAMPLE_RATE
from operators.audio.decode import Chunk
from operators.audio.framing import FrameRing
from operators.audio.levels import block_levels_db
from operators.decisions.debounce import Debouncer
from operators.decisions.hmm import FixedLagHMM
from operators.decisions.segments import SegmentBuilder
from operators.state import from_text, to_text
from operators.tagging.genre import SongGenres
from operators.tagging.provider_genres import provider_tags
from pipeline.clock import StreamClock, iso
from pipeline.heads import TALK_CLASS, Heads
from pipeline.identity.live import LiveIdentity
from pipeline.metrics import Metrics
from pipeline.params import ChannelParams

log = logging.getLogger("onair.channel")

Records = list[tuple[str, dict]]    # (kind, record): kind is segments | requests | genres


def segment_id(seg: dict) -> str:
    """From the channel and UTC start: unique across runs and days, and deterministic, so a
    replayed segment (Kafka failover) can be recognised as a copy."""
    return f"{seg['channel']}/{seg['start_utc']}"


def play_id(channel: str, song_start_utc: str) -> str:
    """The song that started at `song_start_utc` on `channel`: its requests' ids begin with it."""
    return f"{channel}:{song_start_utc}"


def request_id(channel: str, song_start_utc: str, n: int) -> str:
    """The n-th request of the song that started at `song_start_utc` on `channel`."""
    return f"{play_id(channel, song_start_utc)}:{n}"


class ChannelDetector:
    def __init__(self, channel: str, models: Heads, params: ChannelParams, metrics: Metrics,
                 clock: StreamClock | None = None, index=None):
        self.channel = channel
        self.clock = clock or StreamClock.fixed("run_start", time.time())
        self.min_no_signal_s = params.min_no_signal_s
        self._gaps: deque = deque()    # (start, end) outages cut by frames_for, not yet decided past
        self.head = models.music
        self.talkover = models.talkover
        self._music = self.head.classes.index("music")
        self.ring = FrameRing()
        self.hmm = FixedLagHMM.from_params(params.hmm)
        self.segments = SegmentBuilder(channel)
        self.metrics = metrics
        self.newest_time = 0.0
        self.decided_s = 0.0           # stream seconds decided so far, and how many of them music
        self.music_s = 0.0
        self._talk_threshold = params.talkover_threshold
        self.audio_codec = params.audio_codec
        self.history = AudioHistory(params.history_s)
        # early requests only where the fingerprint index answers the repeats they would otherwise pay
        deb = params.debounce if index is not None else dataclasses.replace(params.debounce, first_request_s=0.0,
                                                                             talk_intro_s=0.0)
        self.debouncer = Debouncer(channel, deb, audio=self._recent_audio)
        # frames wait as long as the debouncer may place a song boundary behind the newest decision
        wait_s = HOP_S * (2 * deb.window_frames + deb.peak_wait_frames + 2)
        self.genre = None if models.genre is None else SongGenres(channel, models.genre, params.genre, wait_s)
        # the fingerprint index on this channel's audio (pipeline.identity.live), when one is open
        self.identity = None if index is None else LiveIdentity(channel, index, self._held_audio, self._play_id, metrics)
        # per frame inside the HMM window: (embedding, levels, class scores, speech-over-music
        # probability, genre input or None)
        self._pending: deque = deque()
        # the music and talk-over scores of the frames in the HMM window, not decided yet: an early
        # request needs them all to say clean music
        self._ahead: deque = deque()
        self._newest_frame = None
        # this channel's metric children, looked up once: labels() is a locked dict lookup
        self._audio_counter = metrics.audio_seconds.labels(channel)
        self._music_gauge = metrics.music.labels(channel)
        self._no_signal_counter = metrics.no_signal.labels(channel)
        self._had_audio = False

    def frames_for(self, chunk: Chunk) -> list[tuple[float, np.ndarray]]:
        """Decoded audio in, frames out; the one place audio and discontinuities are counted."""
        if chunk.reset:
            self.ring.reset(chunk.time)
        if chunk.reason in ("gap", "discontinuity"):
            log.warning("channel %s: %s in the source at stream time %.2f s", self.channel, chunk.reason, chunk.time)
            self.metrics.count("discontinuities", self.channel, kind=chunk.reason)
            if chunk.reason == "gap" and self._had_audio:
                self.outage(chunk.time)
        if len(chunk.samples):
            self._had_audio = True
            self.newest_time = chunk.time + len(chunk.samples) / SAMPLE_RATE
            self._audio_counter.inc(len(chunk.samples) / SAMPLE_RATE)
        return self.ring.push(chunk.samples)

    def outage(self, until: float) -> None:
        """No signal from the newest audio up to stream time `until` (the source dropped out);
        decided in order with the frames, so the segments around it close where it began."""
        start = self.newest_time
        if until - start >= self.min_no_signal_s:
            self._gaps.append((start, until))
            self.newest_time = max(self.newest_time, until)

    def on_embedded(self, times: list[float], embeddings: np.ndarray, newest: list[float],
                    frames: list[np.ndarray], class_scores: np.ndarray | None = None,
                    features: dict | None = None) -> Records:
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
        db = block_levels_db(np.stack(frames))
        levels = zip(db.min(axis=1).tolist(), np.median(db, axis=1).tolist())
        out: Records = []
        for t, p, e, f, newest_time, sc, lv, pt, gx in zip(times, p_music.tolist(), embeddings, frames, newest,
                                                           scores, levels, p_talk, genre_in):
            self.history.push(t, f[:HOP_SAMPLES])
            self._pending.append((e, lv, sc, pt, gx))
            self._ahead.append(p > 0.5 and pt <= self._talk_threshold)
            self._newest_frame = t
            for d in self.hmm.push(p, t):
                out += self._decided(d, newest_time)
        return out

    def finish(self, end_time: float) -> Records:
        out: Records = []
        for d in self.hmm.flush():
            out += self._decided(d, end_time)
        if self.identity is not None:
            self.identity.close(self.debouncer, end_time)
        while self._gaps:
            out += self._no_signal(*self._gaps.popleft())
        if self.genre is not None:
            out += self._genres(self.genre.close(end_time))
        out += self._segments(self.segments.close(end_time))
        self._music_gauge.set(0)
        return out

    def snapshot(self) -> dict:
        return {"ring": self.ring.snapshot(), "hmm": self.hmm.snapshot(), "segments": self.segments.snapshot(),
                "newest_time": self.newest_time, "debounce": self.debouncer.snapshot(),
                "pending": [(to_text(e), lv, to_text(sc), pt, to_text(gx)) for e, lv, sc, pt, gx in self._pending],
                "genre": None if self.genre is None else self.genre.snapshot(),
                "decided_s": self.decided_s, "music_s": self.music_s, "clock": self.clock.snapshot(),
                "gaps": list(self._gaps), "had_audio": self._had_audio, "ahead": list(self._ahead)}

    def restore(self, d: dict) -> None:
        self.ring.restore(d["ring"])
        self.hmm.restore(d["hmm"])
        self.segments.restore(d["segments"])
        self.newest_time = d["newest_time"]
        self.decided_s, self.music_s = d.get("decided_s", 0.0), d.get("music_s", 0.0)
        if d.get("clock"):
            self.clock.restore(d["clock"])
        self._gaps = deque(tuple(g) for g in d.get("gaps", []))
        self._had_audio = d.get("had_audio", self.newest_time > 0)
        self._ahead = deque(d.get("ahead", [True] * len(d["pending"])))
        self.debouncer.restore(d["debounce"])
        # older snapshots: three fields per frame (before the talk-over head), four (before genre inputs)
        self._pending = deque((from_text(p[0]), tuple(p[1]), from_text(p[2]), p[3] if len(p) > 3 else 0.0,
                               self._genre_input_of(p)) for p in d["pending"])
        if self.genre is not None and d.get("genre"):
            self.genre.restore(d["genre"])

    def _genre_input_of(self, p: list):
        """A restored pending frame's genre input: stored, or its embedding for a head that reads
        only that; None where the snapshot was written for another head (operators.tagging.genre)."""
        if self.genre is None:
            return None
        if len(p) > 4 and p[4] is not None:
            x = from_text(p[4])
            return x if x.size == self.genre.model.head.dim else None
        return from_text(p[0]) if self.genre.model.inputs == ["embedding"] else None

    def _no_signal(self, start: float, end: float) -> Records:
        """The outage [start, end): what was open closes at its start, and it is a segment."""
        out: Records = []
        if self.genre is not None:
            out += self._genres(self.genre.close(start))
        out += self._segments(self.segments.gap(start, end))
        self.debouncer.reset_run()    # music on both sides of an outage is not known to be one song
        self._no_signal_counter.inc(end - start)
        return out

    def _decided(self, d, newest_time: float) -> Records:
        self.metrics.decision_lag.observe(max(0.0, newest_time - (d.time + FRAME_S)))
        self._music_gauge.set(d.state)
        self.decided_s += HOP_S
        self.music_s += HOP_S * d.state
        out: Records = []
        while self._gaps and d.time >= self._gaps[0][1] - 1e-6:
            out += self._no_signal(*self._gaps.popleft())
        emb, (lmin, lmed), scores, p_talk, genre_in = self._pending.popleft()
        out += self._segments(self.segments.push(d.time, d.state, d.posterior, p_talk))
        if self._ahead:
            self._ahead.popleft()
        vetoes = self.debouncer.same_recording_vetoes
        talk = p_talk > self._talk_threshold
        clean = d.state == 1 and not talk
        # the index checks the newest audio before the debouncer decides whether to ask (what it
        # knows holds or shapes the request) and again once a frame has opened a song
        intents = [] if self.identity is None else self.identity.step(self.debouncer, newest_time, clean,
                                                                       d.time + HOP_S)
        if self.identity is not None and self.debouncer.between_songs:
            intents += self.identity.probe(self.debouncer, newest_time, self._clean_ahead_since())
        intents += self.debouncer.push(d.time, d.state == 1, emb, lmin, lmed, newest_time, talk=talk,
                                       ahead_is_music=all(self._ahead))
        if self.identity is not None:
            intents += self.identity.step(self.debouncer, newest_time, clean, d.time + HOP_S)
        if self.genre is not None:
            out += self._genres(self.genre.push(d.time, d.state == 1, genre_in, scores, self.debouncer.song_start,
                                                talk=talk, p_background=p_talk))
            if self.identity is not None and self.identity.current is not None:
                out += self._genres(self.genre.identified(provider_tags(self.identity.current.get("answer"))))
        if self.debouncer.same_recording_vetoes > vetoes:
            self.metrics.same_recording.labels(self.channel).inc(self.debouncer.same_recording_vetoes - vetoes)
        for intent in intents:
            self.metrics.requests_emitted.labels(self.channel, intent.reason).inc()
            out.append(("requests", self.request_record(intent)))
        return out

    def _clean_ahead_since(self) -> float | None:
        """Where the clean music that the frames not decided yet hear, up to the newest, began (by
        the heads' own scores), or None."""
        k = 0
        for clean in reversed(self._ahead):
            if not clean:
                break
            k += 1
        return None if not k or self._newest_frame is None else self._newest_frame - (k - 1) * HOP_S

    def _held_audio(self, start: float, end: float) -> tuple[float, np.ndarray]:
        start, samples = self.history.clip(start, end)
        return start, samples.astype(np.float32) / 32768.0

    def _song_utc(self, song_start: float) -> str:
        """A song's start in UTC, as every record naming its play has it: from the start rounded to
        the millisecond, as records carry it (the unrounded time can round to the next millisecond
        in UTC, and the engine's checks would then not find the play's answer)."""
        return self.clock.iso(round(song_start, 3))

    def _play_id(self, song_start: float) -> str:
        return play_id(self.channel, self._song_utc(song_start))

    def _recent_audio(self, start: float, end: float) -> np.ndarray:
        return self._held_audio(start, end)[1]

    def request_record(self, intent) -> dict:
        start, samples = self.history.clip(intent.clip_start, intent.clip_end)
        end = start + len(samples) / SAMPLE_RATE
        u = self.clock.utc
        song_utc = self._song_utc(intent.song_start)
        return {"request_id": request_id(intent.channel, song_utc, intent.seq), "channel": intent.channel,
                "clip_start": round(start, 3), "clip_end": round(end, 3), "emitted_at": intent.emitted_at,
                "song_start": intent.song_start, "reason": intent.reason, "song_start_utc": song_utc,
                "clip_start_utc": iso(u(start)), "clip_end_utc": iso(u(end)),
                "emitted_at_utc": iso(u(intent.emitted_at)), "clock": self.clock.kind,
                **self.segments.usage,
                "audio": audio_field(samples, self.audio_codec)}

    def _genres(self, recs: list[dict]) -> Records:
        for r in recs:
            end = r["song_end"]
            start_utc = self._song_utc(r["song_start"])
            r["play_id"] = play_id(self.channel, start_utc)
            r["song_start_utc"] = r["segment_start_utc"] = start_utc
            r["song_end_utc"] = r["segment_end_utc"] = None if end is None else self.clock.iso(end)
            r["clock"] = self.clock.kind
        return [("genres", r) for r in recs]

    def _segments(self, segs: list[dict]) -> Records:
        for seg in segs:
            seg["start_utc"], seg["end_utc"] = self.clock.iso(seg["start"]), self.clock.iso(seg["end"])
            seg["clock"] = self.clock.kind
            seg["id"] = segment_id(seg)
            self.metrics.segments.labels(self.channel, seg["label"]).inc()
        return [("segments", s) for s in segs]
