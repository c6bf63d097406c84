"""The report's day and the zone it is shown in. The data is UTC and the report's day is a
UTC day; a zone (`--tz`) changes only how times are written and where hour ticks fall."""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo

DAY_S = 86400.0
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def day_span(day: str) -> tuple[float, float]:
    """'YYYY-MM-DD' -> Unix seconds of its UTC start and of the next day's start; ValueError if not a day."""
    if not isinstance(day, str) or not _DAY.fullmatch(day):
        raise ValueError(f"not a day: {day!r} (expected YYYY-MM-DD, e.g. 2026-12-06)")
    try:
        d = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ValueError(f"not a day: {day!r} (expected YYYY-MM-DD, e.g. 2026-12-06)") from None
    return d.timestamp(), d.timestamp() + DAY_S


def is_day(name: str) -> bool:
    try:
        day_span(name)
    except ValueError:
        return False
    return True


def next_day(day: str, days: int = 1) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def zone(name: str | None) -> dt.tzinfo:
    """The zone a report is shown in: a zoneinfo name, UTC when none is given."""
    if name is None:
        return dt.timezone.utc
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a key that is not a relative path ('/etc/passwd', '../x')
        raise ValueError(f"unknown time zone: {name}") from None


def zone_name(tz: dt.tzinfo) -> str:
    return "UTC" if tz is dt.timezone.utc else str(tz)


def shown(t: float, tz: dt.tzinfo, fmt: str | None = None) -> str:
    """Unix seconds written in `tz`: ISO 8601 with milliseconds and the offset by default."""
    d = dt.datetime.fromtimestamp(t, tz)
    if fmt:
        return d.strftime(fmt)
    return d.isoformat(timespec="milliseconds")


def offset_label(t: float, tz: dt.tzinfo) -> str:
    """'UTC+01:00' at `t` in `tz`."""
    off = dt.datetime.fromtimestamp(t, tz).utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def hour_edges(start: float, end: float, tz: dt.tzinfo) -> list[float]:
    """`start`, every full hour of `tz` strictly inside (start, end), and `end`: where the hour ticks
    and the spend-per-hour bars of a UTC day fall. Zone offsets are whole quarter hours (since the
    1970s), so stepping a quarter hour finds every local hour, also on a day a clock changes."""
    edges = [start]
    t = start + 900.0
    while t < end:
        if dt.datetime.fromtimestamp(t, tz).minute == 0:
            edges.append(t)
        t += 900.0
    return edges + [end]
