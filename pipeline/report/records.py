"""Reading the dated day folders `onair run --out DIR` writes (`DIR/YYYY-MM-DD/<kind>.jsonl`).

A record is filed under the UTC day of its first UTC field, so what happens on day D can stand in
D-1's file (a segment that started before midnight) or need D+1's (the play after D's last one):
`read_window` reads D-1, D and D+1, and the caller clips by time. Damaged lines (bad JSON, a missing
or ill-typed field) are skipped with one warning naming file and line; repeated records (Kafka
replays) are deduplicated by their id, the last one kept. Request audio is dropped as each line is
parsed: a day of requests is mostly base64 audio the report never needs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from operators.tagging.provider_genres import shown_genre
from pipeline.clock import parse_iso
from pipeline.outputs import day_dirs, read_jsonl
from pipeline.report.times import is_day, next_day

log = logging.getLogger("onair.report")

KINDS = ("segments", "requests", "genres", "nowplaying", "ledger")
LABELS = ("music", "non_music", "no_signal")


@dataclass(frozen=True)
class Segment:
    id: str
    channel: str
    label: str          # music | non_music | no_signal
    start: float        # Unix seconds
    end: float
    usage: str | None = None    # music: foreground | background (records before usage: None)


@dataclass(frozen=True)
class Request:
    request_id: str
    channel: str
    song_start: float   # Unix seconds: the play this request belongs to
    emitted: float      # when it was decided (its clip's end where the record has no emitted_at_utc)
    clip_end: float | None


@dataclass(frozen=True)
class NowPlaying:
    request_id: str
    channel: str
    title: str | None
    artist: str | None
    album: str | None
    isrc: str | None
    provider: str | None
    score: float | None
    started_at: float | None    # Unix seconds of the song start, where the record has it


@dataclass(frozen=True)
class Charge:
    """One ledger line: one call to the provider, or one not made (budget_skipped, error)."""
    ts: float
    request_id: str
    channel: str
    outcome: str
    paid: bool
    cost: float
    currency: str | None


@dataclass(frozen=True)
class Genre:
    channel: str
    start: float
    end: float
    genre: str | None   # the closed record's top tag (the provider's, mapped, first)
    usage: str | None = None   # foreground | background (older records: None)


@dataclass
class Records:
    segments: list[Segment] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    nowplaying: dict[str, NowPlaying] = field(default_factory=dict)   # by request_id
    ledger: list[Charge] = field(default_factory=list)
    genres: list[Genre] = field(default_factory=list)

    def channels(self) -> set[str]:
        return {r.channel for rows in (self.segments, self.requests, self.nowplaying.values(), self.ledger,
                                       self.genres) for r in rows}


def _text(d: dict, key: str) -> str:
    v = d[key]
    if not isinstance(v, str) or not v:
        raise ValueError(f"{key} is not a string")
    return v


def _opt_text(d: dict, key: str) -> str | None:
    v = d.get(key)
    return None if v is None or v == "" else str(v)


def _utc(d: dict, key: str) -> float:
    return parse_iso(d[key])


def _opt_utc(d: dict, key: str) -> float | None:
    return None if d.get(key) is None else parse_iso(d[key])


def _usage(d: dict) -> str | None:
    """A record's `usage` where it is one onair writes (records before usage have none)."""
    return d["usage"] if d.get("usage") in ("foreground", "background") else None


def _segment(d: dict) -> Segment:
    label = d["label"]
    if label not in LABELS:
        raise ValueError(f"label {label!r}")
    start, end = _utc(d, "start_utc"), _utc(d, "end_utc")
    if end < start:
        raise ValueError("end_utc before start_utc")
    channel = _text(d, "channel")
    # an id is what drops Kafka copies; a segment written without one is keyed as onair keys it
    sid = _text(d, "id") if d.get("id") is not None else f"{channel}/{d['start_utc']}"
    return Segment(sid, channel, label, start, end, _usage(d))


def _request(d: dict) -> Request:
    clip_end = _opt_utc(d, "clip_end_utc")
    emitted = _opt_utc(d, "emitted_at_utc")
    song_start = _utc(d, "song_start_utc")
    return Request(_text(d, "request_id"), _text(d, "channel"), song_start,
                   emitted if emitted is not None else clip_end if clip_end is not None else song_start, clip_end)


def _nowplaying(d: dict) -> NowPlaying:
    score = d.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        raise ValueError("score is not a number")
    return NowPlaying(_text(d, "request_id"), _text(d, "channel"), _opt_text(d, "title"), _opt_text(d, "artist"),
                      _opt_text(d, "album"), _opt_text(d, "isrc"), _opt_text(d, "provider"), score,
                      _opt_utc(d, "started_at_utc"))


def _charge(d: dict) -> Charge:
    paid = d["paid"]
    if not isinstance(paid, bool):
        raise ValueError("paid is not true or false")
    return Charge(float(d["ts"]), _text(d, "request_id"), _text(d, "channel"), _text(d, "outcome"), paid,
                  float(d.get("cost") or 0.0), _opt_text(d, "currency"))


def _genre(d: dict) -> Genre | None:
    if d.get("segment_end_utc") is None:
        return None                     # still open: its closed record comes later
    top, usage = shown_genre(d), _usage(d)
    if top is None and usage is None:
        return None
    return Genre(_text(d, "channel"), _utc(d, "segment_start_utc"), _utc(d, "segment_end_utc"),
                 None if top is None else str(top), usage)


def read_kind(path: Path, parse):
    """The records of one file, each through `parse` (None = a record to leave out)."""
    if not path.is_file():
        return
    for n, d in read_jsonl(path):
        d.pop("audio", None)
        try:
            rec = parse(d)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
            log.warning("%s:%d: damaged line skipped: %s", path, n, what)
            continue
        if rec is not None:
            yield rec


def has_data(folder: Path) -> bool:
    return any((folder / f"{kind}.jsonl").is_file() and (folder / f"{kind}.jsonl").stat().st_size
               for kind in KINDS)


def latest_day(root: Path) -> str | None:
    """The newest day folder with at least one non-empty record file."""
    return next((d for d in reversed(day_dirs(root)) if is_day(d) and has_data(root / d)), None)


def read_window(root: Path, day: str) -> Records:
    """The records of days D-1, D and D+1, deduplicated, in file order."""
    segments: dict[str, Segment] = {}
    requests: dict[str, Request] = {}
    nowplaying: dict[str, NowPlaying] = {}
    from_ledger: dict[str, NowPlaying] = {}
    ledger: list[Charge] = []
    genres: dict[tuple[str, float], Genre] = {}
    for name in (next_day(day, -1), day, next_day(day, 1)):
        folder = root / name
        for s in read_kind(folder / "segments.jsonl", _segment):
            segments[s.id] = s              # the last copy wins
        for r in read_kind(folder / "requests.jsonl", _request):
            requests[r.request_id] = r
        for p in read_kind(folder / "nowplaying.jsonl", _nowplaying):
            nowplaying[p.request_id] = p
        for c, np in read_kind(folder / "ledger.jsonl", lambda d: (_charge(d), d.get("nowplaying"))):
            ledger.append(c)
            if isinstance(np, dict):
                # a matched ledger line carries the now-playing record: the same title, when
                # nowplaying.jsonl is missing or was cut short
                try:
                    from_ledger[c.request_id] = _nowplaying({"request_id": c.request_id, "channel": c.channel, **np})
                except (KeyError, TypeError, ValueError):
                    pass
        for g in read_kind(folder / "genres.jsonl", _genre):
            genres[(g.channel, g.start)] = g
    return Records(list(segments.values()), list(requests.values()), {**from_ledger, **nowplaying}, ledger,
                   list(genres.values()))
