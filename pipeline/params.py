"""Parameter objects of the runtime, built once from the validated config.

Below this module nothing reads the config dict: each operator gets its frozen
dataclass (operators own theirs: DebounceParams, HmmParams, GenreParams) and the
engine gets these.
"""
from __future__ import annotations

from dataclasses import dataclass

from operators.decisions.debounce import DebounceParams
from operators.decisions.hmm import HmmParams
from operators.tagging.genre import GenreParams


@dataclass(frozen=True)
class ChannelParams:
    """What one channel's chain of decisions needs besides the heads."""
    hmm: HmmParams
    debounce: DebounceParams
    genre: GenreParams
    talkover_threshold: float = 0.5   # talk-over probability above which a frame is speech over a bed
    audio_codec: str = "flac"         # how request clips are encoded
    history_s: float = 45.0           # audio kept per channel for clips and the identity test
    min_no_signal_s: float = 1.0      # a gap in the source this long is a no_signal segment

    @classmethod
    def from_config(cls, cfg: dict, hmm: HmmParams) -> "ChannelParams":
        d = cfg["debounce"]
        return cls(hmm, DebounceParams.from_config(d), GenreParams.from_config(cfg["genre"]),
                   d["talkover_threshold"], d["audio_codec"], d["history_s"], cfg["source"]["min_no_signal_s"])


@dataclass(frozen=True)
class EngineParams:
    channel: ChannelParams
    batch_size: int = 64          # frames of all channels per model call
    max_wait_s: float = 0.02      # longest wait for a batch to fill
    queue_frames: int = 512       # frames cut but not yet embedded; feeding blocks beyond this

    @classmethod
    def from_config(cls, cfg: dict, hmm: HmmParams) -> "EngineParams":
        e = cfg["embedding"]
        return cls(ChannelParams.from_config(cfg, hmm), e["batch_size"], e["max_wait_ms"] / 1000.0,
                   cfg["runtime"]["queue_frames"])


@dataclass(frozen=True)
class DecodeParams:
    """How a channel's media becomes audio: which track, the longest PTS jump kept as a gap, and
    how its clock follows the ingest envelopes' wall clock (pipeline.clock)."""
    audio_track: str = "first"
    max_gap_s: float = 5.0
    clock_resync_s: float = 5.0
    clock_resync_hold_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: dict) -> "DecodeParams":
        s = cfg["source"]
        return cls(s["audio_track"], s["max_gap_s"], s["clock_resync_s"], s["clock_resync_hold_s"])

    def clock(self, kind: str = "ingest"):
        from pipeline.clock import StreamClock
        return StreamClock(kind, resync_s=self.clock_resync_s, resync_hold_s=self.clock_resync_hold_s)
