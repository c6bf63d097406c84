"""UTC as records write it: ISO 8601 with milliseconds and `Z` (DESIGN.md §4)."""
from __future__ import annotations

import datetime as dt

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso(t: float) -> str:
    """Unix seconds -> '2026-12-06T08:00:00.000Z' (rounded to the millisecond)."""
    ms = int(round(t * 1000))
    d = _EPOCH + dt.timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_iso(s: str) -> float:
    """ISO 8601 -> Unix seconds. A time without an offset is UTC; raises ValueError."""
    if not isinstance(s, str) or not s.strip():
        raise ValueError(f"not an ISO 8601 time: {s!r}")
    text = s.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        d = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {s!r} (e.g. 2026-12-06T14:05:00Z)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.timestamp()


def day_of(t: float) -> str:
    """The UTC day 'YYYY-MM-DD' of Unix seconds."""
    return iso(t)[:10]
