"""Recognition requests end to end: `onair run` with and without a provider, and `onair recognize --dir`."""
import base64
import io
import json
import shutil

import av
import numpy as np

from tests.conftest import run_records
from tests.provider_servers import ProviderServer
from tests.test_run import onair

SECRET = "tok-very-secret"


def read(path):
    return run_records(path)


def test_offline_default_makes_requests_and_sends_nothing(programme, programme_run, tmp_path):
    assert programme_run["returncode"] == 0, programme_run["stderr"]
    out = programme_run["out"]
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
    metrics = programme_run["metrics"].read_text()
    assert 'onair_recognition_requests_emitted_total{channel="p",reason="new_music"} 2.0' in metrics
    # same stream at the same UTC (--start-time), same request ids (in another process): deterministic
    start = read(out / "segments.jsonl")[0]["start_utc"]
    assert reqs[0]["request_id"] == f"p:{reqs[0]['song_start_utc']}:0" and reqs[0]["clock"] == "run_start"
    r = onair("run", "--out", str(tmp_path / "again"), "--input", f"p={programme['ts']}", "--start-time", start)
    assert r.returncode == 0, r.stderr
    again = read(tmp_path / "again" / "requests.jsonl")
    assert [q["request_id"] for q in again] == [q["request_id"] for q in reqs]
    assert {q["clock"] for q in again} == {"given"}
    # a time that is not one: one line, exit status 2, nothing written
    r = onair("run", "--out", str(tmp_path / "bad"), "--input", f"p={programme['ts']}", "--start-time", "noon")
    assert r.returncode == 2 and "--start-time: not an ISO 8601 time" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad").exists()


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
    led = read(out / "ledger.jsonl")
    # each song is asked about early (8 s in, before its boundaries are confirmed) and once more when
    # confirmed; the provider is paid once per song, the confirmations come from the fingerprint index
    songs = sorted({q["song_start"] for q in reqs})
    assert len(songs) == 2 and len(server.calls) == 2
    assert all(min(q["emitted_at"] for q in reqs if q["song_start"] == s) - s < 10.0 for s in songs)
    assert len(now) == len(reqs) and [n["request_id"] for n in now] == [q["request_id"] for q in reqs]
    assert all(n["title"] == "Song Title" and n["provider"] == "audd" for n in now)
    assert sorted(e["outcome"] for e in led if e["paid"]) == ["matched", "matched"]
    assert {e["outcome"] for e in led if not e["paid"]} <= {"local_match"} and len(led) == len(reqs)
    assert sum(e["cost"] for e in led) == 2 * 0.005
    metrics = (tmp_path / "m").read_text()
    assert 'onair_recognition_spend_usd_total{channel="p",provider="audd"} 0.01' in metrics
    saved = 0.005 * (len(reqs) - 2)
    assert f'onair_recognition_saved_usd_total{{channel="p",provider="audd"}} {saved}' in metrics or saved == 0
    assert SECRET not in r.stderr + json.dumps(now) + json.dumps(led) + metrics


def test_recognize_follows_a_run_directory(programme_run, tmp_path, monkeypatch):
    assert programme_run["returncode"] == 0, programme_run["stderr"]
    out = tmp_path / "out"
    shutil.copytree(programme_run["out"], out, symlinks=True)   # the run's folder, which recognize adds to
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
    assert len(read(out / "nowplaying.jsonl")) == 2        # the second pass writes nothing again
    assert sum(e["paid"] for e in read(out / "ledger.jsonl")) == 2


def _rms_to(a, db):
    return a * (10 ** (db / 20) / (np.sqrt(np.mean(a * a)) + 1e-12))


def test_an_advert_on_a_music_bed_costs_no_request(shared, tmp_path):
    """An advert (a voice over a quiet music bed, as broadcast_sim makes them) then a song: the
    music head may call the bed music; the talk-over head flags it and only the song is asked."""
    from pipeline import config
    from pipeline.training.audiofile import frames_of, read_audio
    from pipeline.heads import load_talkover_head
    from pipeline.models import load_embedder
    from tests.conftest import load_clip, write_ts
    clips = shared / "data" / "clips"
    talk_files = sorted((clips / "speech").glob("debian-fillets-ng__speech__*"))[40:90]
    talk = np.concatenate([load_clip(p) for p in talk_files])
    bed = load_clip(clips / "music" / "debian-widelands__music__ingame_02.opus", seconds=30.0)
    song = load_clip(clips / "music" / "debian-0ad__music__Land_Between_Rivers.opus", seconds=45.0)
    assert len(talk) >= 30 * 48000
    advert = _rms_to(talk[:30 * 48000], -20) + _rms_to(bed, -28)
    ts = write_ts(tmp_path / "advert_song.ts", np.concatenate([advert, _rms_to(song, -18)]).astype(np.float32))

    cfg = config.load()
    embedder = load_embedder(cfg)
    head = load_talkover_head(cfg, embedder.name, embedder.dim)
    assert head is not None, "the committed talk-over head is missing"
    frames = frames_of(read_audio(str(ts)))
    p = head.predict_proba(embedder.embed(frames).embeddings)[:, head.classes.index("speech_over_music")]
    t = np.arange(len(p)) * 0.96
    in_advert, in_song = p[t + 0.975 <= 29.5], p[t >= 31.0]
    print("flagged: advert %.2f, song %.2f" % (np.mean(in_advert > 0.5), np.mean(in_song > 0.5)))
    assert np.mean(in_advert > 0.5) >= 0.4 and np.mean(in_song > 0.5) <= 0.05, (in_advert.round(2), in_song.round(2))

    out = tmp_path / "out"
    r = onair("run", "--out", str(out), "--input", f"a={ts}")
    assert r.returncode == 0, r.stderr
    reqs = read(out / "requests.jsonl")
    assert len(reqs) == 1, reqs
    assert 30.0 <= reqs[0]["clip_start"] and reqs[0]["clip_end"] <= 75.0
    # what the head buys: with it ignored, the bed reads as music long enough to pay for the advert
    r = onair("run", "--out", str(tmp_path / "blind"), "--input", f"a={ts}", "--set", "debounce.talkover_threshold=1")
    assert r.returncode == 0, r.stderr
    assert any(q["clip_end"] <= 30.0 for q in read(tmp_path / "blind" / "requests.jsonl"))
