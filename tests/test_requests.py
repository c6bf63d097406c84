"""Recognition requests end to end: `onair run` with and without a provider, and `onair recognize --dir`."""
import base64
import io
import json

import av
import numpy as np

from tests.provider_servers import ProviderServer
from tests.test_run import onair

SECRET = "tok-very-secret"


def read(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_offline_default_makes_requests_and_sends_nothing(programme, tmp_path):
    out = tmp_path / "out"
    r = onair("run", "--out", str(out), "--input", f"p={programme['ts']}", "--metrics-out", str(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    reqs = read(out / "requests.jsonl")
    assert len(reqs) == 2, reqs                   # two 25 s songs, one request each
    truth = programme["truth"]
    for req, (s, e, _) in zip(reqs, [truth[0], truth[2]]):
        assert set(req) >= {"request_id", "channel", "clip_start", "clip_end", "emitted_at", "audio"}
        assert s <= (req["clip_start"] + req["clip_end"]) / 2 <= e
        assert abs(req["clip_end"] - req["clip_start"] - 10.0) < 0.01
        assert req["emitted_at"] >= req["clip_end"]
        audio = req["audio"]
        assert audio["codec"] == "flac" and audio["sample_rate"] == 16000
        with av.open(io.BytesIO(base64.b64decode(audio["data"]))) as c:
            n = sum(f.samples for f in c.decode(audio=0))
        assert n == 160000
    assert read(out / "nowplaying.jsonl") == [] and not (out / "ledger.jsonl").exists()
    metrics = (tmp_path / "m").read_text()
    assert 'onair_recognition_requests_emitted_total{channel="p",reason="new_music"} 2.0' in metrics
    # same stream, same request ids
    r = onair("run", "--out", str(tmp_path / "again"), "--input", f"p={programme['ts']}")
    assert [q["request_id"] for q in read(tmp_path / "again" / "requests.jsonl")] == [q["request_id"] for q in reqs]


def test_run_with_a_provider_writes_nowplaying_and_the_ledger(programme, tmp_path, monkeypatch):
    server = ProviderServer("audd", SECRET)
    monkeypatch.setenv("AUDD_API_TOKEN", SECRET)
    try:
        out = tmp_path / "out"
        r = onair("run", "--out", str(out), "--input", f"p={programme['ts']}", "--set", "recognition.provider=audd",
                  "--set", f"recognition.audd_url={server.url}", "--metrics-out", str(tmp_path / "m"))
    finally:
        server.close()
    assert r.returncode == 0, r.stderr
    now = read(out / "nowplaying.jsonl")
    reqs = read(out / "requests.jsonl")
    assert len(now) == len(reqs) == len(server.calls) == 2
    assert [n["request_id"] for n in now] == [q["request_id"] for q in reqs]
    assert all(n["title"] == "Song Title" and n["provider"] == "audd" for n in now)
    led = read(out / "ledger.jsonl")
    assert sum(e["cost"] for e in led) == 2 * 0.005
    metrics = (tmp_path / "m").read_text()
    assert 'onair_recognition_spend_usd_total{channel="p",provider="audd"} 0.01' in metrics
    assert SECRET not in r.stderr + json.dumps(now) + json.dumps(led) + metrics


def test_recognize_follows_a_run_directory(programme, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert onair("run", "--out", str(out), "--input", f"p={programme['ts']}").returncode == 0
    server = ProviderServer("audd", SECRET)
    monkeypatch.setenv("AUDD_API_TOKEN", SECRET)
    try:
        sets = ["--set", "recognition.provider=audd", "--set", f"recognition.audd_url={server.url}"]
        r = onair("recognize", "--dir", str(out), "--exit-when-idle", "1", *sets)
        assert r.returncode == 0, r.stderr
        r = onair("recognize", "--dir", str(out), "--exit-when-idle", "1", *sets)   # run again: nothing paid twice
        assert r.returncode == 0, r.stderr
    finally:
        server.close()
    assert len(server.calls) == 2
    assert len(read(out / "nowplaying.jsonl")) == 4        # the second pass re-announces from the cache
    assert sum(e["paid"] for e in read(out / "ledger.jsonl")) == 2
