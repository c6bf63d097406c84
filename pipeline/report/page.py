"""`report.html`: one self-contained page for a day, every channel on it. Drawn here as inline
SVG and HTML, with no script and nothing fetched, so the file reads the same mailed, archived or
opened offline, and its text (titles included) is in the page without running anything.
Everything that comes from the data (channel names, titles) is escaped."""
from __future__ import annotations

import datetime as dt
from html import escape

from pipeline.report.plays import ChannelDay, Play
from pipeline.report.times import DAY_S, offset_label, shown, zone_name

COLOURS = {"music": "#2e9e5b", "non_music": "#b8c1cc", "no_signal": "#d64541", "recognised": "#2f6fd6",
           "unidentified": "#f0a030", "background": "#9ad0b0", "spend": "#6b4fbb"}
LEGEND = (("music", "Music"), ("non_music", "Speech, adverts, other non-music"), ("no_signal", "No signal (outage)"),
          (None, "No records"), ("recognised", "Play, title recognised"), ("unidentified", "Play, not identified"),
          ("background", "Background music (a bed under speech)"))
NAMES = dict(LEGEND)

WIDTH, LEFT, RIGHT = 1200, 110, 20           # SVG user units; LEFT holds the lane names
PLOT = WIDTH - LEFT - RIGHT

CSS = """
body { font: 14px/1.4 system-ui, 'DejaVu Sans', sans-serif; margin: 16px 24px; color: #1d2329; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 6px; }
.tz { color: #4a5560; margin: 0 0 8px; }
nav a { margin-right: 12px; }
svg { display: block; width: 100%; max-width: 1200px; height: auto; }
svg text { font: 12px system-ui, 'DejaVu Sans', sans-serif; fill: #33404c; }
.legend { margin: 2px 0 10px; color: #33404c; }
.legend span { display: inline-block; margin-right: 16px; white-space: nowrap; }
.legend i { display: inline-block; width: 14px; height: 14px; vertical-align: -2px; margin-right: 5px;
            border: 1px solid #8a949e; }
.legend i.none { background: repeating-linear-gradient(45deg, #fff 0 3px, #dde1e5 3px 5px); }
.numbers { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 12px; padding: 0; }
.numbers div { border: 1px solid #d5dbe1; border-radius: 6px; padding: 6px 12px; min-width: 96px; }
.numbers dt { color: #5a6570; font-size: 12px; } .numbers dd { margin: 0; font-size: 18px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; max-width: 1200px; margin-top: 8px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e3e7eb; vertical-align: top; }
th { background: #f3f5f7; position: sticky; top: 0; }
td.t { white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.unidentified td.title { color: #8a5a00; font-style: italic; }
.note { color: #5a6570; font-size: 12px; }
"""


def _x(t: float, cd: ChannelDay) -> float:
    return LEFT + (min(max(t, cd.start), cd.end) - cd.start) / DAY_S * PLOT


def _hm(t: float, tz: dt.tzinfo) -> str:
    return shown(t, tz, "%H:%M")


def _hms(t: float, tz: dt.tzinfo) -> str:
    return shown(t, tz, "%H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _when(t: float | None, tz: dt.tzinfo, day_start: float) -> str:
    """A time of day in `tz`, with its date where that is not the date the day starts on: a play
    past midnight, or any time on the second local date a UTC day spans in another zone."""
    if t is None:
        return ""
    other = shown(t, tz, "%Y-%m-%d") != shown(day_start, tz, "%Y-%m-%d")
    return _hms(t, tz) + (f" ({shown(t, tz, '%d %b').lstrip('0')})" if other else "")


def _play_label(p: Play, tz: dt.tzinfo, day_start: float) -> str:
    what = " — ".join(x for x in (p.title, p.artist) if x) if p.title else "not identified"
    end = _when(p.end, tz, day_start) or "?"
    before = " (started the day before)" if p.start < day_start else ""
    return f"{_when(p.start, tz, day_start)}–{end} {what}{before}"


def _ticks(edges: list[float], cd: ChannelDay, tz: dt.tzinfo, top: float, bottom: float) -> list[str]:
    """A line at every full hour of the shown zone (drawn first, so the data covers it and a tick
    shows below), and its local time under it; the day's first and
    last instants are labelled too, unless they are too near an hour's label (a zone with a half-hour
    offset) to be read."""
    out = []
    for i, t in enumerate(edges):
        x = _x(t, cd)
        inner = 0 < i < len(edges) - 1
        if inner:
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#7d8791" '
                       f'stroke-opacity="0.55"/>')
        elif len(edges) > 2 and abs(x - _x(edges[1 if i == 0 else -2], cd)) < 36:
            continue
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{_hm(t, tz)}</text>')
    return out


def _timeline(cd: ChannelDay, edges: list[float], tz: dt.tzinfo, n: int) -> str:
    lane1, lane2, h = 8, 46, 30
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} 100" role="img" '
           f'aria-label="Timeline of the day for {escape(cd.channel)}">',
           f'<defs><pattern id="none{n}" width="6" height="6" patternUnits="userSpaceOnUse" '
           f'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
           f'<rect width="2" height="6" fill="#dde1e5"/></pattern></defs>',
           f'<text x="0" y="{lane1 + 20}">Signal</text><text x="0" y="{lane2 + 20}">Plays</text>',
           f'<rect x="{LEFT}" y="{lane1}" width="{PLOT}" height="{h}" fill="url(#none{n})" stroke="#aab2ba"/>',
           f'<rect x="{LEFT}" y="{lane2}" width="{PLOT}" height="{h}" fill="#fafbfc" stroke="#aab2ba"/>']
    out += _ticks(edges, cd, tz, lane1, lane2 + h)
    for a, b, label in cd.pieces:
        x0, x1 = _x(a, cd), _x(b, cd)
        out.append(f'<rect x="{x0:.2f}" y="{lane1}" width="{max(x1 - x0, 0.5):.2f}" height="{h}" '
                   f'fill="{COLOURS[label]}"><title>{_hms(a, tz)}–{_hms(b, tz)} '
                   f'{NAMES[label]}</title></rect>')
    for p in cd.drawn:
        x0 = _x(p.start, cd)
        x1 = _x(p.end, cd) if p.end is not None else x0
        out.append(f'<rect x="{x0:.2f}" y="{lane2 + 2}" width="{max(x1 - x0, 1.5):.2f}" height="{h - 4}" '
                   f'fill="{COLOURS[p.status]}" stroke="#fff" stroke-width="0.5">'
                   f'<title>{escape(_play_label(p, tz, cd.start))}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def _spend_chart(cd: ChannelDay, edges: list[float], tz: dt.tzinfo, currency: str | None) -> str:
    bins = cd.spend_per(edges, currency)
    top, h = max(bins) if bins else 0.0, 70
    unit = escape(currency or "")
    out = [f'<svg class="spend" viewBox="0 0 {WIDTH} 100" role="img" '
           f'aria-label="Spend per hour for {escape(cd.channel)}">',
           '<text x="0" y="14">Spend / hour</text>',
           f'<text x="0" y="30">max {top:.4f} {unit}</text>' if top else '<text x="0" y="30">nothing paid</text>',
           f'<line x1="{LEFT}" y1="{8 + h}" x2="{WIDTH - RIGHT}" y2="{8 + h}" stroke="#7d8791"/>']
    out += _ticks(edges, cd, tz, 8, 8 + h)
    for a, b, v in zip(edges, edges[1:], bins):
        if v <= 0:
            continue
        x0, x1 = _x(a, cd), _x(b, cd)
        bh = v / top * h
        out.append(f'<rect x="{x0 + 2:.2f}" y="{8 + h - bh:.2f}" width="{max(x1 - x0 - 4, 1):.2f}" '
                   f'height="{bh:.2f}" fill="{COLOURS["spend"]}"><title>{_hm(a, tz)}–{_hm(b, tz)}: '
                   f'{v:.4f} {unit}</title></rect>')
    out.append("</svg>")
    return "\n".join(out)


def _numbers(s: dict) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f} %"

    items = [("Music", _duration(s["music_minutes"] * 60)), ("Music share", pct(s["music_share"])),
             ("Plays", str(s["plays"])), ("Recognised", f'{s["recognised"]} ({pct(s["recognised_share"])})'),
             ("Paid calls", str(s["paid_calls"])),
             ("Spend", f'{s["spend"]:.4f} {s["currency"] or ""}'.strip()),
             ("Skipped (budget cap)", str(s["budget_skipped"])), ("Outage", _duration(s["outage_minutes"] * 60)),
             ("No records", _duration(s["unaccounted_minutes"] * 60))]
    return '<dl class="numbers">' + "".join(f"<div><dt>{k}</dt><dd>{escape(v)}</dd></div>" for k, v in items) + \
        "</dl>"


def _table(cd: ChannelDay, tz: dt.tzinfo) -> str:
    if not cd.plays:
        return '<p class="note">No plays started on this day.</p>'
    rows = ["<table><thead><tr><th>Start</th><th>End</th><th>Length</th><th>Title</th><th>Artist</th>"
            "<th>Album</th><th>Genre</th><th>Status</th></tr></thead><tbody>"]
    for p in cd.plays:
        title = escape(p.title) if p.title else "not identified"
        rows.append(f'<tr class="{p.status}"><td class="t">{_when(p.start, tz, cd.start)}</td>'
                    f'<td class="t">{_when(p.end, tz, cd.start)}</td>'
                    f'<td class="t">{_duration(p.duration)}</td><td class="title">{title}</td>'
                    f'<td>{escape(p.artist or "")}</td><td>{escape(p.album or "")}</td>'
                    f'<td>{escape(p.genre or "")}</td><td>{p.status}</td></tr>')
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _legend() -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{COLOURS[k]}"></i>{v}</span>' if k else f'<span><i class="none"></i>{v}</span>'
        for k, v in LEGEND) + "</div>"


def _zone_line(day: str, start: float, end: float, tz: dt.tzinfo) -> str:
    name = zone_name(tz)
    if name == "UTC":
        return f"All times are UTC. The day is {day}, 00:00–24:00 UTC."
    a, b = offset_label(start, tz), offset_label(end - 1, tz)
    offset = a if a == b else f"{a} until the clock change, then {b}"
    return (f"Times are shown in {escape(name)} ({offset}); the data is stored in UTC, and the day is the "
            f"UTC day {day}, 00:00–24:00 UTC ({shown(start, tz, '%d %b %H:%M')} to "
            f"{shown(end, tz, '%d %b %H:%M')} {escape(name)} time).")


def render(day: str, days: list[ChannelDay], summaries: list[dict], edges: list[float], tz: dt.tzinfo) -> str:
    """The whole page: per channel its timeline, legend, key figures, spend per hour and plays."""
    start, end = edges[0], edges[-1]
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Airplay report {day}</title><style>{CSS}</style></head><body>",
             f"<h1>Airplay report — {day}</h1>", f'<p class="tz">{_zone_line(day, start, end, tz)}</p>']
    if len(days) > 1:
        parts.append("<nav>" + "".join(f'<a href="#ch{i}">{escape(cd.channel)}</a>' for i, cd in enumerate(days))
                     + "</nav>")
    for i, (cd, s) in enumerate(zip(days, summaries)):
        parts += [f'<section class="channel" id="ch{i}"><h2>{escape(cd.channel)}</h2>',
                  _timeline(cd, edges, tz, i), _legend(), _numbers(s), _spend_chart(cd, edges, tz, s["currency"]),
                  _table(cd, tz), "</section>"]
    parts.append('<p class="note">Written by <code>onair report</code>. How the figures are computed: '
                 'docs/report.md in the onair repository.</p></body></html>')
    return "\n".join(parts) + "\n"
