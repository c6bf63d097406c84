"""Audio identity: landmark fingerprints, the index (SQLite and a real PostgreSQL), the recognizer
answering repeats from it, the engine's checks on a channel's own audio, `onair fingerprints`."""
import base64
import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from operators.audio.clip import audio_field
from operators.decisions.debounce import DebounceParams, Debouncer
from operators.fingerprint.landmarks import FRAME_S, FingerprintParams, best_match, fingerprint
from pipeline import config
from pipeline.identity.index import AudioIndex, IdentityParams
from pipeline.identity.live import LiveIdentity
from pipeline.identity.store import PostgresStore, SqliteStore
from pipeline.metrics import Metrics
from pipeline.recognition.stage import make_recognizer
from tests.conftest import REPO, load_clip
from tests.pg_server import PostgresServer, binaries
from tests.provider_servers import ProviderServer

SR = 16000
SONGS = ("debian-widelands__music__ingame_02.opus", "debian-0ad__music__Land_Between_Rivers.opus",
         "debian-supertuxkart__music__West.opus")


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def songs(shared):
    """Three recordings, 16 kHz float, and a copy of each as another channel airs it: 10 dB
    quieter with hiss."""
    rng = np.random.default_rng(7)
    out = []
    for name in SONGS:
        x = load_clip(shared / "data" / "clips" / "music" / name, rate=SR, seconds=60.0)
        aired = 0.33 * x + 0.003 * rng.standard_normal(len(x)).astype(np.float32)
        out.append((x, aired.astype(np.float32)))
    return out


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0


def cut(x, a, b):
    return x[int(a * SR):int(b * SR)]


def request(rid, channel, audio, clip_start, song_start):
    samples = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return {"request_id": f"{channel}:{rid}:0", "channel": channel, "clip_start": clip_start,
            "clip_end": clip_start + len(audio) / SR, "emitted_at": clip_start + len(audio) / SR,
            "song_start": song_start, "audio": audio_field(samples, "flac")}


# -- landmarks and the match

def test_a_copy_matches_at_its_offset_and_other_music_does_not(songs):
    p = FingerprintParams()
    index = [fingerprint(x, p) for x, _ in songs]
    rh = np.concatenate([h for h, _ in index])
    items = np.concatenate([np.full(len(h), i, np.int64) for i, (h, _) in enumerate(index)])
    rt = np.concatenate([t for _, t in index])
    for i, (_, aired) in enumerate(songs):
        q = cut(aired, 21.3, 29.3)
        m = best_match(*fingerprint(q, p), rh, items, rt, int(8 / 0.0232), p)
        assert m is not None and m.item == i and m.offset_s == pytest.approx(21.3, abs=0.1)
        assert m.aligned > 3 * max(m.runner_up, 10)
    # music not in the index, and noise, match nothing
    rng = np.random.default_rng(1)
    other = songs[2][1][: 20 * SR]
    h2 = np.concatenate([h for h, _ in index[:2]])
    i2 = np.concatenate([np.full(len(h), i, np.int64) for i, (h, _) in enumerate(index[:2])])
    t2 = np.concatenate([t for _, t in index[:2]])
    assert best_match(*fingerprint(cut(other, 5, 13), p), h2, i2, t2, 345, p) is None
    noise = (0.1 * rng.standard_normal(8 * SR)).astype(np.float32)
    assert best_match(*fingerprint(noise, p), rh, items, rt, 345, p) is None
    assert fingerprint(np.zeros(8 * SR, np.float32), p)[0].size == 0      # silence has no landmarks


def test_a_clip_mostly_of_something_else_is_not_a_match(songs):
    """2 s of a known recording in 8 s of unknown music: enough hashes, too little of the clip."""
    p = FingerprintParams()
    h, t = fingerprint(songs[0][0], p)
    q = np.concatenate([cut(songs[0][1], 30, 32), cut(songs[2][1], 10, 16)])
    qh, qt = fingerprint(q, p)
    assert best_match(qh, qt, h, np.zeros(len(h), np.int64), t, 345, p) is None
    loose = FingerprintParams(min_aligned=5, min_coverage=0.0)
    assert best_match(qh, qt, h, np.zeros(len(h), np.int64), t, 345, loose) is not None


def test_partial_entries_of_one_item_count_together_where_each_alone_is_too_little(songs):
    """Two entries hold 10-14 s and 14-18 s of one recording, each in its own time base; a 10 s
    query over 9.5-19.5 s spans 4 s of each: neither alone covers half of it, both together do,
    and the match names one entry at its own offset. Unrelated entries are not counted with them."""
    p = FingerprintParams()
    x, aired = songs[0]
    (ha, ta), (hb, tb) = fingerprint(cut(x, 10, 14), p), fingerprint(cut(x, 14, 18), p)
    ho, to = fingerprint(cut(songs[1][0], 10, 30), p)
    rh = np.concatenate([ha, hb, ho])
    items = np.concatenate([np.full(len(ha), 11), np.full(len(hb), 12), np.full(len(ho), 13)]).astype(np.int64)
    rt = np.concatenate([ta, tb, to]).astype(np.int64)
    qh, qt = fingerprint(cut(aired, 9.5, 19.5), p)
    frames = int(10 / 0.0232)
    assert best_match(qh, qt, rh, items, rt, frames, p) is None

    def groups(ids):        # 11 and 12 placed in item 10 (its time: the recording's), 13 alone
        place = {11: (10, 10.0), 12: (10, 14.0)}
        return (np.array([place.get(int(i), (int(i), 0))[0] for i in ids]),
                np.array([int(round(place.get(int(i), (0, 0.0))[1] / 0.02322)) for i in ids]))
    m = best_match(qh, qt, rh, items, rt, frames, p, groups)
    assert m is not None and m.item in (11, 12) and m.coverage >= 0.7
    assert m.offset_s + (10.0 if m.item == 11 else 14.0) == pytest.approx(9.5, abs=0.1)


def store_groups_entries_placed_in_their_canonical_item(store):
    now = "2026-12-06T10:00:00.000Z"
    canon = store.new_item("unknown", now, rec_offset_s=0.0)
    placed = store.new_item("indexed", now, same_as=canon, rec_offset_s=-3.5)
    unplaced = store.new_item("indexed", now, same_as=canon)
    alone = store.new_item("unknown", now, rec_offset_s=0.0)
    g = store.groups([canon, placed, unplaced, alone])
    assert g == {placed: (canon, -3.5)}


def test_the_store_groups_entries_placed_in_their_canonical_item(tmp_path):
    store = SqliteStore(tmp_path / "fp.sqlite")
    store.create()
    store_groups_entries_placed_in_their_canonical_item(store)


# -- the recognizer with the index

@pytest.fixture
def acr(monkeypatch):
    server = ProviderServer("acrcloud", "secret", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", "secret")
    yield server
    server.close()


def recognizer(acr, tmp_path, clock, metrics, *sets):
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={acr.url}",
                             "recognition.rate_per_s=1000", "recognition.backoff_s=0.01", *sets])
    return make_recognizer(cfg, tmp_path / "ledger.jsonl", metrics, clock)


def ledger(tmp_path):
    return [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]


def test_repeats_are_answered_from_the_index_and_unknown_items_are_paid_once(songs, acr, tmp_path):
    clock, metrics = Clock(), Metrics()
    acr.script = ["match", "no_match"]              # song 0 is known to the provider, song 1 is not
    rec = recognizer(acr, tmp_path, clock, metrics)
    first = rec.handle(request("2026-12-06T10:00:00.000Z", "a", cut(songs[0][0], 1.5, 11.5), 1.5, 0.0))
    assert first["title"] == "Song Title" and first["identified_by"] == "provider"
    assert rec.handle(request("2026-12-06T10:05:00.000Z", "a", cut(songs[1][0], 2, 12), 302.0, 300.0)) is None
    assert acr.paid_calls() == 2
    # another channel airs both again, at other offsets, quieter and with hiss: nothing is paid
    again = rec.handle(request("2026-12-06T11:00:00.000Z", "b", cut(songs[0][1], 4, 12), 4.0, 0.0))
    assert again["title"] == "Song Title" and again["identified_by"] == "local_index"
    assert rec.handle(request("2026-12-06T11:05:00.000Z", "b", cut(songs[1][1], 6, 14), 306.0, 300.0)) is None
    assert acr.paid_calls() == 2
    lines = ledger(tmp_path)
    assert [e["outcome"] for e in lines] == ["matched", "no_match", "local_match", "known_unidentified"]
    assert [e["paid"] for e in lines] == [True, True, False, False] and lines[2]["cost"] == lines[3]["cost"] == 0
    assert lines[2]["match"]["aligned"] >= 25 and lines[2]["match"]["coverage"] >= 0.5
    assert value(metrics, "onair_recognition_saved_usd_total", channel="b", provider="acrcloud") == \
        pytest.approx(2 * 0.0025)
    assert value(metrics, "onair_recognition_requests_total", channel="b", provider="acrcloud",
                         outcome="local_match") == 1
    # past the window the provider's "unknown" is asked once more, and that answer kept
    clock.t += 8 * 86400
    acr.script = ["no_match"]
    assert rec.handle(request("2026-12-14T11:05:00.000Z", "b", cut(songs[1][1], 3, 13), 303.0, 300.0)) is None
    assert acr.paid_calls() == 3
    assert rec.handle(request("2026-12-14T12:05:00.000Z", "a", cut(songs[1][1], 5, 13), 305.0, 300.0)) is None
    assert acr.paid_calls() == 3 and ledger(tmp_path)[-1]["outcome"] == "known_unidentified"
    # a restart reads the same index: still free
    again = recognizer(acr, tmp_path, clock, Metrics())
    assert again.handle(request("2026-12-14T13:00:00.000Z", "c", cut(songs[0][1], 3, 11), 3.0, 0.0))["title"] \
        == "Song Title"
    assert acr.paid_calls() == 3


def test_an_unknown_item_identified_later_corrects_its_earlier_plays(songs, acr, tmp_path):
    clock = Clock()
    acr.script = ["no_match"]
    rec = recognizer(acr, tmp_path, clock, Metrics())
    rec.handle(request("2026-12-06T10:00:00.000Z", "a", cut(songs[1][0], 2, 12), 2.0, 0.0))
    rec.handle(request("2026-12-06T12:00:00.000Z", "b", cut(songs[1][1], 4, 12), 4.0, 0.0))
    assert acr.paid_calls() == 1 and rec.take_corrections() == []
    clock.t += 8 * 86400                             # the window passed; the provider knows it now
    acr.script = ["match"]
    now = rec.handle(request("2026-12-14T10:00:00.000Z", "c", cut(songs[1][1], 3, 11), 3.0, 0.0))
    assert now["title"] == "Song Title"
    fixes = rec.take_corrections()
    assert {(f["channel"], f["play_id"]) for f in fixes} == {("a", "a:2026-12-06T10:00:00.000Z"),
                                                            ("b", "b:2026-12-06T12:00:00.000Z")}
    assert all(f["title"] == "Song Title" and f["corrects"] == "unidentified" for f in fixes)


def test_an_unknown_items_play_is_indexed_around_the_clip_heard(songs, tmp_path, monkeypatch):
    """A song the provider did not know was heard 10-18 s into its play; the play as it aired goes
    into the index from 10 s before the clip to UNKNOWN_AFTER_S after its start (240 s: the whole
    of this 60 s play), so a later play clipped at 30-38 s or at its last 8 s is known (not paid
    again); with a bound of 40 s the end is not."""
    fp = FingerprintParams(peaks_per_s=22)
    x, aired = songs[1]
    h, t = fingerprint(cut(aired, 0, 60), fp)

    def indexed(name):
        index = AudioIndex(SqliteStore(tmp_path / f"{name}.sqlite"), IdentityParams(), Metrics(), Clock())
        index.create()
        assert index.learn("a", cut(aired, 10, 18), None, "a:0", None, clip_in_play_s=18.0) is not None
        return index
    index = indexed("full")
    assert index.answer(cut(x, 30, 38), "b") is None            # the clip alone does not reach there
    assert index.add_play("a", "a:0", h, t, 60.0) is not None
    assert index.add_play("a", "a:0", h, t, 60.0) is None       # held already: nothing added twice
    later = index.answer(cut(x, 30, 38), "b", "b:0", 38.0)
    assert later is not None and later.outcome == "known_unidentified"
    assert later.position_s == pytest.approx(28.0, abs=0.5)     # placed in the first clip's time base
    assert index.answer(cut(x, 52, 60), "b").outcome == "known_unidentified"
    monkeypatch.setattr("pipeline.identity.index.UNKNOWN_AFTER_S", 40.0)
    index = indexed("bounded")
    assert index.add_play("a", "a:0", h, t, 60.0) is not None
    assert index.answer(cut(x, 30, 38), "b").outcome == "known_unidentified"
    assert index.answer(cut(x, 52, 60), "b") is None            # past the bound


def test_a_song_that_went_quiet_early_and_ended_later_gets_its_entry(songs, tmp_path):
    """A song the provider did not know goes quiet for a moment 13 s in (a detection gap: its
    anchors stop there) and plays on until a gap too long ends it, 60 s in. It played long enough
    for an entry of its own: a later play clipped inside its first 13 s is known, not paid again."""
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    x, aired = songs[1]
    index.learn("a", cut(aired, 0.5, 6.5), None, "a:0.0", None)       # the first clip: not known
    assert index.answer(cut(x, 5.0, 12.0), "b") is None                # the clip alone does not reach there

    def audio(a, b):
        a = max(0.0, a)
        return a, aired[int(a * SR):int(min(b, len(aired) / SR) * SR)]
    deb = Debouncer("a", DebounceParams(first_request_s=0.0))
    deb._start_song(0.0, "new_music")
    deb.requested = True
    live = LiveIdentity("a", index, audio, lambda s: f"a:{s}", Metrics())
    t = 0.0
    while t < 60.0:
        live.step(deb, t + 5.0, not 13.0 <= t < 15.0, t + 0.96)
        t += 0.96
    deb.reset_run()                                                    # the gap too long: the song ended
    live.step(deb, t + 5.0, False, t + 0.96)
    later = index.answer(cut(x, 5.0, 12.0), "b")
    assert later is not None and later.outcome == "known_unidentified"


def test_a_play_is_placed_by_all_of_its_audio_and_a_loop_is_not_placed(songs, tmp_path):
    """The index keeps a play where all of its audio places it, whatever offset the answer said;
    music that repeats itself sample for sample matches at every repeat: the place is not known,
    so nothing is kept (else the entry runs past the recording's end into the next song)."""
    fp = FingerprintParams(peaks_per_s=22)
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    x = songs[0][0]
    answer = {"title": "song", "extra": {"acrid": "r0", "duration_ms": 60000, "play_offset_ms": 20000}}
    index.learn("z", cut(x, 10, 20), answer, "z:0", None)          # recording time 10-20 s
    # a play that began 5 s into the recording; its answer (one clip) placed it wrongly, at 0 s
    index.store.set_play("a:0", index.store.by_ref("acrid:r0"), 0.0)
    h, t = fingerprint(cut(songs[0][1], 5, 55), fp)
    entry = index.add_play("a", "a:0", h, t, 50.0)
    assert entry is not None and index.store.item(entry)["rec_offset_s"] == pytest.approx(5.0, abs=0.1)
    # a recording made of one 8 s stretch four times over
    loop = np.tile(cut(songs[2][0], 20, 28), 4)
    index.learn("z", loop[:8 * SR], {"title": "loop", "extra": {"acrid": "r1", "duration_ms": 32000,
                                                                "play_offset_ms": 8000}}, "z:1", None)
    index.store.set_play("b:0", index.store.by_ref("acrid:r1"), 0.0)
    h, t = fingerprint(0.33 * loop, fp)
    assert index.add_play("b", "b:0", h, t, 32.0) is None
    # against the whole loop a window of it matches well at each repeat
    rh, rt = fingerprint(loop, fp)
    qh, qt = fingerprint(0.33 * loop[10 * SR:16 * SR], fp)
    m = best_match(qh, qt, rh, np.zeros(len(rh), np.int64), rt.astype(np.int64), int(6 / 0.0232), fp)
    assert m is not None and m.repeat >= 0.5 * m.aligned and not m.placed


def test_a_plays_entry_holds_the_hashes_of_its_whole_audio(songs, tmp_path):
    """The engine's entry for a play, collected while it airs in 2 s checks, holds nearly every hash
    a fingerprint of the whole play gives (anchors cut from the checks' sliding windows kept about
    half, and another channel's play of the recording then matched it weakly)."""
    fp = FingerprintParams(peaks_per_s=22)
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    x, aired = songs[0]
    index.learn("z", cut(x, 0, 10), {"title": "song 0", "extra": {"acrid": "r0", "duration_ms": 60000,
                                                                 "play_offset_ms": 10000}}, "z:0", None)
    stream = cut(aired, 0, 50)

    def audio(a, b):
        a = max(0.0, a)
        return a, stream[int(a * SR):int(min(b, len(stream) / SR) * SR)]
    deb = Debouncer("x", DebounceParams(first_request_s=0.0))
    deb.song_start = 0.0
    live = LiveIdentity("x", index, audio, lambda s: f"x:{s}", Metrics())
    t = 0.0
    while t < 44.0:
        live.step(deb, t + 5.0, True, t + 0.96)
        t += 0.96
    index.store.set_play("x:0.0", index.store.by_ref("acrid:r0"))      # answered: the recognizer's part
    live.close(deb, end=40.0)
    entries = [e for e in index.store.placed(index.store.by_ref("acrid:r0")) if e != index.store.by_ref("acrid:r0")]
    assert len(entries) == 1
    whole = fingerprint(cut(aired, 0, 40), fp)[0]
    held = index.store.item(entries[0])["hashes"]
    assert held >= 0.9 * np.count_nonzero(whole)


def test_a_corrupt_index_is_named_and_onair_pays_instead(songs, acr, tmp_path, caplog):
    (tmp_path / "fingerprints.sqlite").write_bytes(b"this is not a database" * 100)
    metrics = Metrics()
    rec = recognizer(acr, tmp_path, Clock(), metrics)
    with caplog.at_level(logging.ERROR, logger="onair.identity"):
        for i in range(3):
            r = rec.handle(request(f"2026-12-06T10:0{i}:00.000Z", "a", cut(songs[0][0], 2, 12), 2.0, 0.0))
            assert r["title"] == "Song Title" and r["identified_by"] == "provider"
    assert acr.paid_calls() == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "fingerprints.sqlite" in errors[0] and "paying the provider" in errors[0]
    assert value(metrics, "onair_identity_index_errors_total", op="open") == 1
    assert value(metrics, "onair_identity_index_errors_total", op="lookup") == 3


def test_short_and_silent_clips_are_sent_as_they_are(songs, acr, tmp_path):
    rec = recognizer(acr, tmp_path, Clock(), Metrics())
    rec.handle(request("2026-12-06T10:00:00.000Z", "a", cut(songs[0][0], 2, 12), 2.0, 0.0))
    rec.handle(request("2026-12-06T10:01:00.000Z", "a", cut(songs[0][1], 4, 6), 4.0, 0.0))       # 2 s
    rec.handle(request("2026-12-06T10:02:00.000Z", "a", np.zeros(8 * SR, np.float32), 0.0, 0.0))
    assert acr.paid_calls() == 3
    assert [e["outcome"] for e in ledger(tmp_path)] == ["matched"] * 3


def test_an_answer_for_a_recording_already_over_is_not_shown(songs, acr, tmp_path):
    """The provider places the clip 2 s before the recording's end while the request was decided
    8 s after the clip ended: the next song is on; the answer is kept, not shown."""
    rec = recognizer(acr, tmp_path, Clock(), Metrics())
    original = acr.answer

    def timed(path, f, behaviour):
        status, doc, headers = original(path, f, behaviour)
        if doc.get("metadata"):
            doc["metadata"]["music"][0].update(duration_ms=100000, play_offset_ms=98000)
        return status, doc, headers
    acr.answer = timed
    req = request("2026-12-06T10:00:00.000Z", "a", cut(songs[0][0], 2, 12), 90.0, 60.0)
    req["emitted_at"] = req["clip_end"] + 8.0
    assert rec.handle(req) is None
    e = ledger(tmp_path)[-1]
    assert e["outcome"] == "matched" and e["paid"] and "not shown" in e["detail"]


# -- the store

def test_a_committed_entry_survives_kill_9(tmp_path):
    code = f"""
import os, numpy as np, sys
sys.path.insert(0, {str(REPO)!r})
from pipeline.identity.store import SqliteStore
s = SqliteStore({str(tmp_path / 'i.sqlite')!r}); s.create()
i = s.new_item("recording", "2026-12-06T10:00:00.000Z", ref="isrc:X", answer={{"title": "T"}})
s.add_hashes(i, np.arange(100, dtype=np.uint32), np.arange(100, dtype=np.int32), 10.0, 10.0)
print(i, flush=True)
os.kill(os.getpid(), 9)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9 and r.stdout.strip() == "1"
    s = SqliteStore(tmp_path / "i.sqlite")
    s.create()
    assert s.item(1)["answer"] == {"title": "T"} and s.stats()["recording"]["hashes"] == 100


def landmarks(rng, seconds=60.0, per_s=60.0):
    """Synthetic landmarks of one recording: random 20-bit hashes at increasing frames."""
    n = int(seconds * per_s)
    return rng.integers(0, 1 << 20, n).astype(np.uint32), np.sort(rng.integers(0, int(seconds / 0.0232), n)).astype(np.int32)


def excerpt(h, t, a, b=8.0 / 0.0232):
    keep = (t >= a) & (t < a + b)
    return h[keep], t[keep] - a


def test_segments_answer_alike_through_flushes_merges_prune_and_compaction(tmp_path):
    """Landmarks move from batches into level-0 segments, then merged levels: every recording is
    still found at any offset; a pruned one is never answered, and leaves the disk at `compact`."""
    rng = np.random.default_rng(3)
    store = SqliteStore(tmp_path / "i.sqlite", flush_landmarks=10_000, merge_factor=2, background=False)
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    index.create()
    recs = {}
    for k in range(12):
        h, t = landmarks(rng)
        item = store.new_item("recording", "2026-12-06T10:00:00.000Z", ref=f"r{k}", answer={"title": f"r{k}"})
        store.add_hashes(item, h, t, 60.0, 60.0)
        recs[item] = (h, t)
    layout = store.storage()
    assert layout["batches"] < 3 and max(int(lv) for lv in layout["segments"]) >= 2
    for item, (h, t) in recs.items():
        qh, qt = excerpt(h, t, int(rng.integers(0, 2000)))
        assert index.lookup_hashes(qh, qt, 8.0, "test")[1]["id"] == item
    gone = 3
    store.delete_items([gone])
    assert index.lookup_hashes(*excerpt(*recs[gone], 500), 8.0, "test") is None
    assert index.lookup_hashes(*excerpt(*recs[4], 500), 8.0, "test")[1]["id"] == 4
    before = sum(v["landmarks"] for v in store.storage()["segments"].values())
    assert store.compact(full=True)["merged"] >= 1
    after = store.storage()
    assert after["batches"] == 0 and sum(v["segments"] for v in after["segments"].values()) == 1
    assert sum(v["landmarks"] for v in after["segments"].values()) == before + layout["batch_landmarks"] \
        - len(recs[gone][0])
    # a damaged posting list is an unreadable index: logged and counted, the clip paid, never a guess
    key = store.execute("SELECT key FROM postings LIMIT 1", fetch=True)[0][0]
    saved = store.execute("SELECT data FROM postings WHERE key = ?", (key,), fetch=True)[0][0]
    store.execute("UPDATE postings SET data = ? WHERE key = ?", (saved[:-3], key))
    qh = np.concatenate([np.array([key & 0xFFFFF], np.uint32), excerpt(*recs[4], 500)[0]])
    qt = np.concatenate([np.zeros(1, np.int32), excerpt(*recs[4], 500)[1]])
    assert index.lookup_hashes(qh, qt, 8.0, "test") is None
    assert value(index.metrics, "onair_identity_index_errors_total", op="lookup") == 1
    store.execute("UPDATE postings SET data = ? WHERE key = ?", (saved, key))
    h, t = store.hashes_of(7)
    o = np.lexsort((recs[7][0], recs[7][1]))
    assert np.array_equal(h, recs[7][0][o]) and np.array_equal(t, recs[7][1][o])
    # batches piled up behind a long merge are flushed a few million landmarks at a time
    for k in range(5):
        store.segments.flush_landmarks = 10 ** 9
        store.add_hashes(store.new_item("recording", "2026-12-06T10:00:00.000Z"), *landmarks(rng), 60.0, 60.0)
    store.segments.flush_landmarks = 300         # 32 of them: 9 600 landmarks, so two flushes
    assert store.compact()["flushed"] == 2 and store.storage()["batches"] == 0


def test_a_compaction_killed_midway_loses_nothing(tmp_path):
    """kill -9 while a segment is half written: the batches still answer, the next compaction
    clears the half-written rows and finishes."""
    code = f"""
import os, sys, numpy as np
sys.path.insert(0, {str(REPO)!r})
from pipeline.identity import segments
from pipeline.identity.store import SqliteStore
segments.WRITE_ROWS = 1000
s = SqliteStore({str(tmp_path / 'i.sqlite')!r}, flush_landmarks=10**9, background=False); s.create()
rng = np.random.default_rng(5)
for k in range(4):
    i = s.new_item("recording", "2026-12-06T10:00:00.000Z", ref=f"r{{k}}", answer={{"title": "T"}})
    s.add_hashes(i, rng.integers(0, 1 << 20, 3600).astype(np.uint32), np.sort(rng.integers(0, 2580, 3600)).astype(np.int32), 60.0, 60.0)
calls = []
write = s.execute
def dying(q, *a, **k):
    if q.startswith("INSERT INTO postings"):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), 9)
    return write(q, *a, **k)
s.execute = dying
s.compact(full=True)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    store = SqliteStore(tmp_path / "i.sqlite", background=False)
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    index.create()
    assert store.storage()["batches"] == 4 and store.storage()["segments"] == {}
    assert store.execute("SELECT COUNT(*) FROM postings", fetch=True)[0][0] == 2000      # the half segment
    rng = np.random.default_rng(5)
    recs = [landmarks(rng, 60.0) for _ in range(4)]
    assert index.lookup_hashes(*excerpt(*recs[2], 800), 8.0, "test")[1]["id"] == 3
    done = store.compact(full=True)
    assert done["removed"] >= 1 and done["flushed"] == 1
    assert store.storage()["batches"] == 0 and store.storage()["segments"]["1"]["landmarks"] == 4 * 3600
    assert store.execute("SELECT SUM(LENGTH(data)) FROM postings", fetch=True)[0][0] == 4 * 3600 * 8   # no leftovers
    assert index.lookup_hashes(*excerpt(*recs[2], 800), 8.0, "test")[1]["id"] == 3


def test_background_compaction_and_an_index_of_schema_1(tmp_path):
    """An index written by the previous release (one row per landmark) is moved to batches when
    opened; a compaction thread then builds its segments while lookups go on."""
    import sqlite3
    rng = np.random.default_rng(9)
    recs = [landmarks(rng) for _ in range(3)]
    c = sqlite3.connect(tmp_path / "i.sqlite")
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    c.execute("INSERT INTO meta VALUES ('schema', '1')")
    c.execute("CREATE TABLE hashes (hash INTEGER NOT NULL, item INTEGER NOT NULL, t INTEGER NOT NULL, "
              "PRIMARY KEY (hash, item, t)) WITHOUT ROWID")
    for k, (h, t) in enumerate(recs):
        c.executemany("INSERT OR IGNORE INTO hashes VALUES (?, ?, ?)", [(int(a), k + 1, int(b)) for a, b in zip(h, t)])
    c.commit()
    c.close()
    store = SqliteStore(tmp_path / "i.sqlite", flush_landmarks=5_000)
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    assert index.create()
    for k in range(3):
        store.new_item("recording", "2026-12-06T10:00:00.000Z", ref=f"r{k}", answer={"title": f"r{k}"})
    assert store.segments.wait_idle(timeout=60)
    # the thread flushed what was due when it ran: an item moved after that may wait in a batch,
    # below a flush's worth
    st = store.storage()
    assert st["segments"] and st["batch_landmarks"] < 5_000
    assert store.execute("SELECT value FROM meta WHERE key = 'schema'", fetch=True)[0][0] == "2"
    for k, (h, t) in enumerate(recs):
        assert index.lookup_hashes(*excerpt(h, t, 1000), 8.0, "test")[1]["id"] == k + 1


@pytest.fixture(scope="module")
def postgres():
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; deploy/install.sh --test)")
    pytest.importorskip("psycopg")
    server = PostgresServer().start()
    yield server
    server.stop()


def test_postgres_index_shared_by_two_recognizers(songs, postgres):
    """Two recognizer processes' indexes on one PostgreSQL: what one learns, the other answers."""
    one = AudioIndex(PostgresStore(postgres.dsn), IdentityParams(backend="postgres"), Metrics(), Clock())
    two = AudioIndex(PostgresStore(postgres.dsn), IdentityParams(backend="postgres"), Metrics(), Clock())
    assert one.create() and two.create()
    one.learn("a", cut(songs[0][0], 1, 11), {"title": "T", "artist": "A", "extra": {"acrid": "r0"}}, "a:p1")
    one.learn("a", cut(songs[1][0], 1, 11), None, "a:p2")
    got = two.answer(cut(songs[0][1], 3, 11), "b", "b:p3")
    assert got.outcome == "local_match" and got.item["answer"]["title"] == "T"
    assert two.answer(cut(songs[1][1], 4, 11), "b", "b:p4").outcome == "known_unidentified"
    assert two.answer(cut(songs[2][1], 4, 11), "b", "b:p5") is None
    assert two.store.play("b:p3")[0] == got.item["id"]
    assert "onair" not in PostgresStore(postgres.dsn).describe()       # no user or password in logs
    store_groups_entries_placed_in_their_canonical_item(two.store)


# -- the engine's checks on the channel's own audio

def test_the_index_titles_a_repeat_at_once_and_finds_a_segue_at_the_predicted_end(songs, tmp_path):
    """A channel airs song 0 (its first 40 s, as a radio edit of a 40 s recording) and then song 1
    straight after, no gap and no dip. The index knows both from earlier plays: song 0 is asked
    about at its first check, and song 1 starts a new song where song 0 was predicted to end."""
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    for k, (x, _) in enumerate(songs[:2]):
        index.learn("z", cut(x, 0, 10), {"title": f"song {k}", "extra": {"acrid": f"r{k}", "duration_ms": 40000,
                                                                        "play_offset_ms": 10000}}, f"z:{k}", None)
    stream = np.concatenate([cut(songs[0][1], 0, 40), cut(songs[1][1], 0, 30)])

    def audio(a, b):
        a = max(0.0, a)
        return a, stream[int(a * SR):int(min(b, len(stream) / SR) * SR)]
    metrics = Metrics()
    deb = Debouncer("x", DebounceParams(first_request_s=0.0))
    deb.song_start = 0.0
    live = LiveIdentity("x", index, audio, lambda s: f"x:{s}", metrics)
    intents = []
    t = 0.0
    while t < 66.0:
        intents += live.step(deb, t + 5.0, True, t + 0.96)
        t += 0.96
    assert [i.reason for i in intents] == ["index_match", "index_match"]
    assert intents[0].song_start == 0.0 and intents[1].song_start == pytest.approx(40.0, abs=1.5)
    assert deb.song_reason == "predicted_end" and deb.song_start == pytest.approx(40.0, abs=1.5)
    assert value(metrics, "onair_identity_song_changes_total", channel="x", reason="predicted_end") == 1


def test_a_song_answered_unknown_is_asked_again_once_the_index_knows_it(songs, tmp_path):
    """A song's first request caught a jingle run into it and came back unknown; the checks then
    find a recording the provider named: asked again at once (answered locally), once."""
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    index.learn("z", cut(songs[0][0], 0, 10), {"title": "song 0", "extra": {"acrid": "r0"}}, "z:0", None)
    index.learn("x", cut(songs[2][0], 0, 8), None, "x:0.0", None)           # the play's answer: unknown
    stream = cut(songs[0][1], 0, 30)

    def audio(a, b):
        a = max(0.0, a)
        return a, stream[int(a * SR):int(min(b, len(stream) / SR) * SR)]
    deb = Debouncer("x", DebounceParams(first_request_s=0.0))
    deb.song_start, deb.requested = 0.0, True
    live = LiveIdentity("x", index, audio, lambda s: f"x:{s}", Metrics())
    intents, t = [], 0.0
    while t < 26.0:
        intents += live.step(deb, t + 5.0, True, t + 0.96)
        t += 0.96
    assert [i.reason for i in intents] == ["index_match"]


def test_a_loop_found_mid_way_is_taken_when_two_checks_agree_on_the_item(tmp_path):
    """Music that repeats itself sample for sample matches each check at some repeat (not placed):
    two checks in a row naming the item are enough, not two that agree on a place it has none of;
    the second comes a frame later. Placed matches still must agree on where the recording began."""
    from operators.fingerprint.landmarks import Match
    store = SqliteStore(tmp_path / "fp.sqlite")
    store.create()
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    item = {"id": 7, "kind": "recording", "rec_offset_s": 0.0, "duration_s": 300.0, "t_end_s": 90.0}

    def checks(repeat, second_at=15.0):
        deb = Debouncer("x", DebounceParams(first_request_s=0.0))
        deb._start_song(100.0, "new_music")
        live = LiveIdentity("x", index, lambda a, b: (a, np.zeros(0, np.float32)), lambda s: f"x:{s}", Metrics())
        live.song, live.last_check = 100.0, 106.0
        first = live._decide(deb, (Match(7, 60, 40.0, 0.9, 0, repeat), item), 100.0, 106.0, 106.0)
        # the second check comes with the next frame's audio, not check_every_s later
        assert first != [] or 106.0 + 0.96 - live.last_check >= live.p.check_every_s
        second = live._decide(deb, (Match(7, 60, second_at, 0.9, 0, repeat), item), 102.0, 108.0, 108.0)
        return first, second
    first, second = checks(repeat=58)                # a loop: the places differ by a repeat
    assert first == [] and [r.reason for r in second] == ["index_match"]
    first, second = checks(repeat=0, second_at=70.0)  # placed, 28 s apart: not one recording
    assert first == [] and second == []


def test_a_song_answered_otherwise_is_asked_again_when_its_loop_is_found_a_repeat_away(tmp_path):
    """The song was asked about and answered "unknown" (the clip began on the song before); the
    index then finds a looped recording on air, at one repeat and then another: the second check
    must still ask again (the place found first holds, the question is not skipped with it)."""
    from operators.fingerprint.landmarks import Match
    store = SqliteStore(tmp_path / "fp.sqlite")
    store.create()
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    store.set_play("x:100.0", store.new_item("unknown", "2026-12-06T10:00:00.000Z", rec_offset_s=0.0))
    item = {"id": 7, "kind": "recording", "rec_offset_s": 0.0, "duration_s": 300.0, "t_end_s": 90.0}
    deb = Debouncer("x", DebounceParams(first_request_s=0.0))
    deb._start_song(100.0, "new_music")
    deb.requested = True
    live = LiveIdentity("x", index, lambda a, b: (a, np.zeros(0, np.float32)), lambda s: f"x:{s}", Metrics())
    live.song, live.current, live._began = 100.0, item, 150.0
    live.matched = (7, 90.0, 10.0, 150.0)
    out = live._decide(deb, (Match(7, 60, 40.0, 0.9, 0, 0), item), 200.0, 206.0, 206.0)
    assert [r.reason for r in out] == ["index_match"] and live._began == 150.0


def test_early_requests_need_clean_music_ahead_and_are_confirmed_unless_identified():
    p = DebounceParams(first_request_s=8.0, min_music_s=12.0, cooldown_s=0.0)
    e = np.ones(8, np.float32)

    def run(deb, ahead, stop_s=40.0, identified_at=None):
        out, t = [], 0.0
        while t < stop_s:
            if identified_at is not None and t >= identified_at:
                deb.identified = True
            out += deb.push(t, True, e, -20.0, -20.0, t + 5.8, ahead_is_music=ahead)
            t += 0.96
        return out
    assert [i.reason for i in run(Debouncer("x", p), ahead=False)] == ["new_music"]    # the confirmed one only
    early = run(Debouncer("x", p), ahead=True)
    assert [i.reason for i in early] == ["new_music", "confirm"]
    assert early[0].emitted_at - early[0].song_start < 9.0 and early[0].clip_end == early[0].emitted_at
    assert [i.reason for i in run(Debouncer("x", p), ahead=True, identified_at=5.0)] == ["new_music"]


# -- onair fingerprints

def test_fingerprints_command_lists_exports_and_prunes(songs, tmp_path):
    index = AudioIndex(SqliteStore(tmp_path / "fingerprints.sqlite"), IdentityParams(), Metrics(),
                       Clock(1_700_000_000.0))
    index.create()
    index.learn("a", cut(songs[0][0], 1, 11), {"title": "Tïtle ✓", "artist": "A", "extra": {"acrid": "r"}}, "a:1")
    index.learn("a", cut(songs[1][0], 1, 11), None, "a:2")

    def onair(*args):
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "fingerprints", *args, "--dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
        assert r.returncode == 0, r.stderr
        return [json.loads(x) for x in r.stdout.splitlines()]
    rows = onair("list")
    assert [(r["kind"], r.get("title")) for r in rows] == [("recording", "Tïtle ✓"), ("unknown", None)]
    exported = onair("export", "--hashes")
    h = np.frombuffer(base64.b64decode(exported[0]["landmarks"]["hash_u32"]), np.uint32)
    assert len(h) == exported[0]["hashes"] > 100
    assert onair("prune")[0]["deleted_items"] == 1        # the unknown item, long past its window
    assert [r["kind"] for r in onair("list")] == ["recording"]
    assert onair("compact")[0]["flushed"] == 1
    stats = onair("stats")[0]
    assert stats["storage"]["batches"] == 0 and stats["storage"]["segments"]["1"]["landmarks"] == stats["recording"]["hashes"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "fingerprints.sqlite").write_text("garbage" * 200)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "fingerprints", "stats", "--dir",
                        str(tmp_path / "broken")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "fingerprints.sqlite" in r.stderr and "not a database" in r.stderr


def test_a_first_plays_answer_predicts_its_end(tmp_path):
    """A song heard for the first time is in no index entry until it ends, so no check can place
    it: the provider's answer (its recording, duration and offset) predicts the end, and music going
    on past it starts a new song there. So does an answer for a song that started inside its
    recording. An answer naming a recording already over (the previous song's tail) predicts nothing."""
    store = SqliteStore(tmp_path / "fp.sqlite")
    store.create()
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    rec = store.new_item("recording", "2026-12-06T10:00:00.000Z", ref="acrid:r9", duration_s=40.0,
                         rec_offset_s=0.0, answer={"title": "T"})

    def play(rec_start_s):
        store.set_play("x:100.0", rec, rec_start_s)
        deb = Debouncer("x", DebounceParams(first_request_s=0.0))
        deb._start_song(100.0, "new_music")
        deb.requested = True
        live = LiveIdentity("x", index, lambda a, b: (a, np.zeros(0, np.float32)), lambda s: f"x:{s}", Metrics())
        t = 100.0
        while t < 160.0:
            live.step(deb, t + 5.0, True, t + 0.96)
            t += 0.96
        return deb
    deb = play(-1.5)                    # the recording began 1.5 s before the music was found
    assert deb.song_reason == "predicted_end" and deb.song_start == pytest.approx(138.5, abs=0.01)
    deb = play(-30.0)                   # a song found to start inside the recording: its end still holds
    assert deb.song_reason == "predicted_end" and deb.song_start == pytest.approx(110.0, abs=0.01)
    deb = play(-60.0)                   # the previous song's tail: over before the answer came
    assert deb.song_start == 100.0 and deb.song_reason == "new_music"


def test_checks_missing_a_recording_near_its_predicted_end_wait_for_the_end(tmp_path):
    """Three checks in a row not finding the identified recording where the index holds its audio
    end the song, unless its predicted end is under 15 s away: a song whose fingerprints come
    through this channel weakly is not cut 11 s early (the predicted end starts the next song)."""
    store = SqliteStore(tmp_path / "fp.sqlite")
    store.create()
    index = AudioIndex(store, IdentityParams(), Metrics(), Clock())
    item = {"id": 7, "kind": "recording", "rec_offset_s": 0.0, "duration_s": 300.0, "t_end_s": 300.0}

    def misses(predicted_end):
        deb = Debouncer("x", DebounceParams(first_request_s=0.0))
        deb._start_song(100.0, "new_music")
        live = LiveIdentity("x", index, lambda a, b: (a, np.zeros(0, np.float32)), lambda s: f"x:{s}", Metrics())
        live.song, live.current, live._began, live.predicted_end = 100.0, item, 100.0, predicted_end
        live.matched = (7, 300.0, 20.0, 120.0)
        for k in range(3):
            live._decide(deb, None, 120.0 + 3 * k, 126.0 + 3 * k, 126.0 + 3 * k)
        return deb.song_start
    assert misses(predicted_end=170.0) == 120.0       # where it was last heard
    assert misses(predicted_end=140.0) == 100.0


def test_a_song_first_heard_as_unknown_in_the_frame_it_would_be_asked_is_not_paid(songs, tmp_path):
    """The engine checks the index before the debouncer decides whether to ask: a song whose early
    request falls on the very frame where the index first hears it as an item the provider did not
    know is held, and asked later with the audio the index heard (answered for free), not with its
    start, which no earlier play's entry holds (that play's intro was under talk)."""
    from types import SimpleNamespace
    from pipeline.clock import StreamClock
    from pipeline.engine.channel import ChannelDetector
    from pipeline.heads import Heads, hmm_params, load_music_head
    from pipeline.params import ChannelParams
    cfg = config.load()
    head = load_music_head(cfg, "yamnet", 1024)
    index = AudioIndex(SqliteStore(tmp_path / "fp.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    x, aired = songs[1]
    index.learn("z", cut(x, 3.0, 20.0), None, "z:0")        # an earlier play, heard from 3 s in
    det = ChannelDetector("c", Heads(head, None, None), ChannelParams.from_config(cfg, hmm_params(head, cfg)),
                          Metrics(), StreamClock.fixed("run_start", 1_800_000_000.0), index)
    hop = 0.96
    intents = []
    for k in range(40):
        t = k * hop
        det.history.push(t, cut(aired, t, t + hop))
    for k in range(24):
        t = k * hop
        det._pending.append((np.ones(1024, np.float32), (-20.0, -20.0), None, 0.0, None))
        det._ahead.append(True)
        newest = min(t + 5.76, 38.0)
        intents += [r for kind, r in det._decided(SimpleNamespace(time=t, state=1, posterior=0.99), newest)
                    if kind == "requests"]
    assert intents, "the song was asked about"
    first = intents[0]
    assert first["reason"] == "new_music" and first["clip_start"] > 2.0       # the audio the index heard
    assert index.answer(cut(aired, first["clip_start"], first["clip_end"]), "c").outcome == "known_unidentified"


def test_a_talked_over_intro_of_a_repeat_is_titled_ahead_of_the_decisions(songs, shared, tmp_path):
    """A presenter talks over the first 8 s of a song the index knows. The decisions trail the
    newest audio by about 5 s; the frames not decided yet hear the clean music after the talk, and
    the index, looking it up at once, titles the song about 3 s after the talk ends, as a song that
    began with the talk. The decided talk and music that follow keep that song (one request). Where
    the index does not know the song, nothing is asked before the decisions reach the music."""
    from types import SimpleNamespace
    from pipeline.clock import StreamClock
    from pipeline.engine.channel import ChannelDetector
    from pipeline.heads import Heads, hmm_params, load_music_head
    from pipeline.params import ChannelParams
    cfg = config.load()
    head = load_music_head(cfg, "yamnet", 1024)
    x, aired = songs[1]
    voice = load_clip(shared / "data" / "clips" / "speech" / "debian-asterisk-core-sounds-en__demo-instruct.opus",
                      rate=SR, seconds=8.0)
    stream = aired.copy()
    stream[:len(voice)] = 0.32 * stream[:len(voice)] + 0.6 * voice / (np.abs(voice).max() + 1e-9)
    hop, lag, talk_s = 0.96, 6, 8.0

    def run(knows):
        index = AudioIndex(SqliteStore(tmp_path / f"fp-{knows}.sqlite"), IdentityParams(), Metrics(), Clock())
        index.create()
        if knows:      # an earlier play, from its first second, that the provider named
            index.learn("z", cut(x, 0.0, 10.0), {"title": "song 1", "extra": {"acrid": "r1", "duration_ms": 60000,
                                                                              "play_offset_ms": 10000}}, "z:0", None)
            index.add_play("z", "z:0", *fingerprint(cut(x, 0.0, 40.0), index.p.fp), 40.0)
        det = ChannelDetector("c", Heads(head, None, None), ChannelParams.from_config(cfg, hmm_params(head, cfg)),
                              Metrics(), StreamClock.fixed("run_start", 1_800_000_000.0), index)
        intents = []
        for k in range(40):
            t = k * hop
            det.history.push(t, cut(stream, t, t + hop))
            talk = t + hop <= talk_s
            det._pending.append((np.ones(1024, np.float32), (-20.0, -20.0), None, 0.9 if talk else 0.1, None))
            det._ahead.append(not talk)
            det._newest_frame = t
            if k >= lag:
                d = k - lag
                intents += [r for kind, r in det._decided(SimpleNamespace(time=d * hop, state=1, posterior=0.99),
                                                          t + hop) if kind == "requests"]
        det.identity.close(det.debouncer, end=38.0)
        return index, intents
    added = []
    add_play = AudioIndex.add_play

    def spy(self, channel, play_id, h, t, seconds):
        added.append((play_id, float(t.min()) * FRAME_S if len(t) else None))
        return add_play(self, channel, play_id, h, t, seconds)
    AudioIndex.add_play = spy
    try:
        index, intents = run(True)
    finally:
        AudioIndex.add_play = add_play
    assert [r["reason"] for r in intents] == ["index_match"]
    first = intents[0]
    assert first["song_start"] == pytest.approx(0.0, abs=1.0)              # the song began with the talk
    assert first["emitted_at"] < talk_s + 4.5 < first["emitted_at"] + lag * hop - 1.0   # ahead of the decisions
    ans = index.answer(cut(stream, first["clip_start"], first["clip_end"]), "c")
    assert ans.outcome == "local_match" and ans.item["answer"]["title"] == "song 1"
    # the play's entry: from its clean music on, not the talk over its intro
    assert [p for p, _ in added] == ["z:0", "c:" + first["song_start_utc"]] and added[1][1] >= talk_s - 1.0
    _, intents = run(False)
    assert intents[0]["reason"] == "talk_intro" and intents[0]["emitted_at"] >= talk_s + lag * hop - 1.0


def test_a_play_answered_not_known_then_named_forgets_the_item_its_first_clip_made(songs, tmp_path):
    """A play asked about ahead of its boundaries (under a voice, or with a jingle run into it) and
    answered "not known", then named by its confirm request: the item its first clip made goes, or a
    later play of the song would be answered as an item the provider does not know. An unknown item
    that another play matched stays (a repeat of an unknown item)."""
    index = AudioIndex(SqliteStore(tmp_path / "fp.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    x, aired = songs[0]
    named = {"title": "song 0", "extra": {"acrid": "r0", "duration_ms": 60000, "play_offset_ms": 30000}}
    index.learn("c", cut(aired, 0.0, 10.0), None, "c:1")
    assert index.answer(cut(x, 1.0, 9.0), "d").outcome == "known_unidentified"
    index.learn("c", cut(aired, 20.0, 30.0), named, "c:1")
    assert [i["kind"] for i in index.store.items()] == ["recording"]
    assert index.answer(cut(x, 1.0, 9.0), "d") is None
    y, other = songs[1]
    index.learn("c", cut(other, 20.0, 30.0), None, "c:2")
    assert index.answer(cut(y, 21.0, 29.0), "d", "d:1").outcome == "known_unidentified"
    index.learn("c", cut(other, 40.0, 50.0), {"title": "song 1", "extra": {"acrid": "r1", "duration_ms": 60000,
                                                                           "play_offset_ms": 50000}}, "c:2")
    assert sorted(i["kind"] for i in index.store.items()) == ["recording", "recording", "unknown"]


def test_a_local_answer_for_a_loop_gives_no_position(songs, tmp_path):
    """A recording that repeats itself sample for sample matches a clip at each repeat: the local
    answer names it without a position, or one repeat's position could put a song's start at the
    recording's last seconds and the title would not be shown (held-out day 4, s12 on chD)."""
    index = AudioIndex(SqliteStore(tmp_path / "i.sqlite"), IdentityParams(), Metrics(), Clock())
    index.create()
    loop = np.tile(cut(songs[2][0], 20, 28), 4)
    index.learn("z", loop, {"title": "loop", "extra": {"acrid": "r1", "duration_ms": 32000,
                                                       "play_offset_ms": 32000}}, "z:1", None)
    ans = index.answer(0.33 * loop[10 * SR:16 * SR], "d")
    assert ans is not None and ans.outcome == "local_match" and not ans.match.placed and ans.position_s is None
    x = songs[0][0]
    index.learn("z", cut(x, 10, 20), {"title": "song", "extra": {"acrid": "r0", "duration_ms": 60000,
                                                                 "play_offset_ms": 20000}}, "z:0", None)
    ans = index.answer(0.33 * cut(x, 12, 18), "d")
    assert ans.outcome == "local_match" and ans.position_s == pytest.approx(18.0, abs=0.5)
