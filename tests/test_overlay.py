"""The now-playing overlay: the display-state rules, `onair overlay` as a real process over a growing
output folder and over a real Kafka broker, and its page in a real headless Chromium (screenshots are
kept in tests/artifacts/overlay/, or $ONAIR_TEST_ARTIFACTS/overlay/)."""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest

from operators.recognition.nowplaying import BadRecord, NowPlayingBoard
from pipeline.kafka.broker import free_port
from pipeline.follow import JsonlTail
from tests.conftest import REPO
from tests.kafka_helpers import kafka_cfg
from tests.waiting import wait_for, wait_until

ARTIFACTS = Path(os.environ.get("ONAIR_TEST_ARTIFACTS", REPO / "tests" / "artifacts")) / "overlay"
TOKEN = "s3cret-overlay-token"


def genre(ch, start, end=None, g="jazz"):
    return {"channel": ch, "segment_start": start, "segment_end": end, "tags": [{"genre": g, "score": 0.7},
                                                                                {"genre": "blues", "score": 0.2}]}


def seg(ch, label, start, end):
    return {"channel": ch, "label": label, "start": start, "end": end, "confidence": 0.9}


def nowplaying(ch, started_at, title="So What", artist="Miles Davis"):
    return {"channel": ch, "request_id": f"{ch}:{started_at}", "title": title, "artist": artist if title else None,
            "album": "Kind of Blue" if title else None, "isrc": None, "provider": "audd", "score": 90 if title else None,
            "started_at": started_at}


# ---------------------------------------------------------------- the display state, on a fake clock

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def board(hold=10.0, clear=3.0, stale=120.0):
    clock = Clock()
    return NowPlayingBoard(hold, clear, stale, clock), clock


def test_music_is_on_from_an_open_genre_record_until_its_segment_closes_in_any_order():
    b, _ = board(hold=0, clear=0)
    b.apply("genre", genre("tv", 100.0))
    s = b.state("tv")
    assert s["music"] and s["visible"] and s["genre"] == "jazz" and s["title"] is None and not s["recognised"]
    b.apply("segment", seg("tv", "music", 100.0, 160.0))
    assert not b.state("tv")["music"] and not b.state("tv")["visible"]
    # the topics are not ordered with each other: the same facts, the other way round, give the same answer
    b2, _ = board(hold=0, clear=0)
    b2.apply("segment", seg("tv", "music", 100.0, 160.0))
    b2.apply("genre", genre("tv", 100.0))
    assert not b2.state("tv")["music"]
    # a late recognition of the song that has ended does not put it back on air
    b.apply("nowplaying", nowplaying("tv", 101.5))
    assert not b.state("tv")["music"]
    # a non-music segment closing is not taken as music: a jingle or the stream's end close one too
    b.apply("segment", seg("tv", "non_music", 160.0, 190.0))
    assert not b.state("tv")["music"]
    b.apply("genre", genre("tv", 190.0, g="rock"))
    s = b.state("tv")
    assert s["music"] and s["genre"] == "rock" and s["title"] is None, "the last song's title belongs to the last song"


def test_the_newest_recognition_of_the_music_on_air_gives_title_and_artist():
    b, _ = board()
    b.apply("nowplaying", nowplaying("tv", 101.5))       # recognised before the first genre record came
    s = b.state("tv")
    assert s["visible"] and s["title"] == "So What" and s["artist"] == "Miles Davis" and s["recognised"]
    b.apply("genre", genre("tv", 100.0))
    assert b.state("tv")["title"] == "So What" and b.state("tv")["genre"] == "jazz"
    b.apply("nowplaying", nowplaying("tv", 340.0, title=None))   # the next song in the same run: no match
    s = b.state("tv")
    assert s["visible"] and s["title"] is None and s["artist"] is None and s["genre"] == "jazz"
    b.apply("nowplaying", nowplaying("tv", 200.0, title="Older"))  # arrives late, started earlier: not shown
    assert b.state("tv")["title"] is None
    assert b.state("other") is None and b.channels() == ["tv"]


def test_each_song_shows_its_own_genre_and_the_providers_where_we_have_it():
    b, _ = board(hold=0, clear=0)
    b.apply("genre", genre("tv", 100.0))                                # song one, by the model
    b.apply("genre", {**genre("tv", 100.0), "segment_end": 300.0, "status": "closed"})
    # song two runs straight on, in the same music segment: its own record, its own genre
    second = {**genre("tv", 300.0, g="rock"), "provider_tags": [
        {"genre": None, "given": "Singer/Songwriter", "source": "audd"},
        {"genre": "country", "given": "Country", "source": "audd"}]}
    b.apply("genre", {**genre("tv", 300.0, g="rock")})
    assert b.state("tv")["genre"] == "rock" and b.state("tv")["visible"]
    b.apply("genre", second)                                            # identified: the provider's genre
    s = b.state("tv")
    assert s["genre"] == "country" and s["title"] is None and s["genres"][0]["genre"] == "rock"


def test_hold_clear_and_stale_timers_are_wall_clock():
    b, clock = board(hold=10.0, clear=3.0, stale=120.0)
    b.apply("genre", genre("tv", 100.0))
    assert b.state("tv")["visible"]
    clock.t += 2
    b.apply("segment", seg("tv", "music", 100.0, 130.0))
    assert b.state("tv")["visible"] and not b.state("tv")["music"], "held: shown only 2 s ago"
    clock.t += 7.9
    assert b.tick() == [] and b.state("tv")["visible"]
    clock.t += 0.2
    assert b.tick() == ["tv"] and not b.state("tv")["visible"], "hidden once shown hold_s"
    # long shown: the card goes clear_s after the music ends
    b.apply("genre", genre("tv", 200.0))
    clock.t += 60
    b.apply("genre", genre("tv", 200.0, 260.0))
    clock.t += 2.9
    assert b.tick() == [] and b.state("tv")["visible"]
    clock.t += 0.2
    assert b.tick() == ["tv"] and not b.state("tv")["visible"]
    # music comes back within clear_s: the card never went
    b.apply("genre", genre("tv", 300.0))
    clock.t += 30
    b.apply("segment", seg("tv", "music", 300.0, 330.0))
    clock.t += 1
    b.apply("genre", genre("tv", 332.0))
    clock.t += 5
    assert b.tick() == [] and b.state("tv")["visible"]
    # a pipeline that stops sending must not leave a card on air
    clock.t += 120
    assert b.tick() == ["tv"] and not b.state("tv")["visible"] and b.state("tv")["stale"]
    b.apply("genre", genre("tv", 332.0))
    assert b.state("tv")["visible"] and not b.state("tv")["stale"]


def test_history_replayed_at_start_shows_what_is_on_now_without_the_timers():
    b, _ = board(hold=10.0, clear=3.0)
    for kind, rec in [("genre", genre("a", 10.0)), ("segment", seg("a", "music", 10.0, 50.0)),
                      ("genre", genre("b", 20.0))]:
        b.apply(kind, rec)
    assert b.state("a")["visible"], "held by the timers while replaying"
    seq = b.state("a")["seq"]
    b.settle()
    assert not b.state("a")["visible"] and b.state("b")["visible"]
    assert b.state("a")["seq"] > seq, "connected pages are told"


@pytest.mark.parametrize("kind,record", [
    ("segment", {"label": "music", "start": 0, "end": 1}),
    ("segment", {"channel": "tv", "label": "speech", "start": 0, "end": 1}),
    ("genre", {"channel": "tv", "segment_start": "soon", "segment_end": None, "tags": []}),
    ("genre", {"channel": "tv", "segment_start": 1.0, "segment_end": None, "tags": "jazz"}),
    ("nowplaying", ["not", "an", "object"]),
])
def test_malformed_records_are_refused_with_a_reason(kind, record):
    b, _ = board()
    with pytest.raises(BadRecord) as e:
        b.apply(kind, record)
    assert e.value.reason == "invalid" and b.channels() == []


def test_tail_returns_complete_lines_and_starts_again_on_a_new_file(tmp_path):
    p = tmp_path / "x.jsonl"
    t = JsonlTail(p)
    assert t.read() == []
    p.write_text('{"a": 1}\n{"b"')
    assert t.read() == ['{"a": 1}']
    with open(p, "a") as f:
        f.write(': 2}\n\n')
    assert t.read() == ['{"b": 2}']
    p.write_text('{"c": 3}\n')            # a new run truncates the file
    assert t.read() == ['{"c": 3}']


# ---------------------------------------------------------------- `onair overlay`, a real process

class Overlay:
    """`onair overlay` in a subprocess on free ports; its log in tmp_path."""

    def __init__(self, tmp_path: Path, *args: str, token: str | None = None):
        self.port, self.mport = free_port(), free_port()
        self.token = token
        self.log = tmp_path / f"overlay-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k != "ONAIR_OVERLAY_TOKEN"}
        if token:
            env["ONAIR_OVERLAY_TOKEN"] = token
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "overlay", *args, "--port", str(self.port),
                                      "--metrics-port", str(self.mport), "--set", "overlay.hold_s=1",
                                      "--set", "overlay.clear_s=0.5", "--set", "overlay.heartbeat_s=1"],
                                     cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120            # a generous deadline: a loaded machine starts Python slowly
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("overlay did not answer /healthz: " + self.log.read_text())

    def q(self, path: str) -> str:
        return self.url + path + (f"{'&' if '?' in path else '?'}token={self.token}" if self.token else "")

    def get(self, path: str, **headers):
        req = urllib.request.Request(self.q(path) if not headers else self.url + path, headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def status(self, path: str, **headers) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.mport}/metrics", timeout=5).read().decode()

    def stop(self) -> str:
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()
        return self.log.read_text()


class Events:
    """A real EventSource-like reader of /events/{channel}: (event, data) pairs on a queue."""

    def __init__(self, url: str):
        self.q: queue.Queue = queue.Queue()
        self.resp = urllib.request.urlopen(url, timeout=10)
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        event, data = None, []
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and event:
                    self.q.put((event, json.loads("\n".join(data))))
                    event, data = None, []
        except (OSError, ValueError):
            pass

    def next_state(self, pred, timeout=30.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                ev, data = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                break
            if ev == "state" and pred(data):
                return data
        raise AssertionError(f"no state event as expected within {timeout:.0f} s")

    def close(self):
        self.resp.close()


def append(path: Path, *records, raw: str | None = None):
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        if raw is not None:
            f.write(raw)


def test_api_and_events_follow_the_output_folder_with_a_token(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    append(out / "segments.jsonl", seg("tv1", "non_music", 0.0, 100.0))   # history from before the start
    ov = Overlay(tmp_path, "--dir", str(out), "--set", "runtime.log_level=DEBUG", token=TOKEN)
    try:
        assert ov.status("/api/channels") == 401
        assert ov.status("/api/channels?token=wrong") == 401
        assert ov.status("/events/tv1") == 401 and ov.status("/overlay/tv1") == 401
        assert ov.status("/api/channels", Authorization=f"Bearer {TOKEN}") == 200
        assert ov.get("/api/channels")["channels"][0]["visible"] is False
        assert ov.status(f"/api/nowplaying/nobody?token={TOKEN}") == 404
        ev = Events(ov.q("/events/tv1"))
        first = ev.next_state(lambda s: True)
        assert first["channel"] == "tv1" and first["visible"] is False

        append(out / "genres.jsonl", genre("tv1", 100.0))
        s = ev.next_state(lambda s: s["visible"])
        assert s["genre"] == "jazz" and s["title"] is None
        # a broken line and one nested 50 000 deep (it once killed the follower thread while /healthz
        # said ok): one log line each, counted, and the next records still arrive
        append(out / "nowplaying.jsonl", raw='{"channel": "tv1", "title": \n')
        append(out / "nowplaying.jsonl", raw='{"a":' * 50000 + "1" + "}" * 50000 + "\n")
        append(out / "nowplaying.jsonl", nowplaying("tv1", 101.5))
        s = ev.next_state(lambda s: s["title"] == "So What")
        assert s["artist"] == "Miles Davis" and s["visible"]
        assert ov.get("/api/nowplaying/tv1")["title"] == "So What"
        assert ov.get("/api/nowplaying/tv1", Authorization=f"Bearer {TOKEN}")["album"] == "Kind of Blue"

        t0 = time.monotonic()
        append(out / "segments.jsonl", seg("tv1", "music", 100.0, 160.0))
        s = ev.next_state(lambda s: not s["visible"])
        assert not s["music"] and time.monotonic() - t0 >= 0.4, "hidden after clear_s, not at once"
        assert ov.get("/api/nowplaying/tv1")["visible"] is False

        # an idle stream still hears from the server (the page hides the card when it does not)
        end = time.monotonic() + 30                 # heartbeat_s is 1
        while time.monotonic() < end and ev.q.get(timeout=30)[0] != "ping":
            pass
        assert time.monotonic() < end, "no ping within 30 s"
        ev.close()
        m = ov.metrics()
        assert 'onair_overlay_bad_records_total{kind="nowplaying",reason="not_json"} 1.0' in m
        assert 'onair_overlay_bad_records_total{kind="nowplaying",reason="too_deep"} 1.0' in m
        assert ov.status("/healthz") == 200
        assert 'onair_overlay_records_total{kind="segment"} 2.0' in m
    finally:
        log = ov.stop()
    assert log.count("record was skipped") == 2 and "nowplaying.jsonl:1:" in log and "nowplaying.jsonl:2:" in log
    assert "/events/tv1" in log, "requests are logged at DEBUG ..."
    assert TOKEN not in log, "... without the token"


def test_refuses_a_public_address_without_a_token_and_serves_loopback_without_one(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "overlay", "--dir", str(tmp_path), "--set",
                        "overlay.host=0.0.0.0"], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "ONAIR_OVERLAY_TOKEN"})
    assert r.returncode == 2 and "config key 'overlay.host'" in r.stderr and "ONAIR_OVERLAY_TOKEN" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "overlay", "--dir", str(tmp_path), "--set",
                        "overlay.hold_s=-1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "config key 'overlay.hold_s'" in r.stderr
    ov = Overlay(tmp_path, "--dir", str(tmp_path / "not-yet"))
    try:
        assert ov.get("/api/channels") == {"channels": []}
        (tmp_path / "not-yet").mkdir()
        append(tmp_path / "not-yet" / "genres.jsonl", genre("radio 2", 5.0))
        wait_until(lambda: ov.status("/api/nowplaying/radio%202") == 200, 60, "the overlay to read the new folder")
        assert ov.get("/api/nowplaying/radio%202")["visible"] is True
    finally:
        ov.stop()


def test_idle_clients_time_out_and_a_full_server_says_503_at_once(tmp_path):
    """Each connection holds a server thread: past max_clients a new one is told 503 at once instead
    of waiting for a thread, and one that says nothing is let go after idle_timeout_s."""
    ov = Overlay(tmp_path, "--dir", str(tmp_path), "--set", "overlay.idle_timeout_s=2",
                 "--set", "overlay.max_clients=3")
    streams, idle = [], None
    try:
        streams = [Events(ov.q("/events/tv1")) for _ in range(3)]      # three open event streams
        assert ov.status("/healthz") == 503
        for ev in streams:
            ev.close()
        wait_until(lambda: ov.status("/healthz") == 200, 60, "the closed streams' slots to be freed")
        idle = socket.create_connection(("127.0.0.1", ov.port), timeout=60)
        try:
            assert idle.recv(1) == b"", "closed by the server"
        except ConnectionResetError:
            pass
    finally:
        for ev in streams:
            ev.close()
        if idle is not None:
            idle.close()
        ov.stop()


def test_kafka_mode_rebuilds_the_cards_from_the_topics_and_follows_them(kafka_broker, tmp_path):
    from pipeline.kafka.client import producer
    cfg, sets = kafka_cfg(kafka_broker)
    k = cfg["kafka"]
    p = producer(cfg)

    def send(topic, rec):
        p.send(k[topic], key=rec["channel"].encode(), value=json.dumps(rec).encode())
        p.flush()

    send("topic_genres", genre("k1", 50.0))
    send("topic_nowplaying", nowplaying("k1", 51.0, title="Take Five", artist="Dave Brubeck"))
    p.send(k["topic_nowplaying"], key=b"k1", value=b"{broken")
    p.flush()
    args = ["--kafka"] + [x for s in sets for x in ("--set", s)]
    ov = Overlay(tmp_path, *args)
    try:
        wait_until(lambda: ov.status("/api/nowplaying/k1") == 200, 120,
                   lambda: "the overlay to read channel k1 from the topics: " + ov.log.read_text()[-2000:])
        s = ov.get("/api/nowplaying/k1")
        assert s["title"] == "Take Five" and s["visible"] and s["genre"] == "jazz"
        # the segments topic appears only now, as when the overlay starts before the first worker
        send("topic_segments", seg("k1", "music", 50.0, 290.0))
        wait_until(lambda: ov.get("/api/nowplaying/k1")["visible"] is False, 120,
                   "the overlay to follow the new segments topic and hide the card")
        assert not ov.get("/api/nowplaying/k1")["music"]
        assert 'onair_overlay_bad_records_total{kind="nowplaying",reason="not_json"} 1.0' in ov.metrics()
    finally:
        p.close()
        log = ov.stop()
    assert "no consumer group" in log


# ---------------------------------------------------------------- the page, in a real headless Chromium

def chromium_path() -> str:
    for name in (os.environ.get("ONAIR_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("chromium missing: deploy/install.sh installs the Debian package chromium")
    pytest.skip("chromium not found (Debian package chromium; deploy/install.sh installs it)")


class Chromium:
    """Headless Chromium driven over the DevTools protocol (one page)."""

    def __init__(self, tmp_path: Path):
        import websocket
        port = free_port()
        self.log = tmp_path / "chromium.log"
        self.proc = subprocess.Popen(
            [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--remote-debugging-port={port}",
             "--remote-debugging-address=127.0.0.1", "--window-size=1280,720", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        ws_url, deadline = None, time.monotonic() + 120
        while ws_url is None and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                ws_url = next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)
            except OSError:
                pass
            time.sleep(0.2)
        assert ws_url, "Chromium's DevTools endpoint did not come up: " + self.log.read_text()[-2000:]
        self.ws = websocket.create_connection(ws_url, timeout=20, suppress_origin=True)
        self.n = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        # a transparent page must stay transparent in the screenshot (Chromium paints white behind it otherwise)
        self.send("Emulation.setDefaultBackgroundColorOverride", color={"r": 0, "g": 0, "b": 0, "a": 0})
        # a 720p frame, as in OBS or CasparCG (the window size alone leaves room for browser chrome)
        self.send("Emulation.setDeviceMetricsOverride", width=1280, height=720, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                assert "error" not in msg, (method, msg)
                return msg["result"]

    def eval(self, expr: str):
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        wait_until(lambda: self.eval("document.readyState") == "complete", 60, f"Chromium to load {url}")

    def text(self) -> str:
        """What a viewer can read: rendered text only (a hidden card has none)."""
        return self.eval("document.body.innerText").strip()

    def wait_text(self, pred, timeout=30.0) -> str:
        """The page's text once `pred` holds for it (or after `timeout`: the caller's assertion shows it)."""
        wait_for(lambda: pred(self.text()), timeout, 0.1)
        return self.text()

    def screenshot(self, name: str) -> Path:
        # after the card's fade, in or out: the picture is what stays on air
        wait_for(lambda: self.eval("(function (c) { return c.hidden || getComputedStyle(c).opacity === '1'; })"
                                   "(document.getElementById('card'))"), 15, 0.05)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def png_alpha(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the alpha channel of an 8-bit RGB(A) PNG (stdlib only)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), (depth, ctype)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    bpp = 4 if ctype == 6 else 3
    raw, stride = zlib.decompress(idat), width * bpp
    prev, alpha = bytearray(stride), bytearray()
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        alpha += line[3::4] if bpp == 4 else b"\xff" * width
        prev = line
    return width, height, bytes(alpha)


def opaque_pixels(path: Path) -> int:
    _, _, alpha = png_alpha(path)
    return sum(1 for a in alpha if a)


def test_the_page_in_headless_chromium_shows_and_hides_the_card(tmp_path):
    chromium_path()
    out = tmp_path / "out"
    out.mkdir()
    ov = Overlay(tmp_path, "--dir", str(out), token=TOKEN)
    browser = Chromium(tmp_path)
    try:
        browser.open(ov.q("/overlay/tv1"))
        assert browser.eval("getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
        assert browser.eval("typeof update + typeof play + typeof stop") == "functionfunctionfunction"
        assert browser.wait_text(lambda t: False, 1.0) == "", "nothing on air yet"

        # music, not (yet) recognised: "Music" and the genre
        append(out / "segments.jsonl", seg("tv1", "non_music", 0.0, 100.0))
        append(out / "genres.jsonl", genre("tv1", 100.0))
        assert browser.wait_text(lambda t: "Music" in t) == "Music\nJazz"
        shot = browser.screenshot("overlay_music_genre.png")
        w, h, alpha = png_alpha(shot)
        assert (w, h) == (1280, 720) and alpha[0] == 0 and alpha[-1] == 0, "transparent around the card"
        assert opaque_pixels(shot) > 20000, "the card is drawn"

        # recognised: title and artist
        append(out / "nowplaying.jsonl", nowplaying("tv1", 101.5))
        assert browser.wait_text(lambda t: "So What" in t) == "So What\nMiles Davis"
        browser.screenshot("overlay_title.png")

        # the song ends: the card goes (after clear_s) and nothing is left on the page
        append(out / "segments.jsonl", seg("tv1", "music", 100.0, 160.0))
        assert browser.wait_text(lambda t: t == "") == ""
        assert browser.eval("document.body.dataset.state") == "hidden"
        assert opaque_pixels(browser.screenshot("overlay_hidden.png")) == 0, "a hidden card leaves a clear frame"

        # the next song, no match from the provider: "Music" again, never the last song's title
        append(out / "segments.jsonl", seg("tv1", "non_music", 160.0, 190.0))
        append(out / "genres.jsonl", genre("tv1", 190.0, g="hiphop"))
        append(out / "nowplaying.jsonl", nowplaying("tv1", 191.5, title=None))
        assert browser.wait_text(lambda t: "Music" in t) == "Music\nHip-hop"

        # CasparCG: stop() takes the card off air, play() brings it back, update() shows given data
        browser.eval("stop()")
        assert browser.wait_text(lambda t: t == "") == ""
        browser.eval("play()")
        assert browser.wait_text(lambda t: "Music" in t) == "Music\nHip-hop"
        browser.eval("update('<templateData><componentData id=\"f0\"><data id=\"text\" value=\"Live Set\"/>"
                     "</componentData><componentData id=\"f1\"><data id=\"text\" value=\"House Band\"/>"
                     "</componentData></templateData>')")
        assert browser.wait_text(lambda t: "Live" in t) == "Live Set\nHouse Band"
        browser.eval("update('{\"title\": \"Manual\", \"artist\": \"Operator\"}')")
        assert browser.wait_text(lambda t: "Manual" in t) == "Manual\nOperator"
        browser.screenshot("overlay_casparcg_update.png")

        # loaded by CasparCG with ?autoplay=0: music is on, but nothing shows before play()
        browser.open(ov.q("/overlay/tv1?autoplay=0"))
        assert browser.wait_text(lambda t: t != "", 1.5) == ""
        assert browser.eval("document.body.dataset.state") == "hidden"
        browser.eval("play()")
        assert browser.wait_text(lambda t: "Music" in t) == "Music\nHip-hop"

        # a provider title with markup in it is text, in a page's first frame too (it once ended the
        # page's JSON <script> early and the card never showed)
        append(out / "nowplaying.jsonl", nowplaying("tv1", 191.6, title="<!--<script>x()</script>", artist="A\u2028B"))
        browser.open(ov.q("/overlay/tv1"))
        assert browser.wait_text(lambda t: "<!--" in t).startswith("<!--<script>x()</script>\n")
        assert browser.eval("typeof x") == "undefined" and browser.eval("document.scripts.length") == 2
        browser.close()        # one Chromium at a time: the suite's memory peak
        # a page opened now shows the card in its first frame, before its event stream: a one-shot
        # DOM dump reads it
        dom = subprocess.run([chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", f"--user-data-dir={tmp_path / 'dump-profile'}",
                              "--dump-dom", ov.q("/overlay/tv1")], capture_output=True, text=True, timeout=60).stdout
        assert '<div id="line1">&lt;!--&lt;script&gt;x()&lt;/script&gt;</div>' in dom, dom[-2000:]
    finally:
        browser.close()
        ov.stop()
