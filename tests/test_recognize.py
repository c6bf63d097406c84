"""Recognition against local servers speaking the ACRCloud and AudD wire formats."""
import base64
import json
import logging
import threading
import time

import numpy as np
import pytest

from operators.recognition.budget import Budget, Caps
from operators.audio.clip import audio_field
from pipeline import config
from pipeline.clock import day_of
from pipeline.metrics import Metrics
from pipeline.recognition.stage import follow_dir, make_recognizer
from tests.provider_servers import ProviderServer

SECRET = "s3cr3t-never-logged"
KEY = "key-1234"


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def request(i=0, channel="ch1"):
    samples = (np.sin(np.arange(16000 * 10) * 0.05 + i) * 8000).astype(np.int16)
    return {"request_id": f"{channel}:{i}.00:0", "channel": channel, "clip_start": float(i),
            "clip_end": float(i) + 10, "emitted_at": i + 20.0, "song_start": float(i),
            "audio": audio_field(samples, "flac")}


@pytest.fixture(params=["acrcloud", "audd"])
def provider(request, monkeypatch, tmp_path):
    kind = request.param
    server = ProviderServer(kind, SECRET, KEY, slow_s=2.5)
    if kind == "acrcloud":
        monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", KEY)
        monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", SECRET)
        sets = [f"recognition.acrcloud_url={server.url}"]
    else:
        (tmp_path / "token").write_text(SECRET + "\n")           # a key from a file named in config
        sets = [f"recognition.audd_url={server.url}", f"recognition.audd_api_token_file={tmp_path / 'token'}"]
    # the provider path itself: its clips are tones alike enough for the fingerprint index to answer
    # them (tests/test_fingerprints.py covers that), so it is off here
    cfg = config.load(None, [f"recognition.provider={kind}", "recognition.backoff_s=0.05", "identity.enabled=false",
                             "recognition.timeout_s=1", "recognition.rate_per_s=1000", *sets])
    yield kind, server, cfg
    server.close()


def make(cfg, tmp_path, clock=None, metrics=None):
    return make_recognizer(cfg, tmp_path / "ledger.jsonl", metrics or Metrics(), clock or Clock())


def ledger(tmp_path):
    return [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]


def test_match_no_match_and_the_ledger(provider, tmp_path):
    kind, server, cfg = provider
    metrics = Metrics()
    rec = make(cfg, tmp_path, metrics=metrics)
    server.script = ["match", "no_match"]
    np1 = rec.handle(request(0))
    assert np1["title"] == "Song Title" and np1["artist"] == "The Artist" and np1["provider"] == kind
    assert set(np1) >= {"channel", "request_id", "title", "artist", "album", "isrc", "provider", "score",
                        "started_at"}
    assert rec.handle(request(1)) is None
    entries = ledger(tmp_path)
    assert [e["outcome"] for e in entries] == ["matched", "no_match"]
    price = cfg["recognition"][f"{kind}_price"]
    assert sum(e["cost"] for e in entries) == pytest.approx(2 * price)
    spend = metrics.registry.get_sample_value("onair_recognition_spend_usd_total", {"channel": "ch1",
                                                                                  "provider": kind})
    assert spend == pytest.approx(2 * price)
    sent_audio = metrics.registry.get_sample_value("onair_recognition_audio_sent_seconds_total",
                                                   {"channel": "ch1", "provider": kind})
    assert sent_audio == pytest.approx(20.0)
    # the clip arrived as FLAC, whole
    f = server.calls[0]["fields"]
    blob = f["sample"] if kind == "acrcloud" else f["file"]
    assert blob[:4] == b"fLaC" and blob == base64.b64decode(request(0)["audio"]["data"])


def test_retries_on_500_429_and_timeouts_then_pays_once(provider, tmp_path):
    kind, server, cfg = provider
    rec = make(cfg, tmp_path)
    server.script = ["500", "429", "slow", "match"]
    assert rec.handle(request(0))["title"] == "Song Title"
    assert [c["behaviour"] for c in server.calls] == ["500", "429", "slow", "match"]
    entries = ledger(tmp_path)
    assert len(entries) == 1 and entries[0]["paid"] and entries[0]["outcome"] == "matched"


def test_giving_up_costs_nothing(provider, tmp_path):
    kind, server, cfg = provider
    cfg["recognition"]["max_retries"] = 1
    rec = make(cfg, tmp_path)
    server.default = "500"
    assert rec.handle(request(0)) is None
    assert ledger(tmp_path)[0]["outcome"] == "error" and not ledger(tmp_path)[0]["paid"]
    # and the failed call did not use up budget
    assert rec.budget.check("ch1", 0.0) is None


@pytest.mark.parametrize("answer", ["not_json", "wrong_shape", "null_entry"])
def test_an_unusable_200_is_billed_once_and_never_retried_or_paid_again(provider, tmp_path, answer):
    """HTTP 200 is what a provider bills. A body that is not JSON, JSON of the wrong shape, or a
    result list holding null: one `error` ledger line that costs, no retry, and a restart (or a
    redelivery) does not send the request again."""
    kind, server, cfg = provider
    metrics = Metrics()
    rec = make(cfg, tmp_path, metrics=metrics)
    server.script = [answer]
    assert rec.handle(request(0)) is None
    assert len(server.calls) == 1, "no retry after a billed call"
    [e] = ledger(tmp_path)
    price = cfg["recognition"][f"{kind}_price"]
    assert e["outcome"] == "error" and e["paid"] and e["cost"] == price and "200" in e["detail"]
    assert metrics.registry.get_sample_value("onair_recognition_spend_usd_total",
                                             {"channel": "ch1", "provider": kind}) == pytest.approx(price)
    for again in (rec, make(cfg, tmp_path)):
        assert again.handle(request(0)) is None
    assert len(server.calls) == 1 and len(ledger(tmp_path)) == 1
    assert make(cfg, tmp_path).budget.check("ch1", 0.0) is None      # the spend counts toward the caps


def test_the_isrc_comes_from_the_providers_metadata(provider, tmp_path):
    kind, server, cfg = provider
    assert make(cfg, tmp_path).handle(request(0))["isrc"] in ("GBAAA0000001", "GBAAA0000002")
    if kind == "audd":
        assert set(server.calls[0]["fields"]["return"].split(",")) >= {"apple_music", "spotify"}


def test_the_providers_genres_are_mapped_and_kept_as_given_with_the_usage(provider, tmp_path):
    kind, _, cfg = provider
    rec = make(cfg, tmp_path).handle({**request(0), "usage": "background", "usage_confidence": 0.8})
    assert (rec["usage"], rec["usage_confidence"]) == ("background", 0.8)     # as the request says
    got = rec["genres"]
    given = {"acrcloud": ["Hip Hop", "R&B"], "audd": ["Hip-Hop/Rap", "Music"]}[kind]
    assert got == [{"genre": "hiphop", "given": given[0], "source": kind},
                   {"genre": None, "given": given[1], "source": kind}]   # not in the taxonomy: kept


def test_a_redelivered_request_is_never_paid_twice_even_after_a_restart(provider, tmp_path):
    kind, server, cfg = provider
    rec = make(cfg, tmp_path)
    rec.handle(request(0))
    assert rec.handle(request(0))["title"] == "Song Title"
    again = make(cfg, tmp_path)                      # a new process: cache and budget from the ledger
    assert again.handle(request(0))["title"] == "Song Title"
    assert server.paid_calls() == 1
    assert sum(e["paid"] for e in ledger(tmp_path)) == 1


def test_budget_caps_hold_under_a_burst_from_many_channels(provider, tmp_path):
    kind, server, cfg = provider
    cfg["recognition"].update(channel_hour_requests=3, channel_day_requests=None, global_day_requests=25,
                              global_day_money=None)
    clock = Clock()
    metrics = Metrics()
    rec = make(cfg, tmp_path, clock, metrics)
    reqs = [request(i, f"ch{c}") for c in range(12) for i in range(5)]
    threads = [threading.Thread(target=rec.handle, args=(r,)) for r in reqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = ledger(tmp_path)
    paid = [e for e in entries if e["paid"]]
    assert len(paid) == 25 == server.paid_calls()                 # the global daily cap
    for c in range(12):
        assert sum(1 for e in paid if e["channel"] == f"ch{c}") <= 3   # the per-channel hourly cap
    skipped = [e for e in entries if e["outcome"] == "budget_skipped"]
    assert len(skipped) == 60 - 25 and all(e["cost"] == 0 for e in skipped)
    total_skipped = sum(metrics.registry.get_sample_value("onair_recognition_requests_total",
                                                          {"channel": f"ch{c}", "provider": kind,
                                                           "outcome": "budget_skipped"}) or 0 for c in range(12))
    assert total_skipped == 35
    # a restart reading the same requests again (recognize --dir) ledgers nothing twice
    again = make(cfg, tmp_path, clock)
    for r in reqs:
        again.handle(r)
    assert len(ledger(tmp_path)) == len(entries) and server.paid_calls() == 25
    # the next hour a capped channel may spend again, but the day's global cap still holds
    clock.t += 3600
    assert rec.budget.check("ch0", 0.0) == "global_day_requests"
    clock.t += 86400
    assert rec.budget.check("ch0", 0.0) is None


def test_money_caps(tmp_path):
    b = Budget(Caps(channel_day_money=0.01), Clock())
    for _ in range(4):
        assert b.check("a", 0.0025) is None
        b.charge("a", 0.0025)
    assert b.check("a", 0.0025) == "channel_day_money"
    assert b.check("b", 0.0025) is None


def test_credentials_never_reach_logs_or_records(provider, tmp_path, caplog):
    kind, server, cfg = provider
    caplog.set_level(logging.DEBUG)
    cfg["recognition"]["max_retries"] = 1
    rec = make(cfg, tmp_path)
    server.script = ["match", "500", "500"]
    records = [rec.handle(request(0)), rec.handle(request(1))]
    text = caplog.text + (tmp_path / "ledger.jsonl").read_text() + json.dumps(records)
    assert SECRET not in text and KEY not in text
    assert server.calls, "the provider was called"


def test_missing_credentials_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("AUDD_API_TOKEN", raising=False)
    cfg = config.load(None, ["recognition.provider=audd"])
    with pytest.raises(config.ConfigError, match="AUDD_API_TOKEN"):
        make_recognizer(cfg, tmp_path / "l.jsonl")


def test_recognize_dir_parks_bad_lines_and_goes_on_after_restarts(tmp_path, monkeypatch, caplog):
    """Malformed request lines (not JSON, not an object, nested 5 000 deep, no audio, audio that is
    not base64) and ledger lines of the wrong shape: each named by file and line, parked once,
    counted; every good request after them is sent; a restart sends, writes and parks nothing again."""
    server = ProviderServer("acrcloud", SECRET, KEY)
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", KEY)
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", SECRET)
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={server.url}",
                             "identity.enabled=false", "recognition.rate_per_s=1000"])
    # records without a UTC time (these requests) and what is written of them go under today's
    # folder: a fixed date here failed from the day after it was written
    day = tmp_path / "out" / day_of(time.time())
    day.mkdir(parents=True)
    no_audio = {k: v for k, v in request(5).items() if k != "audio"}
    bad_b64 = {**request(6), "audio": {**request(6)["audio"], "data": "@@ not base64 @@"}}
    lines = [json.dumps(request(0)), '{"request_id": ', json.dumps(no_audio), "[1, 2]", json.dumps(bad_b64),
             '{"a":' * 5000 + "1" + "}" * 5000, json.dumps(request(1)), json.dumps(request(2))]
    (day / "requests.jsonl").write_text("\n".join(lines) + "\n")
    (day / "ledger.jsonl").write_text('[]\n{"request_id": "x", "channel": "ch1", "outcome": "matched", '
                                      '"paid": true, "cost": "0.0025", "ts": 1}\n')
    metrics = Metrics()
    try:
        with caplog.at_level(logging.WARNING, logger="onair.recognize"):
            assert follow_dir(cfg, tmp_path / "out", metrics, idle_exit_s=0.5) == 3
            assert follow_dir(cfg, tmp_path / "out", Metrics(), idle_exit_s=0.5) == 3     # a restart
    finally:
        server.close()
    assert server.paid_calls() == 3
    parked = [json.loads(x) for x in (day / "dead_letters.jsonl").read_text().splitlines()]
    assert [d["line"] for d in parked] == [2, 3, 4, 5, 6] and all(d["file"].endswith("requests.jsonl") for d in parked)
    assert parked[3]["record"] == lines[4], "the line is kept whole"
    assert "audio" in parked[1]["error"] and "base64" in parked[3]["error"] and "deep" in parked[4]["error"]
    assert metrics.registry.get_sample_value("onair_recognition_bad_requests_total") == 5
    assert len((day / "nowplaying.jsonl").read_text().splitlines()) == 3
    assert "ledger.jsonl:2: ledger line skipped: field 'cost'" in caplog.text
    assert "requests.jsonl:3: request skipped" in caplog.text
