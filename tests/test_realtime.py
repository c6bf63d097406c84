"""Real time: UTC on every record, ids that never collide across runs, outputs that rotate by
UTC day and are appended to, clocks that follow a live stream and sail through a PTS wrap."""
import hashlib
import json
import os
import random

import numpy as np
import pytest

from pipeline import config
from pipeline.clock import StreamClock, iso, parse_iso
from pipeline.direct import DirectRun
from pipeline.follow import DailyTail
from pipeline.metrics import Metrics
from pipeline.models import load_embedder
from pipeline.outputs import DailyJsonl, dumps
from pipeline.recognition.stage import Ledger
from tests.conftest import run_records, write_ts
from tests.provider_servers import ProviderServer

DAY = 86400.0
T0 = parse_iso("2026-12-06T23:59:00Z")


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def embedder(shared):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ONAIR_MODEL_DIR", str(shared / "models"))
        return load_embedder(config.load(None, []))


# -- clocks

def test_iso_and_parse_round_trip_and_bad_times():
    assert iso(T0 + 0.1234) == "2026-12-06T23:59:00.123Z"
    assert parse_iso("2026-12-06T23:59:00.123Z") == pytest.approx(T0 + 0.123)
    assert parse_iso("2026-12-07T00:59:00+01:00") == T0 + 0.0     # an offset is honoured
    for bad in ("yesterday", "", "2026-13-01T00:00:00Z"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_iso(bad)


def test_live_clock_follows_bursts_and_drift_for_two_days():
    """A sender whose sample clock runs 80 ppm slow, delivered in bursts (HLS-like, 0-6 s late):
    UTC stays within a tenth of a frame of the earliest arrival for 48 hours."""
    rng = random.Random(1)
    clock = StreamClock("live")
    t, wall0, worst = 0.0, T0, 0.0
    while t < 2 * DAY:
        t += 2.0
        truth = wall0 + 1.5 + t * (1 + 80e-6)          # earliest possible arrival of stream time t
        clock.observe(t, truth + rng.random() * 6.0)
        if t > 600:
            worst = max(worst, abs(clock.utc(t) - truth))
    assert worst < 0.1, worst
    assert clock.resyncs == 0


def test_live_clock_resyncs_after_a_lasting_jump_and_replays_exactly():
    clock = StreamClock("live", resync_s=5.0, resync_hold_s=30.0)
    for t in range(0, 600, 2):
        clock.observe(float(t), T0 + t)
    saved = clock.snapshot()
    # a splice: from stream time 600 the audio arrives 60 s later than before, for good
    for t in range(600, 700, 2):
        clock.observe(float(t), T0 + t + 60.0)
    assert clock.resyncs == 1
    assert clock.utc(650) == pytest.approx(T0 + 650 + 60.0, abs=0.01)
    assert clock.utc(100) == pytest.approx(T0 + 100, abs=0.001)      # earlier stream time keeps its UTC
    # a replay from the snapshot (Kafka failover) gives the very same UTC, so the same ids
    again = StreamClock("live", resync_s=5.0, resync_hold_s=30.0)
    again.restore(saved)
    for t in range(600, 700, 2):
        again.observe(float(t), T0 + t + 60.0)
    assert [again.utc(x) for x in range(0, 700, 7)] == [clock.utc(x) for x in range(0, 700, 7)]


# -- daily files

def test_outputs_rotate_by_utc_day_append_and_adopt_an_old_plain_file(tmp_path):
    (tmp_path / "segments.jsonl").write_text('{"old": 1}\n')        # an older onair's file
    os.utime(tmp_path / "segments.jsonl", (T0, T0))
    out = DailyJsonl(tmp_path, "segments")
    out.write({"channel": "a", "start_utc": iso(T0), "title": "line\u2028break"})
    out.write({"channel": "a", "start_utc": iso(T0 + 120)})
    out.close()
    again = DailyJsonl(tmp_path, "segments")                        # a restart appends
    again.write({"channel": "a", "start_utc": iso(T0 + 30)})       # late, for the earlier day
    again.close()
    d1, d2 = tmp_path / "2026-12-06" / "segments.jsonl", tmp_path / "2026-12-07" / "segments.jsonl"
    assert [r.get("old") for r in lines(d1)] == [1, None, None]
    assert "\u2028" not in d1.read_text() and lines(d1)[1]["title"] == "line\u2028break"
    assert len(lines(d2)) == 1
    assert os.readlink(tmp_path / "segments.jsonl") == "2026-12-07/segments.jsonl"
    assert len(d1.read_text().splitlines()) == len(d1.read_text().split("\n")) - 1


def test_a_follower_reads_across_midnight_and_late_records_of_yesterday(tmp_path):
    out = DailyJsonl(tmp_path, "requests")
    out.write({"n": 1, "emitted_at_utc": iso(T0)})
    tail = DailyTail(tmp_path, "requests")
    assert [json.loads(x)["n"] for x in tail.read()] == [1]
    out.write({"n": 2, "emitted_at_utc": iso(T0 + 90)})     # tomorrow
    out.write({"n": 3, "emitted_at_utc": iso(T0 + 10)})     # a late one of today
    assert sorted(json.loads(x)["n"] for x in tail.read()) == [2, 3]
    assert tail.read() == []


def test_the_ledger_rotates_and_rebuilds_from_its_recent_days(tmp_path):
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for k, ts in enumerate((T0 - 3 * DAY, T0 - DAY, T0, T0 + 120)):
        ledger({"ts": ts, "request_id": f"r{k}", "channel": "a", "outcome": "matched", "paid": True, "cost": 1.0})
    (tmp_path / "2026-12-06" / "ledger.jsonl").open("a").write("[]\n{broken\n")
    (tmp_path / "2026-12-09").mkdir()          # a later day of records only: no ledger there
    assert [e["request_id"] for e in ledger.entries()] == ["r2", "r3"]


# -- whole runs

def music(programme, a, b):
    return programme["audio"][int(a * 48000):int(b * 48000)]


def test_two_runs_into_one_folder_never_share_an_id_or_an_answer(programme, tmp_path, monkeypatch, embedder):
    """The same channel name, two programmes, one output folder: the second run's songs are paid
    and titled for themselves (the first run's answers are never reused), and nothing the first
    run wrote is lost."""
    server = ProviderServer("acrcloud", "secret", "key")
    server.title_of = lambda clip: "title-" + hashlib.sha1(clip).hexdigest()[:10]
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", "secret")
    # without the fingerprint index: this is about ids and the cache (a song's second request would
    # be answered from the index, tests/test_fingerprints.py)
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={server.url}",
                             "recognition.rate_per_s=1000", "identity.enabled=false"])
    first = write_ts(tmp_path / "first.ts", music(programme, 0, 30), video=False)
    second = write_ts(tmp_path / "second.ts", music(programme, 50, 75), video=False)
    out = tmp_path / "out"
    given = parse_iso("2026-12-06T14:05:00Z")
    try:
        DirectRun([("ch", str(first))], out, cfg, Metrics(), embedder, start_time=given).run()
        DirectRun([("ch", str(second))], out, cfg, Metrics(), embedder).run()
    finally:
        server.close()
    # the first run is dated 2026-12-06 by --start-time, the second and the ledger by the wall clock
    segs, reqs, now, ledger = (run_records(out / f"{k}.jsonl") for k in ("segments", "requests", "nowplaying", "ledger"))
    runs = {r["clock"] for r in segs}
    assert runs == {"given", "run_start"}
    # both runs' records are there, each run's timeline from 0, ids unique across the two
    assert [s["start"] for s in segs if s["clock"] == "given"][0] == 0.0
    assert [s["start"] for s in segs if s["clock"] == "run_start"][0] == 0.0
    assert len({s["id"] for s in segs}) == len(segs)
    assert len(reqs) >= 2 and len({r["request_id"] for r in reqs}) == len(reqs)
    first_req = [r for r in reqs if r["clock"] == "given"][0]
    assert first_req["song_start_utc"] == iso(given + first_req["song_start"])
    assert first_req["request_id"].startswith(f"ch:{first_req['song_start_utc']}:")
    # every request was paid once, and titled with what its own clip is
    assert server.paid_calls() == len(reqs) == len([e for e in ledger if e["paid"]])
    for r in reqs:
        clip = __import__("base64").b64decode(r["audio"]["data"])
        np_rec = [n for n in now if n["request_id"] == r["request_id"]]
        assert len(np_rec) == 1 and np_rec[0]["title"] == "title-" + hashlib.sha1(clip).hexdigest()[:10]
        assert np_rec[0]["started_at_utc"] == r["song_start_utc"]
    # UTC beside stream time, on every kind
    for s in segs:
        assert parse_iso(s["end_utc"]) - parse_iso(s["start_utc"]) == pytest.approx(s["end"] - s["start"], abs=2e-3)


def test_a_reused_request_id_with_other_audio_is_not_answered_from_the_cache(tmp_path, monkeypatch):
    from operators.audio.clip import audio_field
    from pipeline.recognition.stage import make_recognizer
    server = ProviderServer("acrcloud", "secret", "key")
    server.title_of = lambda clip: "title-" + hashlib.sha1(clip).hexdigest()[:10]
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", "secret")
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={server.url}"])
    try:
        rec = make_recognizer(cfg, tmp_path / "ledger.jsonl", Metrics())
        tone = lambda f: (np.sin(np.arange(160000) * f) * 8000).astype(np.int16)   # noqa: E731
        req = {"request_id": "ch:0.00:0", "channel": "ch", "clip_start": 0.0, "clip_end": 10.0}
        a = rec.handle({**req, "audio": audio_field(tone(0.05))})
        again = make_recognizer(cfg, tmp_path / "ledger.jsonl", Metrics())      # a restart: cache from the ledger
        assert again.handle({**req, "audio": audio_field(tone(0.05))}) == a     # a true copy: from the cache
        b = again.handle({**req, "audio": audio_field(tone(0.09))})             # another song, same id
    finally:
        server.close()
    assert server.paid_calls() == 2 and a["title"] != b["title"]


def test_a_stream_whose_pts_wraps_runs_straight_through(programme, tmp_path, embedder):
    """The 33-bit PTS wraps every 26.5 h: a stream crossing it keeps one continuous timeline."""
    wrap = 2 ** 33 * 48000 // 90000                    # the wrap, in 48 kHz samples
    audio = programme["audio"][:40 * 48000]
    ts = write_ts(tmp_path / "wrap.ts", audio, video=False, pts_offset=wrap - 15 * 48000)
    given = parse_iso("2026-12-06T23:59:50Z")
    metrics = Metrics()
    res = DirectRun([("w", str(ts))], tmp_path / "out", config.load(None, []), metrics, embedder,
                    start_time=given).run()
    assert res["w"].ok and res["w"].audio_s == pytest.approx(40.0, abs=0.1)
    segs = run_records(tmp_path / "out" / "segments.jsonl")
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == pytest.approx(40.0, abs=0.1)
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"] and a["end_utc"] == b["start_utc"]
    assert all(s["label"] != "no_signal" for s in segs)
    assert parse_iso(segs[-1]["end_utc"]) - given == pytest.approx(segs[-1]["end"], abs=2e-3)
    # the run crossed UTC midnight too: its records are filed under the day each one starts
    assert sorted(p.name for p in (tmp_path / "out").glob("2026-*")) == ["2026-12-06", "2026-12-07"]


def test_records_escape_unicode_line_breaks():
    line = dumps({"title": "a\u2028b\u2029c\u0085d\x01"})
    assert len(line.splitlines()) == 1 and json.loads(line)["title"] == "a\u2028b\u2029c\u0085d\x01"


def test_the_card_follows_a_restarted_run_by_utc_not_stream_time():
    """Run one ends at stream time 1200; run two starts again at 0, later in UTC: its song is on."""
    from operators.recognition.nowplaying import NowPlayingBoard
    board = NowPlayingBoard(hold_s=0, clear_s=0)
    board.apply("segment", {"channel": "c", "label": "music", "start": 1000.0, "end": 1200.0,
                            "start_utc": iso(T0 - 200), "end_utc": iso(T0)})
    board.apply("nowplaying", {"channel": "c", "request_id": "c:x:0", "title": "Second run", "artist": "B",
                               "started_at": 5.0, "started_at_utc": iso(T0 + 65)})
    state = board.state("c")
    assert state["music"] and state["visible"] and state["title"] == "Second run"
    assert state["started_at_utc"] == iso(T0 + 65)
    board.apply("segment", {"channel": "c", "label": "no_signal", "start": 5.0, "end": 70.0,
                            "start_utc": iso(T0 + 65), "end_utc": iso(T0 + 130)})
    assert not board.state("c")["music"]


def test_prune_drops_old_clips_and_keeps_every_record(tmp_path):
    import base64
    import datetime as dt

    from pipeline.prune import prune_clips
    from operators.audio.clip import audio_field
    out = DailyJsonl(tmp_path, "requests")
    clip = audio_field((np.sin(np.arange(16000) * 0.05) * 8000).astype(np.int16))
    for k, t in enumerate((T0 - 9 * DAY, T0 - 8 * DAY, T0)):
        out.write({"request_id": f"r{k}", "channel": "a", "emitted_at_utc": iso(t), "title": "x\u2028y", "audio": clip})
    out.close()
    old = tmp_path / "2026-11-27" / "requests.jsonl"
    (old.parent / "requests.jsonl").open("a").write("{broken\n")
    with pytest.raises(ValueError, match="at least 2"):
        prune_clips(tmp_path, 1)
    done = prune_clips(tmp_path, 7, today=dt.date(2026, 12, 6))
    assert done["days"] == 2 and done["clips"] == 2 and done["bytes_after"] < done["bytes_before"] / 10
    pruned = [json.loads(x) for x in old.read_text().splitlines()[:1]]
    raw = base64.b64decode(clip["data"])
    assert pruned[0]["audio"] == {"codec": "flac", "sample_rate": 16000, "data": None,
                                  "sha1": hashlib.sha1(raw).hexdigest(), "bytes": len(raw)}
    assert pruned[0]["title"] == "x\u2028y" and old.read_text().splitlines()[1] == "{broken"
    assert lines(tmp_path / "2026-12-06" / "requests.jsonl")[0]["audio"] == clip     # recent days keep theirs
    assert prune_clips(tmp_path, 7, today=dt.date(2026, 12, 6))["clips"] == 0          # once is enough


def test_a_file_with_a_creation_time_runs_on_it(programme, tmp_path, embedder):
    """No --start-time: a file's creation_time tag is its UTC (clock `container`); a file without
    one runs on the run's start (`run_start`), shared by the files of the run."""
    import av
    tagged = tmp_path / "tagged.mka"
    audio = programme["audio"][:20 * 48000]
    with av.open(str(tagged), "w", format="matroska") as out:
        out.metadata["creation_time"] = "2026-12-05T10:00:00.000000Z"
        s = out.add_stream("flac", rate=48000)
        s.layout = "mono"
        for i in range(0, len(audio) - 4096, 4096):
            f = av.AudioFrame.from_ndarray((audio[None, i:i + 4096] * 32767).astype(np.int16), format="s16",
                                           layout="mono")
            f.sample_rate, f.pts = 48000, i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    plain = write_ts(tmp_path / "plain.ts", audio, video=False)
    res = DirectRun([("t", str(tagged)), ("u", str(plain))], tmp_path / "out", config.load(None, []), Metrics(),
                    embedder).run()
    assert res["t"].ok and res["u"].ok
    segs = run_records(tmp_path / "out" / "segments.jsonl")
    t = [s for s in segs if s["channel"] == "t"]
    assert {s["clock"] for s in t} == {"container"} and t[0]["start_utc"] == "2026-12-05T10:00:00.000Z"
    assert (tmp_path / "out" / "2026-12-05" / "segments.jsonl").exists()
    u = [s for s in segs if s["channel"] == "u"]
    assert {s["clock"] for s in u} == {"run_start"}
    assert parse_iso(u[0]["start_utc"]) == pytest.approx(__import__("time").time(), abs=600)


def test_recognize_dir_sends_what_was_left_over_midnight(tmp_path, monkeypatch):
    """`onair recognize --dir` restarted after midnight: yesterday's unanswered request is still
    sent, yesterday's answered one comes from the cache, today's is sent; none paid twice."""
    from operators.audio.clip import audio_field
    from pipeline.recognition.stage import follow_dir
    server = ProviderServer("acrcloud", "secret", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", "secret")
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={server.url}"])
    reqs = DailyJsonl(tmp_path, "requests")
    tone = lambda f: audio_field((np.sin(np.arange(160000) * f) * 8000).astype(np.int16))  # noqa: E731
    for k, t in enumerate((T0 - 120, T0 - 60, T0 + 120)):      # two late on D-1, one on D
        reqs.write({"request_id": f"ch:{iso(t)}:0", "channel": "ch", "clip_start": 0.0, "clip_end": 10.0,
                    "emitted_at_utc": iso(t), "audio": tone(0.03 + 0.02 * k)})
        if k == 0:
            try:
                assert follow_dir(cfg, tmp_path, Metrics(), idle_exit_s=0.5) == 1     # answered, then stopped
            except BaseException:
                server.close()
                raise
    reqs.close()
    try:
        assert follow_dir(cfg, tmp_path, Metrics(), idle_exit_s=0.5) == 3
    finally:
        server.close()
    assert server.paid_calls() == 3
