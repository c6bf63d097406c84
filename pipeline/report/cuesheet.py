"""The report's files per channel: the cue sheet (CSV, one row per play) and the day's figures
(JSON), and the file names channels get."""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

from pipeline.clock import iso
from pipeline.report.plays import ChannelDay
from pipeline.report.times import shown, zone_name

COLUMNS = ("channel", "start_utc", "end_utc", "duration_s", "title", "artist", "album", "isrc", "provider", "score",
           "request_id", "status", "genre", "usage")
LOCAL_COLUMNS = ("start_local", "end_local", "tz")

_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,79}")      # kept as it is: not hidden, no option, short
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_stems(channels: list[str]) -> dict[str, str]:
    """A file name stem per channel that is safe in any folder and unique among them, also on a
    case-insensitive file system. A name that had to change gets a hash of the real one, so
    'a/b' and 'a:b' (both 'a_b') stay apart."""
    def tagged(name: str) -> str:
        safe = re.sub(r"^[.-]", "_", _UNSAFE.sub("_", name)[:80]) or "_"
        return f"{safe}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"

    stems = {c: c if _BARE.fullmatch(c) else tagged(c) for c in channels}
    seen: dict[str, list[str]] = {}
    for c, stem in stems.items():
        seen.setdefault(stem.casefold(), []).append(c)
    for same in seen.values():
        if len(same) > 1:
            stems.update({c: tagged(c) for c in same})
    return stems


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def write_csv(path: Path, cd: ChannelDay, tz: dt.tzinfo | None) -> None:
    """One row per play starting in the day, titled or not. Times are UTC; with a zone, the same
    start and end written in it follow in three more columns."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + (LOCAL_COLUMNS if tz else ()))
        for p in cd.plays:
            row = [p.channel, iso(p.start), "" if p.end is None else iso(p.end), _num(p.duration), p.title or "",
                   p.artist or "", p.album or "", p.isrc or "", p.provider or "",
                   "" if p.score is None else str(p.score), p.request_id, p.status, p.genre or "", p.usage or ""]
            if tz:
                row += [shown(p.start, tz), "" if p.end is None else shown(p.end, tz), zone_name(tz)]
            w.writerow(row)


def write_summary(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
