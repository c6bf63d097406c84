"""Plays and the day's figures of one channel, from the records of `records.read_window`.

A play is one song as the pipeline saw it: the requests of a channel that share a song start
(`:0`, `:1`, ... of one `song_start_utc`). It starts at the song start and ends at the earlier of
the channel's next play and the end of the music segment it starts in (the last request's clip end
where no segment covers it yet). Its title is the first of its requests the provider matched.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field

from pipeline.report.records import LABELS, Charge, Records, Segment
from pipeline.report.times import DAY_S

log = logging.getLogger("onair.report")

# song and segment starts come from one clock through `clock.iso`, so they agree to the millisecond;
# the tolerance keeps a song start written a rounding step before its segment inside it
EPS = 0.0015


@dataclass(frozen=True)
class Play:
    channel: str
    start: float                 # Unix seconds
    end: float | None            # None: no segment and no clip says where it ends
    request_id: str              # the request that got the title, else the play's first request
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    isrc: str | None = None
    provider: str | None = None
    score: float | None = None
    genre: str | None = None
    usage: str | None = None     # foreground | background: how the song was used on air
    bed: bool = False            # background music that was never a song (no request): a bed

    @property
    def status(self) -> str:
        if self.bed:
            return "background"
        return "recognised" if self.title else "unidentified"

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


class _Containing:
    """Which of some time intervals (sorted by start) contains a time."""

    def __init__(self, intervals):
        self.items = sorted(intervals, key=lambda x: x.start)
        self.starts = [x.start for x in self.items]

    def at(self, t: float):
        i = bisect.bisect_right(self.starts, t + EPS) - 1
        return self.items[i] if i >= 0 and t < self.items[i].end else None


def build_plays(records: Records, channel: str) -> list[Play]:
    """Every play of `channel` the records know, in start order."""
    members: dict[float, list[tuple[float, str, float | None]]] = {}    # start -> (emitted, request_id, clip end)
    for r in records.requests:
        if r.channel == channel:
            members.setdefault(r.song_start, []).append((r.emitted, r.request_id, r.clip_end))
    known = {r.request_id for r in records.requests}
    for np in records.nowplaying.values():
        # a title whose request line is lost (requests.jsonl missing or damaged) still is a play
        if np.channel == channel and np.request_id not in known and np.started_at is not None:
            members.setdefault(np.started_at, []).append((math.inf, np.request_id, None))
    music = _Containing(s for s in records.segments if s.channel == channel and s.label == "music")
    genres = _Containing(g for g in records.genres if g.channel == channel)
    starts = sorted(members)
    plays = []
    for i, start in enumerate(starts):
        group = sorted(members[start])
        seg = music.at(start)
        ends = [c for _, _, c in group if c is not None]
        end = seg.end if seg else max(ends) if ends else None
        if i + 1 < len(starts):
            end = starts[i + 1] if end is None else min(end, starts[i + 1])
        hit = next((np for np in (records.nowplaying.get(rid) for _, rid, _ in group) if np and np.title), None)
        g = genres.at(start)
        plays.append(Play(channel, start, None if end is None else max(end, start),
                          hit.request_id if hit else group[0][1],
                          *((hit.title, hit.artist, hit.album, hit.isrc, hit.provider, hit.score) if hit else ()),
                          genre=g.genre if g else None, usage=g.usage if g else None))
    # music used as a bed under speech is music a collecting society counts, though it was never a
    # song to ask about: a background music segment no play starts in is a row of its own
    starts_at = sorted(p.start for p in plays)
    for s in records.segments:
        if s.channel == channel and s.label == "music" and s.usage == "background":
            i = bisect.bisect_left(starts_at, s.start - EPS)
            if i == len(starts_at) or starts_at[i] >= s.end:
                plays.append(Play(channel, s.start, s.end, "", usage="background", bed=True))
    return sorted(plays, key=lambda p: p.start)


def partition(segments: list[Segment], start: float, end: float) -> list[tuple[float, float, str]]:
    """The segments clipped to [start, end) as non-overlapping (start, end, label) pieces in time
    order. Where two overlap (two runs into one folder), the earlier keeps the overlap, so the
    labels' seconds and the uncovered ones add up to the span exactly."""
    pieces, cursor = [], start
    for s in sorted(segments, key=lambda s: (s.start, s.end)):
        a, b = max(s.start, cursor), min(s.end, end)
        if b > a:
            pieces.append((a, b, s.label))
            cursor = b
    return pieces


@dataclass
class ChannelDay:
    """One channel on one UTC day: what the cue sheet, the summary and the page show."""
    channel: str
    day: str
    start: float
    end: float
    pieces: list[tuple[float, float, str]]       # segments, clipped to the day
    plays: list[Play]                             # starting in the day: the cue sheet
    drawn: list[Play]                             # on air at some time of the day: the timeline
    charges: list[Charge]                         # ledger lines with ts in the day
    seconds: dict[str, float] = field(init=False)

    def __post_init__(self):
        self.seconds = {label: 0.0 for label in LABELS}
        for a, b, label in self.pieces:
            self.seconds[label] += b - a

    @property
    def empty(self) -> bool:
        return not (self.pieces or self.drawn or self.charges)

    def spend(self) -> tuple[float, str | None]:
        """The day's spend and its currency. Summing two currencies would be wrong: if the ledger
        has more than one (a config change), only the most used one is summed, and a warning says so."""
        paid = [c for c in self.charges if c.paid]
        by: dict[str | None, list[float]] = {}
        for c in paid:
            by.setdefault(c.currency, []).append(c.cost)
        if not by:
            return 0.0, None
        currency = max(by, key=lambda k: len(by[k]))
        if len(by) > 1:
            left = {k: len(v) for k, v in by.items() if k != currency}
            log.warning("channel %s on %s: the ledger has calls in %s; spend sums only the %d in %s (left out: %s)",
                        self.channel, self.day, ", ".join(map(str, by)), len(by[currency]), currency, left)
        return round(math.fsum(by[currency]), 6), currency

    def spend_per(self, edges: list[float], currency: str | None) -> list[float]:
        """Spend of paid calls in `currency` in each [edges[i], edges[i+1])."""
        bins = [0.0] * (len(edges) - 1)
        for c in self.charges:
            if c.paid and c.currency == currency:
                i = bisect.bisect_right(edges, c.ts) - 1
                if 0 <= i < len(bins):
                    bins[i] += c.cost
        return bins

    def summary(self, tz_name: str) -> dict:
        """The figures of `<channel>.json` (docs/report.md says how each is computed)."""
        s = self.seconds
        signal = s["music"] + s["non_music"]
        songs = [p for p in self.plays if not p.bed]
        beds = [p for p in self.plays if p.bed]
        recognised = sum(1 for p in songs if p.status == "recognised")
        spend, currency = self.spend()
        return {
            "channel": self.channel,
            "day": self.day,
            "music_minutes": round(s["music"] / 60, 3),
            # of the seconds on air with a signal: an outage is not "less music", it is its own figure
            "music_share": round(s["music"] / signal, 4) if signal else None,
            "plays": len(songs),
            "recognised": recognised,
            "recognised_share": round(recognised / len(songs), 4) if songs else None,
            "background_music": len(beds),
            "background_music_minutes": round(sum(p.duration or 0.0 for p in beds) / 60, 3),
            "paid_calls": sum(1 for c in self.charges if c.paid),
            "spend": spend,
            "currency": currency,
            "budget_skipped": sum(1 for c in self.charges if c.outcome == "budget_skipped"),
            # requests the fingerprint index answered instead of the provider (docs/identity.md)
            "answered_locally": sum(1 for c in self.charges if c.outcome in ("local_match", "known_unidentified")),
            "outage_minutes": round(s["no_signal"] / 60, 3),
            "unaccounted_minutes": round((self.end - self.start - sum(s.values())) / 60, 3),
            "tz": tz_name,
        }


def channel_day(records: Records, channel: str, day: str, start: float) -> ChannelDay:
    end = start + DAY_S
    plays = build_plays(records, channel)
    return ChannelDay(
        channel, day, start, end,
        partition([s for s in records.segments if s.channel == channel], start, end),
        [p for p in plays if start <= p.start < end],
        [p for p in plays if p.start < end and (p.start >= start or (p.end or 0.0) > start)],
        [c for c in records.ledger if c.channel == channel and start <= c.ts < end])
