"""A live UDP MPEG-TS source that goes silent and comes back: the watchdog
restarts it, it reconnects, the outage stays a gap in stream time, and the
channel recovers without a restart of the process."""
import socket
import threading
import time

import numpy as np

from pipeline import config
from pipeline.metrics import Metrics
from pipeline.direct import DirectRun
from tests.conftest import write_ts


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
    runner = threading.Thread(target=run.run, daemon=True)
    runner.start()
    time.sleep(1.0)
    send_ts(part, port, seconds)           # first 20 s of programme
    time.sleep(6.0)                        # silence: the watchdog/read timeout fires, the source reconnects
    send_ts(part, port, seconds)           # the feed comes back
    time.sleep(3.0)
    run.stop.set()
    runner.join(timeout=30)
    assert not runner.is_alive()

    value = lambda name, **labels: metrics.registry.get_sample_value(name, labels)  # noqa: E731
    assert value("onair_source_reconnects_total", channel="live") >= 1
    decoded = value("onair_audio_decoded_seconds_total", channel="live")
    assert 30.0 < decoded <= 41.0, decoded
    assert value("onair_discontinuities_total", channel="live", kind="gap") >= 1
    import json
    segs = [json.loads(x) for x in (tmp_path / "out" / "segments.jsonl").read_text().splitlines()]
    assert segs and segs[0]["start"] == 0.0
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"]
    # the outage is in stream time: the timeline is longer than the audio it holds
    assert segs[-1]["end"] > decoded + 2.0
    assert any(s["label"] == "music" for s in segs) and np.isfinite(segs[-1]["end"])


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


def test_live_run_ends_cleanly_on_sigterm(programme, tmp_path):
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO
    part = write_ts(tmp_path / "live.ts", programme["audio"][: 30 * 48000], "aac").read_bytes()
    port = free_udp_port()
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--out", str(out),
                             "--input", f"live=udp://127.0.0.1:{port}", "--set", "source.read_timeout_s=1"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4.0)                  # model load
        send_ts(part, port, 30.0, speed=6.0)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    segs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
    assert segs and segs[0]["start"] == 0.0 and segs[-1]["end"] > 20.0
