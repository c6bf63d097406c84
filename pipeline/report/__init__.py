"""The daily airplay report (`onair report`): from the day folders `onair run --out DIR` writes,
per channel a cue sheet of the day's plays (CSV), the day's figures (JSON), and one page for
people (`report.html`). `records` reads, `plays` decides what a play is and counts, `cuesheet`
writes the files, `page` draws the page; docs/report.md says how to read them."""
from __future__ import annotations

from pathlib import Path

from pipeline.report.cuesheet import file_stems, write_csv, write_summary
from pipeline.report.page import render
from pipeline.report.plays import channel_day
from pipeline.report.records import latest_day, read_window
from pipeline.report.times import day_span, hour_edges, zone, zone_name


def write_report(root: str | Path, day: str | None = None, channel: str | None = None, tz: str | None = None,
                 out: str | Path | None = None) -> list[Path]:
    """Write the report of UTC day `day` (default: the newest day folder with records) of the output
    dir `root` into `out/<day>/` (default `root/reports/`); returns the paths written. Bad input
    (no such dir, a bad day or zone, no records) raises ValueError with a line for the user."""
    root = Path(root)
    shown_in = zone(tz)                  # before any reading: a typo in --tz fails at once
    if not root.is_dir():
        raise ValueError(f"no such output dir: {root}")
    if day is None:
        day = latest_day(root)
        if day is None:
            raise ValueError(f"no day folders with records in {root} (expected {root}/YYYY-MM-DD/*.jsonl)")
    start, end = day_span(day)
    records = read_window(root, day)
    channels = sorted(records.channels()) if channel is None else [channel]
    days = [cd for cd in (channel_day(records, c, day, start) for c in channels) if not cd.empty]
    if not days:
        raise ValueError(f"no records for {channel} on {day}" if channel else f"no records on {day}")

    folder = (Path(out) if out else root / "reports") / day
    folder.mkdir(parents=True, exist_ok=True)
    stems = file_stems([cd.channel for cd in days])
    name = zone_name(shown_in)
    summaries, written = [], []
    for cd in days:
        summary = cd.summary(name)
        summaries.append(summary)
        csv_path, json_path = folder / f"{stems[cd.channel]}.csv", folder / f"{stems[cd.channel]}.json"
        write_csv(csv_path, cd, shown_in if tz else None)
        write_summary(json_path, summary)
        written += [csv_path, json_path]
    page = folder / "report.html"
    page.write_text(render(day, days, summaries, hour_edges(start, end, shown_in), shown_in), encoding="utf-8")
    return written + [page]
