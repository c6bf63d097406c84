"""What a channel's "now playing" card shows: segment, genre and now-playing
records folded into one display state per channel, with wall-clock timers.

Is music on now? Segments arrive only when they close, so it is inferred from
stream-time evidence, whatever order the records arrive in (the three Kafka
topics are not ordered with each other):

- *on at t*: an open or closed genre record starts at `segment_start`; a music
  segment starts at `start`; a now-playing record says music at `started_at`.
- *off at t*: a closed music segment or closed genre record ends at its end; a
  closed non-music segment says nothing was music up to its `end`.
- music is on when the newest "on" is at or after the newest "off" (within
  `EPS_S`, for rounding between stages). A non-music segment's end is *not*
  taken as "music starts here": it is also where a stream ends, and a
  3-8 s jingle would flash the card. The card appears with the first genre
  record (after `genre.min_music_s`) or recognition of the music.

Times are compared in UTC where records carry it (`start_utc`, `segment_start_utc`,
`started_at_utc`, ...), so a restarted run, whose stream time starts again at 0, is
still later than the run before it; records without UTC (older onair) use stream time.

What the card shows belongs to the music that is on: a now-playing or genre
record is current when it starts at or after the newest "off". The newest
current now-playing record (by `started_at`) gives title and artist; its title
null means the provider found no match, and the card says "Music" with the
genre.

Timers are wall-clock and kept here, on the server, so every page, CasparCG
and API client shows the same thing (stream time says nothing about how long
a card has been on screen): a card stays up at least `hold_s`; it goes
`clear_s` after the music ends; and while music is on, it goes after `stale_s`
with no record at all for the channel (a stopped pipeline must not leave a
title on air).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from operators.tagging.provider_genres import shown_genre
from operators.utc import parse_iso

EPS_S = 0.5          # below one 0.96 s frame: rounding between stages, never a real gap
KINDS = ("segment", "genre", "nowplaying")


class BadRecord(ValueError):
    """A record that does not follow DESIGN.md §4; `reason` is a short metric label."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _num(r: dict, key: str, optional: bool = False) -> float | None:
    v = r.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadRecord("invalid", f"'{key}' must be a number, got {v!r}")
    return float(v)


def _time(r: dict, key: str, optional: bool = False) -> float | None:
    """The record's time `key`: its UTC twin `key_utc` as Unix seconds when present, else the stream
    time. A channel's records are either all UTC or all stream time (one onair version)."""
    u = r.get(f"{key}_utc")
    if isinstance(u, str):
        try:
            return parse_iso(u)
        except ValueError:
            raise BadRecord("invalid", f"'{key}_utc' must be an ISO 8601 time, got {u!r}") from None
    return _num(r, key, optional)


def _channel(r) -> str:
    if not isinstance(r, dict):
        raise BadRecord("invalid", f"expected a JSON object, got {type(r).__name__}")
    ch = r.get("channel")
    if not isinstance(ch, str) or not ch:
        raise BadRecord("invalid", f"'channel' must be a non-empty string, got {ch!r}")
    return ch


@dataclass
class _Channel:
    on_at: float | None = None        # newest stream time known to be music
    off_at: float = -math.inf         # newest stream time known not to be (or no longer be) music
    stream_t: float = 0.0             # newest stream time any record mentions
    track: dict | None = None         # newest now-playing record
    track_t: float = -math.inf
    genre: dict | None = None         # newest genre record
    genre_t: float = -math.inf
    visible: bool = False
    shown_at: float = 0.0
    hide_at: float | None = None      # pending hide (music ended), wall clock
    last_record: float = 0.0          # wall clock of the last record of this channel
    stale: bool = False
    seq: int = 0

    @property
    def music(self) -> bool:
        return self.on_at is not None and self.on_at >= self.off_at - EPS_S


class NowPlayingBoard:
    """Per-channel display state. Not thread-safe: the caller serialises `apply`/`tick`."""

    def __init__(self, hold_s: float = 10.0, clear_s: float = 3.0, stale_s: float | None = 300.0,
                 clock=time.monotonic):
        self.hold_s, self.clear_s, self.stale_s = hold_s, clear_s, stale_s
        self.clock = clock
        self._ch: dict[str, _Channel] = {}

    def channels(self) -> list[str]:
        return sorted(self._ch)

    def apply(self, kind: str, record) -> str:
        """Fold one record in; returns its channel. Raises BadRecord for a malformed one."""
        ch = _channel(record)
        c = self._ch.get(ch) or _Channel()
        if kind == "segment":
            label = record.get("label")
            if label not in ("music", "non_music", "no_signal"):
                raise BadRecord("invalid", f"'label' must be music, non_music or no_signal, got {label!r}")
            start, end = _time(record, "start"), _time(record, "end")
            if label == "music":
                self._on(c, start)
            self._off(c, end)
        elif kind == "genre":
            start, end = _time(record, "segment_start"), _time(record, "segment_end", optional=True)
            tags = record.get("tags")
            if not isinstance(tags, list) or not all(isinstance(t, dict) and isinstance(t.get("genre"), str)
                                                     for t in tags):
                raise BadRecord("invalid", f"'tags' must be a list of {{genre, score}}, got {tags!r}")
            self._on(c, start)
            if end is not None:
                self._off(c, end)
            if start >= c.genre_t:        # the same segment's later record (an update, the final one) wins
                c.genre, c.genre_t = record, start
        elif kind == "nowplaying":
            t = _time(record, "started_at", optional=True)
            if t is None:                 # unknown start: take it as news about the present
                t = max(c.stream_t, c.off_at)
            self._on(c, t)
            if t >= c.track_t:
                c.track, c.track_t = record, t
        else:
            raise ValueError(f"unknown record kind {kind!r}")
        self._ch[ch] = c
        c.last_record = self.clock()
        c.stale = False
        self._update(c)
        c.seq += 1
        return ch

    @staticmethod
    def _on(c: _Channel, t: float) -> None:
        c.on_at = t if c.on_at is None else max(c.on_at, t)
        c.stream_t = max(c.stream_t, t)

    @staticmethod
    def _off(c: _Channel, t: float) -> None:
        c.off_at = max(c.off_at, t)
        c.stream_t = max(c.stream_t, t)

    def _update(self, c: _Channel) -> bool:
        """Apply the timers to `visible`; True when it changed."""
        now = self.clock()
        if self.stale_s is not None and c.music and now - c.last_record >= self.stale_s:
            c.stale = True
        want = c.music and not c.stale
        before = c.visible
        if want:
            c.hide_at = None
            if not c.visible:
                c.visible, c.shown_at = True, now
        elif c.visible:
            if c.stale:                   # nothing is coming: no grace period
                c.hide_at = now
            elif c.hide_at is None:
                c.hide_at = max(now + self.clear_s, c.shown_at + self.hold_s)
            if now >= c.hide_at:
                c.visible, c.hide_at = False, None
        return c.visible != before

    def tick(self) -> list[str]:
        """Advance the wall-clock timers; returns the channels whose visibility changed."""
        changed = []
        for ch, c in self._ch.items():
            if self._update(c):
                c.seq += 1
                changed.append(ch)
        return changed

    def settle(self) -> None:
        """After replaying history at start: show what is on now, without the timers' delays."""
        for c in self._ch.values():
            c.visible = c.music and not c.stale
            c.hide_at = None
            c.shown_at = self.clock()
            c.seq += 1                    # a page that connected during the replay hears the outcome

    def state(self, channel: str) -> dict | None:
        """The display state (JSON-able), or None for a channel never seen."""
        c = self._ch.get(channel)
        if c is None:
            return None
        current = c.off_at - EPS_S
        track = c.track if c.track is not None and c.track_t >= current else None
        genre = c.genre if c.genre is not None and c.genre_t >= current else None
        tags = list(genre["tags"]) if genre else []
        title = track.get("title") if track else None
        return {
            "channel": channel, "visible": c.visible, "music": c.music, "stale": c.stale,
            "recognised": bool(title),
            "title": title or None,
            "artist": track.get("artist") if title else None,
            "album": track.get("album") if title else None,
            "isrc": track.get("isrc") if title else None,
            "provider": track.get("provider") if track else None,
            "score": track.get("score") if title else None,
            "request_id": track.get("request_id") if track else None,
            "started_at": track.get("started_at") if track else None,
            "started_at_utc": track.get("started_at_utc") if track else None,
            "genre": shown_genre(genre),
            "genres": tags,
            "segment_start": genre["segment_start"] if genre else None,
            "stream_time": c.stream_t,
            "seq": c.seq,
        }

    @staticmethod
    def empty_state(channel: str) -> dict:
        """What a page for a channel that has sent nothing yet shows: nothing."""
        return {"channel": channel, "visible": False, "music": False, "stale": False, "recognised": False,
                "title": None, "artist": None, "album": None, "isrc": None, "provider": None, "score": None,
                "request_id": None, "started_at": None, "started_at_utc": None, "genre": None, "genres": [], "segment_start": None,
                "stream_time": None, "seq": 0}
