"""`onair report`: cue sheets, day figures and the HTML page from a small output dir written here,
day files as `onair run` rotates them (a record in the UTC day of its first UTC field)."""
from __future__ import annotations

import base64
import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.clock import iso, parse_iso
from pipeline.report import write_report
from pipeline.report.cuesheet import COLUMNS, file_stems
from pipeline.report.times import day_span, hour_edges, zone
from tests.conftest import REPO

D, BEFORE, AFTER = "2026-12-06", "2026-12-05", "2026-12-07"
RUN0 = parse_iso("2026-12-05T20:00:00Z")          # stream time 0 of the run
TV = "tv/1"                                       # a channel name that is no file name as it is
TITLE = 'Night, "Live" <script>document.title="pwned"</script> Café 東京'
FIRST_UTC = {"segments": "start_utc", "requests": "song_start_utc", "nowplaying": "started_at_utc",
             "genres": "segment_start_utc"}


def t(hms: str, day: str = D) -> str:
    return f"{day}T{hms}.000Z"


def add(root: Path, kind: str, rec: dict) -> None:
    """Append a record to the day file `onair run` files it under: the UTC day of its first UTC field."""
    day = iso(rec["ts"])[:10] if kind == "ledger" else rec[FIRST_UTC[kind]][:10]
    path = root / day / f"{kind}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def add_raw(root: Path, day: str, kind: str, line: str) -> None:
    with open(root / day / f"{kind}.jsonl", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def stream(utc: str) -> float:
    return round(parse_iso(utc) - RUN0, 3)


def seg(ch, label, start, end):
    return {"id": f"{ch}:{start}", "channel": ch, "label": label, "start": stream(start), "end": stream(end),
            "confidence": 0.9, "start_utc": start, "end_utc": end, "clock": "given"}


def req(ch, song, n, clip_end=None):
    clip_end = clip_end or iso(parse_iso(song) + 10 + 30 * n)
    return {"request_id": f"{ch}:{song}:{n}", "channel": ch, "clip_start": stream(clip_end) - 10,
            "clip_end": stream(clip_end), "emitted_at": stream(clip_end), "song_start": stream(song),
            "reason": "requery" if n else "new_music", "song_start_utc": song,
            "clip_start_utc": iso(parse_iso(clip_end) - 10), "clip_end_utc": clip_end, "emitted_at_utc": clip_end,
            "clock": "given", "audio": {"codec": "aac", "sample_rate": 16000, "data": base64.b64encode(b"x" * 3000)
                                        .decode()}}


def now(ch, song, n, title, artist="Ann & Bob", album="", isrc="", score=88):
    return {"channel": ch, "request_id": f"{ch}:{song}:{n}", "title": title, "artist": artist, "album": album,
            "isrc": isrc, "provider": "acrcloud", "score": score, "started_at": stream(song), "started_at_utc": song}


def charge(ch, song, n, at, outcome="matched", nowplaying=None):
    paid = outcome in ("matched", "no_match")
    rec = {"ts": parse_iso(at), "request_id": f"{ch}:{song}:{n}", "channel": ch, "provider": "acrcloud",
           "outcome": outcome, "paid": paid, "cost": 0.0025 if paid else 0.0, "currency": "USD", "audio_s": 10.0}
    if outcome == "budget_skipped":
        rec["detail"] = "channel_hour_requests"
    if nowplaying:
        rec["nowplaying"] = nowplaying
    return rec


P0, P1, P2, P3, P4, P5 = (t("23:58:30", BEFORE), t("00:01:00"), t("00:15:00"), t("00:20:00"), t("23:55:00"),
                          t("00:02:00", AFTER))
Q1, Q2 = t("08:00:00"), t("08:12:00")


@pytest.fixture
def out(tmp_path) -> Path:
    return make_days(tmp_path / "out")


def make_days(root: Path) -> Path:
    """Two channels over three day folders. chA: music across midnight D-1 -> D with a play that
    started on D-1, a play titled by its second request (a third, later match must not win), an
    unidentified play (budget skipped), a play titled through the ledger only, a play that runs into
    D+1, 3 h without signal; tv/1: an unidentified play and one no segment covers yet."""
    for s in [seg("chA", "music", P0[:11] + "23:58:00.000Z", t("00:04:00")),
              seg("chA", "non_music", t("00:04:00"), t("00:15:00")),
              seg("chA", "music", t("00:15:00"), t("00:25:00")),
              seg("chA", "music", t("00:15:00"), t("00:25:00")),       # a Kafka replay of the same record
              seg("chA", "no_signal", t("00:25:00"), t("03:25:00")),
              seg("chA", "music", t("03:25:00"), t("09:25:00")),
              seg("chA", "non_music", t("09:25:00"), t("10:00:00")),
              seg("chA", "music", t("23:50:00"), t("00:05:00", AFTER)),
              seg(TV, "music", Q1, t("08:10:00")),
              # a bed under an advert's voice: background music, never a song asked about
              {**seg(TV, "music", t("08:20:00"), t("08:21:30")), "usage": "background", "usage_confidence": 0.9}]:
        add(root, "segments", s)
    add_raw(root, D, "segments", '{"id": "chA:broken", "channel": "chA", "label": "mus')      # damaged
    for r in [req("chA", P0, 0), req("chA", P1, 0), req("chA", P1, 1), req("chA", P1, 2), req("chA", P1, 1),
              req("chA", P2, 0), req("chA", P3, 0), req("chA", P4, 0), req("chA", P5, 0),
              req(TV, Q1, 0), req(TV, Q2, 0, clip_end=t("08:12:10"))]:
        add(root, "requests", r)
    add_raw(root, D, "requests", '{"request_id": "chA:x:0", "channel": "chA"}')             # no song start
    for n in [now("chA", P0, 0, "Before Midnight"), now("chA", P1, 1, TITLE, album="Side A\nSide B"),
              now("chA", P1, 1, TITLE, album="Side A\nSide B"), now("chA", P1, 2, "Wrong Later"),
              now("chA", P4, 0, "Late Song", artist="Zoë")]:
        add(root, "nowplaying", n)
    plain = now("chA", P3, 0, "Plain Song", artist="Some Artist", album="Some Album", isrc="GBAYE0000001", score=93)
    for c in [charge("chA", P0, 0, P0[:11] + "23:58:45.000Z"),
              charge("chA", P1, 0, t("00:01:20"), "no_match"), charge("chA", P1, 1, t("00:02:20")),
              charge("chA", P1, 2, t("00:03:20")), charge("chA", P2, 0, t("00:15:20"), "budget_skipped"),
              charge("chA", P3, 0, t("00:20:20"), nowplaying=plain), charge("chA", P4, 0, t("23:55:20")),
              charge("chA", P5, 0, t("00:02:20", AFTER)), charge(TV, Q1, 0, t("08:00:20"), "no_match")]:
        add(root, "ledger", c)
    add(root, "genres", {"channel": "chA", "segment_start": 0, "segment_end": 600, "segment_start_utc": P2,
                         "segment_end_utc": t("00:25:00"), "tags": [{"genre": "jazz", "score": 0.8}],
                         "provider_tags": [{"genre": None, "given": "Film Score", "source": "acrcloud"}],
                         "usage": "background", "clock": "given"})
    add(root, "genres", {"channel": "chA", "segment_start": 0, "segment_end": None, "segment_start_utc": P4[:11] +
                         "23:50:00.000Z", "segment_end_utc": None, "tags": [{"genre": "rock", "score": 0.6}],
                         "clock": "given"})
    return root


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_cue_sheets_and_figures_of_a_day(out, caplog):
    caplog.set_level(logging.WARNING, logger="onair.report")
    paths = write_report(out, D)
    folder = out / "reports" / D
    tv = file_stems(["chA", TV])[TV]
    assert tv.startswith("tv_1-") and "/" not in tv
    assert paths == [folder / "chA.csv", folder / "chA.json", folder / f"{tv}.csv", folder / f"{tv}.json",
                     folder / "report.html"]
    assert (folder / "chA.csv").read_text(encoding="utf-8").splitlines()[0] == ",".join(COLUMNS)
    assert rows(folder / "chA.csv")[1:] == [
        ["chA", P1, t("00:04:00"), "180.000", TITLE, "Ann & Bob", "Side A\nSide B", "", "acrcloud", "88",
         f"chA:{P1}:1", "recognised", "", ""],
        ["chA", P2, P3, "300.000", "", "", "", "", "", "", f"chA:{P2}:0", "unidentified", "jazz", "background"],
        ["chA", P3, t("00:25:00"), "300.000", "Plain Song", "Some Artist", "Some Album", "GBAYE0000001",
         "acrcloud", "93", f"chA:{P3}:0", "recognised", "jazz", "background"],
        ["chA", P4, P5, "420.000", "Late Song", "Zoë", "", "", "acrcloud", "88", f"chA:{P4}:0", "recognised", "", ""]]
    assert rows(folder / f"{tv}.csv")[1:] == [
        [TV, Q1, t("08:10:00"), "600.000", "", "", "", "", "", "", f"{TV}:{Q1}:0", "unidentified", "", ""],
        [TV, Q2, t("08:12:10"), "10.000", "", "", "", "", "", "", f"{TV}:{Q2}:0", "unidentified", "", ""],
        [TV, t("08:20:00"), t("08:21:30"), "90.000", "", "", "", "", "", "", "", "background", "", "background"]]

    # music 4 + 10 + 360 + 10 min, non-music 11 + 35, no signal 180: 610 of 1440 min have a record
    assert json.loads((folder / "chA.json").read_text()) == {
        "channel": "chA", "day": D, "music_minutes": 384.0, "music_share": round(384 / (384 + 46), 4),
        "plays": 4, "recognised": 3, "recognised_share": 0.75, "paid_calls": 5, "spend": 0.0125, "currency": "USD",
        "budget_skipped": 1, "answered_locally": 0, "outage_minutes": 180.0, "unaccounted_minutes": 830.0,
        "tz": "UTC", "background_music": 0, "background_music_minutes": 0.0}
    assert json.loads((folder / f"{tv}.json").read_text()) == {
        "channel": TV, "day": D, "music_minutes": 11.5, "music_share": 1.0, "plays": 2, "recognised": 0,
        "recognised_share": 0.0, "paid_calls": 1, "spend": 0.0025, "currency": "USD", "budget_skipped": 0,
        "answered_locally": 0, "outage_minutes": 0.0, "unaccounted_minutes": 1428.5, "tz": "UTC",
        "background_music": 1, "background_music_minutes": 1.5}

    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    for kind, marker in (("segments", "chA:broken"), ("requests", "chA:x:0")):
        path = out / D / f"{kind}.jsonl"
        n = next(i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1) if marker in line)
        assert any(w.startswith(f"{path}:{n}: damaged line skipped") for w in warnings), (kind, n, warnings)

    # the day before: its play that crosses midnight ends where the next one starts
    write_report(out, BEFORE, channel="chA")
    assert rows(out / "reports" / BEFORE / "chA.csv")[1:] == [
        ["chA", P0, P1, "150.000", "Before Midnight", "Ann & Bob", "", "", "acrcloud", "88", f"chA:{P0}:0",
         "recognised", "", ""]]


def test_without_the_requests_file_the_titled_plays_still_come_from_the_now_playing_records(out):
    (out / D / "requests.jsonl").unlink()
    write_report(out, D, channel="chA")
    sheet = rows(out / "reports" / D / "chA.csv")
    assert [(r[1], r[2], r[4], r[10]) for r in sheet[1:]] == [
        (P1, t("00:04:00"), TITLE, f"chA:{P1}:1"), (P3, t("00:25:00"), "Plain Song", f"chA:{P3}:0"),
        (P4, P5, "Late Song", f"chA:{P4}:0")]


def test_file_names_of_channels_are_safe_and_distinct():
    names = ["chA", "a/b", "a:b", "a_b", "A_B", ".hidden", "..", "", "x" * 300, "ü"]
    stems = file_stems(names)
    assert stems["chA"] == "chA" and stems[".."] != ".."
    assert len({s.casefold() for s in stems.values()}) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}", s) for s in stems.values()), stems


def test_a_zone_adds_local_columns_and_leaves_utc_as_it_is(out):
    write_report(out, D, channel="chA", tz="Europe/Paris", out=out / "paris")
    sheet = rows(out / "paris" / D / "chA.csv")
    assert sheet[0] == list(COLUMNS) + ["start_local", "end_local", "tz"]
    assert sheet[1][1:3] == [P1, t("00:04:00")]
    assert sheet[1][-3:] == ["2026-12-06T01:01:00.000+01:00", "2026-12-06T01:04:00.000+01:00", "Europe/Paris"]
    assert sheet[4][-3:] == ["2026-12-07T00:55:00.000+01:00", "2026-12-07T01:02:00.000+01:00", "Europe/Paris"]
    assert json.loads((out / "paris" / D / "chA.json").read_text())["tz"] == "Europe/Paris"
    page = (out / "paris" / D / "report.html").read_text(encoding="utf-8")
    assert "Times are shown in Europe/Paris (UTC+01:00)" in page
    ticks = re.findall(r'text-anchor="middle">(\d\d:\d\d)</text>', page.split('class="spend"')[0])
    assert ticks == [f"{h % 24:02d}:00" for h in range(1, 26)], "hour ticks in the shown zone, 01:00 to 01:00"


def test_hour_edges_follow_the_shown_zone():
    start, end = day_span(D)
    assert len(hour_edges(start, end, zone(None))) == 25            # 24 one-hour bins
    kolkata = hour_edges(start, end, zone("Asia/Kolkata"))          # UTC+05:30: 2 half hours at the ends
    assert len(kolkata) == 26 and kolkata[1] - start == 1800 and end - kolkata[-2] == 1800
    spring = hour_edges(*day_span("2026-03-29"), zone("Europe/Paris"))  # the clock goes forward at 01:00Z
    assert len(spring) == 25


def onair(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "report", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_the_command_prints_what_it_wrote_and_refuses_bad_input_in_one_line(out):
    r = onair("--dir", str(out))                           # default day: the newest folder with records
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(out / "reports" / AFTER / f) for f in ("chA.csv", "chA.json", "report.html")]
    r = onair("--dir", str(out), "--tz", "Mars/Olympus")
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.strip().endswith("unknown time zone: Mars/Olympus") and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    ({"day": "2026-12-32"}, "not a day: '2026-12-32'"),
    ({"day": "2026-12-09"}, "no records on 2026-12-09"),
    ({"day": D, "channel": "chZ"}, f"no records for chZ on {D}"),
    ({"channel": TV}, f"no records for {TV} on {AFTER}"),             # the newest day has none of it
    ({"tz": "../etc/passwd"}, "unknown time zone: ../etc/passwd"),
])
def test_bad_input_is_one_clear_error(out, args, message):
    with pytest.raises(ValueError) as e:
        write_report(out, **args)
    assert str(e.value).startswith(message), str(e.value)
    assert not (out / "reports").exists(), "nothing written"


def test_a_missing_dir_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such output dir: .*missing"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no day folders with records"):
        write_report(tmp_path / "empty")


# ---------------------------------------------------------------- the page, in a real headless Chromium

def rgb(path: Path):
    import av
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def longest_run(image, colour) -> int:
    """The longest horizontal run of pixels of exactly `colour` in any row."""
    import numpy as np
    hit = np.all(image == np.array(colour, dtype=image.dtype), axis=2)
    best = 0
    for row in hit[np.any(hit, axis=1)]:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        best = max(best, int((edges[1::2] - edges[::2]).max()))
    return best


def test_the_page_in_headless_chromium_has_the_titles_and_draws_the_timeline(out, tmp_path):
    from tests.test_overlay import chromium_path
    browser = chromium_path()
    write_report(out, D)
    page = (out / "reports" / D / "report.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--hide-scrollbars"]
    dom = subprocess.run(flags + [f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=60).stdout
    assert "Plain Song" in dom and "Late Song" in dom and "Zoë" in dom and TV in dom
    escaped = TITLE.replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in dom, "the title is text on the page"
    assert "<script" not in dom and "pwned" not in dom.split("<body")[0], "the title's script is not a tag"

    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--user-data-dir={tmp_path / 'p2'}", "--window-size=1280,700",
                            f"--screenshot={shot}", page], capture_output=True, timeout=60)
    image = rgb(shot)
    assert image.shape[1] == 1280
    # the timeline's 6 h of music and 3 h without signal (about 45 px an hour), far wider than a legend swatch
    assert longest_run(image, (0x2e, 0x9e, 0x5b)) >= 200, "music drawn"
    assert longest_run(image, (0xd6, 0x45, 0x41)) >= 100, "no signal drawn"
