"""A live UDP MPEG-TS source that goes silent and comes back: the watchdog
restarts it, it reconnects, the outage stays a gap in stream time, and the
channel recovers without a restart of the process."""
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline import config
from pipeline.metrics import Metrics
from pipeline.direct import DirectRun
from tests.conftest import run_records, write_ts
from tests.waiting import wait_until


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def udp_bound(port: int) -> bool:
    """Whether a socket on this machine is bound to UDP `port` (a live source listening: datagrams
    sent before are lost)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(int(row.split()[1].rsplit(":", 1)[1], 16) == port for row in rows):
            return True
    return False


def send_ts(data: bytes, port: int, seconds: float, speed: float = 4.0):
    """Send TS packets by UDP, 7 per datagram, at `speed` x the stream's real time."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    step = 188 * 7
    n = len(data) // step
    t0 = time.monotonic()
    for i in range(n):
        sock.sendto(data[i * step:(i + 1) * step], ("127.0.0.1", port))
        due = t0 + (i + 1) / n * seconds / speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sock.close()


def test_udp_source_stalls_reconnects_and_recovers(programme, tmp_path):
    seconds = 20.0
    audio = programme["audio"][: int(seconds * 48000)]
    part = write_ts(tmp_path / "live.ts", audio, "aac").read_bytes()
    port = free_udp_port()
    cfg = config.load(None, ["source.watchdog_s=2", "source.read_timeout_s=1", "source.open_timeout_s=3",
                             "source.reconnect_min_s=0.2", "source.reconnect_max_s=1", "embedding.max_wait_ms=5"])
    metrics = Metrics()
    run = DirectRun([("live", f"udp://127.0.0.1:{port}?fifo_size=1000000&overrun_nonfatal=1")], tmp_path / "out",
                    cfg, metrics)
    value = lambda name, **labels: metrics.registry.get_sample_value(name, labels)  # noqa: E731
    reconnects = lambda: value("onair_source_reconnects_total", channel="live") or 0  # noqa: E731
    runner = threading.Thread(target=run.run, daemon=True)
    runner.start()
    wait_until(lambda: udp_bound(port), 120, f"the source to listen on UDP port {port}")
    send_ts(part, port, seconds)           # first 20 s of programme
    silent_from = time.monotonic()
    # silence: the watchdog/read timeout fires, the source reconnects
    wait_until(lambda: reconnects() >= 1, 60, "the stalled source to reconnect")
    time.sleep(max(0.0, silent_from + 5.0 - time.monotonic()))   # the scenario: a 5 s outage at least
    wait_until(lambda: udp_bound(port), 60, "the reconnected source to listen again")
    before = reconnects()
    send_ts(part, port, seconds)           # the feed comes back
    # read to its end: the source stalls again once it has decoded all of it
    wait_until(lambda: reconnects() > before, 60, "the source to read the second feed and stall again")
    run.stop.set()
    runner.join(timeout=60)
    assert not runner.is_alive()

    assert value("onair_source_reconnects_total", channel="live") >= 1
    decoded = value("onair_audio_decoded_seconds_total", channel="live")
    assert 30.0 < decoded <= 41.0, decoded
    assert value("onair_discontinuities_total", channel="live", kind="gap") >= 1
    segs = run_records(tmp_path / "out" / "segments.jsonl")
    assert segs and segs[0]["start"] == 0.0
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"]
    # the outage is in stream time: the timeline is longer than the audio it holds
    assert segs[-1]["end"] > decoded + 2.0
    assert any(s["label"] == "music" for s in segs) and np.isfinite(segs[-1]["end"])
    # ... and it is data: a no_signal segment in UTC on the live clock, counted
    from pipeline.clock import parse_iso
    gaps = [s for s in segs if s["label"] == "no_signal"]
    assert gaps and all(s["clock"] == "live" for s in segs)
    assert sum(s["end"] - s["start"] for s in gaps) >= 4.0
    # the feed came 4x faster than real time, so the receive clock compresses the audio's UTC; the
    # outage is real time, and UTC runs on from segment to segment without a step back
    for a, b in zip(segs, segs[1:]):
        assert a["end_utc"] == b["start_utc"] and parse_iso(a["start_utc"]) <= parse_iso(a["end_utc"])
    for s in gaps:
        assert abs((parse_iso(s["end_utc"]) - parse_iso(s["start_utc"])) - (s["end"] - s["start"])) < 1.0
    assert value("onair_no_signal_seconds_total", channel="live") >= 4.0


def hls_dir(tmp_path, audio, seg_s=4.0):
    """A VOD HLS playlist of MPEG-TS segments with continuous timestamps."""
    d = tmp_path / "hls"
    d.mkdir()
    n = int(seg_s * 48000)
    names = []
    for k in range(0, len(audio) // n):
        name = f"seg{k}.ts"
        write_ts(d / name, audio[k * n:(k + 1) * n], "aac", pts_offset=k * n)
        names.append(name)
    (d / "index.m3u8").write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:0\n"
                                  + "".join(f"#EXTINF:{seg_s:.3f},\n{x}\n" for x in names) + "#EXT-X-ENDLIST\n")
    return d, len(names) * seg_s


def test_hls_over_http(programme, tmp_path):
    import functools
    import http.server
    d, seconds = hls_dir(tmp_path, programme["audio"][: 24 * 48000])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = config.load(None, ["source.live=false"])
        metrics = Metrics()
        url = f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
        res = DirectRun([("hls", url)], tmp_path / "out", cfg, metrics).run()
    finally:
        server.shutdown()
    assert res["hls"].ok
    decoded = metrics.registry.get_sample_value("onair_audio_decoded_seconds_total", {"channel": "hls"})
    assert abs(decoded - seconds) < 0.5
    assert metrics.registry.get_sample_value("onair_discontinuities_total",
                                             {"channel": "hls", "kind": "discontinuity"}) is None


def test_protocol_missing_from_the_build_fails_once_not_forever(tmp_path):
    cfg = config.load(None, ["source.reconnect_min_s=0.1"])
    t0 = time.monotonic()
    res = DirectRun([("s", "srt://127.0.0.1:9")], tmp_path / "out", cfg).run()
    assert not res["s"].ok and res["s"].reason in ("unsupported_protocol", "open_failed")
    assert time.monotonic() - t0 < 20


# one handler serves both; the default suite runs Ctrl-C, the one that used to lose the open segment
@pytest.mark.parametrize("sig", [pytest.param("SIGTERM", marks=pytest.mark.slow), "SIGINT"])
def test_live_run_ends_cleanly_on_sigterm_and_ctrl_c(programme, tmp_path, sig):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO
    from pipeline.kafka.broker import free_port
    part = write_ts(tmp_path / "live.ts", programme["audio"][: 30 * 48000], "aac").read_bytes()
    port, mport = free_udp_port(), free_port()
    out = tmp_path / "out"
    log = open(tmp_path / "run.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--out", str(out),
                             "--input", f"live=udp://127.0.0.1:{port}", "--set", "source.read_timeout_s=1",
                             "--metrics-port", str(mport)], cwd=REPO, stderr=log, text=True)

    def decoded() -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        except OSError:
            return 0.0
        m = re.search(r'^onair_audio_decoded_seconds_total\{channel="live"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    try:
        # the model loads, then the source opens its socket
        wait_until(lambda: udp_bound(port) or proc.poll() is not None, 180, f"`onair run` to listen on UDP {port}")
        send_ts(part, port, 30.0, speed=6.0)
        wait_until(lambda: decoded() >= 28.0 or proc.poll() is not None, 60,
                   lambda: f"`onair run` to decode the 30 s sent (decoded {decoded():.1f} s)")
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
    finally:
        proc.kill()
        log.seek(0)
        err = log.read()
        log.close()
    assert proc.returncode == 0, err
    segs = run_records(out / "segments.jsonl")
    assert segs and segs[0]["start"] == 0.0 and segs[-1]["end"] > 20.0
    # a clean stop: nothing is reconnected, and the summary counts the audio that was decoded
    after = err[err.index(f"{sig}: stopping"):]
    assert "reconnecting" not in after and "Traceback" not in err
    audio = float(re.search(r"channel live: ok, ([0-9.]+) s of audio", err).group(1))
    assert audio >= 28.0
    # the open genre record was closed at the stop: the overlay must not go on showing music
    genres = run_records(out / "genres.jsonl")
    if genres:
        assert genres[-1]["segment_end"] is not None and genres[-1]["segment_end_utc"] is not None
