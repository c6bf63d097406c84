"""Kafka mode against a real Kafka 0.9 broker: ingest -> worker group -> segments."""
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pipeline.kafka import broker as broker_mod
from pipeline.kafka import envelope
from pipeline.kafka.ingest import Ingest
from pipeline.kafka.client import producer
from pipeline.metrics import Metrics
from pipeline.clock import parse_iso
from pipeline.kafka.worker import Worker
from tests.conftest import REPO, direct_segments
from tests.kafka_helpers import HeldProducer, kafka_cfg, read_topic, requests_by_channel, segments_by_channel
from tests.waiting import wait_until


def strip(segs):
    return [(s["label"], round(s["start"], 2), round(s["end"], 2)) for s in segs]


def same_after_restore(got, want) -> bool:
    """A channel resumed from a state decodes again from the chunk after it, without the previous
    chunk's codec overlap: the first milliseconds differ in their last bits, and where a frame there
    is a close call (the end of talk), a boundary can move by that one frame (seen on AVX-512
    machines). Nothing may be lost, doubled or relabelled: the same segments, each boundary within
    a frame, the same end."""
    g, w = strip(got), strip(want)
    return (len(g) == len(w) and [x[0] for x in g] == [x[0] for x in w] and g[-1][2] == w[-1][2]
            and all(abs(a[1] - b[1]) <= 0.97 and abs(a[2] - b[2]) <= 0.97 for a, b in zip(g, w)))


def run_worker(cfg, records: int, metrics=None, timeout_s: float = 300.0):
    """A worker run until it has handled `records` media records, then stopped: it closes as on
    shutdown (embedding stage drained, last states sent, offsets committed). Waiting on the count,
    not for the topic to fall idle: a group join slower than the idle time on a loaded machine would
    end the worker before its first record."""
    w = Worker(cfg, metrics=metrics or Metrics())
    failed = []

    def run():
        try:
            w.run()
        except BaseException as e:  # noqa: B036 (raised again in the test's thread)
            failed.append(e)
            raise

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_until(lambda: w.processed >= records or not t.is_alive(), timeout_s,
                   lambda: f"the worker to handle {records} media records (it handled {w.processed})")
    finally:
        w.stop.set()
        t.join(timeout=120)
    if failed:
        raise failed[0]
    assert not t.is_alive(), "the worker did not stop"
    return w


# audio_only False: test_golden.py compares the Kafka path with the direct one on a longer programme
@pytest.mark.parametrize("audio_only", [pytest.param(False, marks=pytest.mark.slow), True])
def test_kafka_path_gives_the_direct_path_segments(kafka_broker, programme, tmp_path, audio_only):
    cfg, _ = kafka_cfg(kafka_broker)
    res = Ingest([("p", str(programme["ts"]))], cfg, audio_only=audio_only).run()
    assert res["p"]["ok"] and res["p"]["chunks"] > 10
    w = run_worker(cfg, res["p"]["chunks"] + 1)
    segs, dupes = segments_by_channel(cfg)
    assert dupes == 0
    assert strip(segs["p"]) == strip(direct_segments(programme["ts"], tmp_path))
    # ids from UTC on the ingest clock: the envelope's wall clock, the file's media time added
    assert all(s["id"] == f"p/{s['start_utc']}" and s["clock"] == "ingest" for s in segs["p"])
    t0 = parse_iso(segs["p"][0]["start_utc"])
    assert all(parse_iso(s["end_utc"]) - t0 == pytest.approx(s["end"], abs=0.05) for s in segs["p"])
    reqs, _ = requests_by_channel(cfg)
    direct = direct_segments(programme["ts"], tmp_path, what="requests")
    fields = ("clip_start", "clip_end", "emitted_at", "song_start", "audio")
    assert [(r["request_id"].rsplit(":", 1)[1], *[r[f] for f in fields]) for r in reqs["p"]] == \
        [(r["request_id"].rsplit(":", 1)[1], *[r[f] for f in fields]) for r in direct]
    assert all(r["request_id"].startswith(f"p:{r['song_start_utc']}:") for r in reqs["p"])
    genres = [json.loads(m.value) for m in read_topic(cfg, cfg["kafka"]["topic_genres"])]
    strip_ch = lambda recs: [{k: v for k, v in r.items()  # noqa: E731
                              if k not in ("channel", "clock", "play_id") and not k.endswith("_utc")} for r in recs]
    assert strip_ch(genres) == strip_ch(direct_segments(programme["ts"], tmp_path, what="genres"))
    assert all(g["play_id"] == f"p:{g['song_start_utc']}" for g in genres)
    # every media record (chunks + end of stream) was handled
    assert w.processed == res["p"]["chunks"] + 1
    if audio_only:
        full = Ingest([("q", str(programme["ts"]))], kafka_cfg(kafka_broker)[0]).run()["q"]["bytes"]
        assert res["p"]["bytes"] < full
        # `onair recognize --kafka` pays for the requests, `onair archive` writes the topics into
        # dated files beside its ledger, and the day's report reads them
        from pipeline.kafka.archive import archive_kafka
        from pipeline.recognition.stage import consume_kafka
        from pipeline.report import write_report
        from tests.provider_servers import ProviderServer
        arch = tmp_path / "archive"
        server = ProviderServer("audd", "tok")
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("AUDD_API_TOKEN", "tok")
                rcfg, _ = kafka_cfg(kafka_broker, "recognition.provider=audd", f"recognition.audd_url={server.url}",
                                    f"recognition.ledger={arch / 'ledger.jsonl'}", prefix=cfg["kafka"]["topic_media"][:-6])
                assert consume_kafka(rcfg, idle_exit_s=3.0) == len(reqs["p"])
        finally:
            server.close()
        assert server.paid_calls() == len(reqs["p"])
        n = archive_kafka(cfg, arch, idle_exit_s=3.0)
        assert n == len(segs["p"]) + 2 * len(reqs["p"]) + len(genres)
        days = sorted(p.name for p in arch.glob("20*"))
        archived = [json.loads(x) for d in days for x in (arch / d / "segments.jsonl").read_text().splitlines()]
        assert archived == segs["p"]
        paths = write_report(str(arch), days[-1], None, None, None)
        summary = json.loads(next(p for p in paths if str(p).endswith("p.json")).read_text())
        assert summary["plays"] == summary["recognised"] == len(reqs["p"])
        assert summary["paid_calls"] == len(reqs["p"])


def test_kafka_workers_check_the_recognizers_index(kafka_broker, programme, tmp_path, monkeypatch):
    """With a provider configured, a worker opens the recognizer's fingerprint index (beside its
    ledger) and its channels check their audio against it: the programme's second song, which the
    index knows from an earlier play, is asked about as `index_match` (answered free)."""
    from operators.audio.decode import decode_whole
    from pipeline.identity.index import AudioIndex, IdentityParams
    from pipeline.identity.store import SqliteStore
    monkeypatch.setenv("AUDD_API_TOKEN", "tok")
    cfg, _ = kafka_cfg(kafka_broker, "recognition.provider=audd", f"recognition.ledger={tmp_path / 'ledger.jsonl'}")
    x = decode_whole(str(programme["ts"]), "programme")
    known = AudioIndex(SqliteStore(tmp_path / "fingerprints.sqlite"), IdentityParams(), Metrics())
    assert known.create()
    known.learn("earlier", x[52 * 16000:62 * 16000], {"title": "Song 2", "extra": {"acrid": "s2"}}, "earlier:1")
    res = Ingest([("p", str(programme["ts"]))], cfg, audio_only=True).run()
    w = run_worker(cfg, res["p"]["chunks"] + 1)
    assert w.engine.index is not None and str(w.engine.index.store.path) == str(tmp_path / "fingerprints.sqlite")
    reqs, _ = requests_by_channel(cfg)
    matched = [r for r in reqs["p"] if r["reason"] == "index_match"]
    assert len(matched) == 1 and 48.0 <= matched[0]["song_start"] <= 56.0
    assert not any(r["reason"] == "index_match" and r["song_start"] < 40.0 for r in reqs["p"])


def test_state_goes_to_the_changelog_every_state_every_s_and_offsets_only_as_far_as_it_covers(kafka_broker,
                                                                                              programme):
    from kafka import TopicPartition

    from pipeline.kafka.client import consumer
    sent = {}
    for every in (0, 600):
        cfg, _ = kafka_cfg(kafka_broker, f"kafka.state_every_s={every}")
        res = Ingest([("p", str(programme["ts"]))], cfg).run()
        w = run_worker(cfg, res["p"]["chunks"] + 1)
        states = [json.loads(m.value) for m in read_topic(cfg, cfg["kafka"]["topic_state"])]
        sent[every] = len(states)
        assert states[-1]["finished"] and w.state_records == len(states)
        # the group's committed offsets reach the end of every partition the channel's records went to
        media = read_topic(cfg, cfg["kafka"]["topic_media"])
        c = consumer(cfg, group_id=cfg["kafka"]["group_id"], enable_auto_commit=False)
        try:
            for part in {m.partition for m in media}:
                end = max(m.offset for m in media if m.partition == part) + 1
                assert c.committed(TopicPartition(cfg["kafka"]["topic_media"], part)) == end
        finally:
            c.close()
        assert w.processed == res["p"]["chunks"] + 1
    # every poll (the old behaviour) against once, when the source ended
    assert sent[600] == 1 < sent[0]


def test_a_worker_that_dies_between_states_is_replayed_with_the_same_ids(kafka_broker, programme, tmp_path):
    # no state was sent yet when it dies (state_every_s is long), so its offsets were not committed past
    # its first record: the next worker does it all again, and every copy carries the first one's id
    cfg, _ = kafka_cfg(kafka_broker, "kafka.state_every_s=600")
    res = Ingest([("p", str(programme["ts"]))], cfg).run()
    first = Worker(cfg, metrics=Metrics())
    while first.processed < res["p"]["chunks"] // 2:
        records = first.consumer.poll(timeout_ms=500)
        if records:
            first.process(records)
    first.producer.close(timeout=10)                # what it emitted is out
    first.consumer.close(autocommit=False)          # then it dies: no state of its own saved or committed
    assert first.state_records == 0 and first.segments_out > 0
    second = run_worker(cfg, res["p"]["chunks"] + 1)
    assert second.processed == res["p"]["chunks"] + 1
    segs, dupes = segments_by_channel(cfg)
    assert dupes >= first.segments_out
    assert strip(segs["p"]) == strip(direct_segments(programme["ts"], tmp_path))


def test_a_state_older_than_the_committed_offsets_is_replayed_from_not_trusted(kafka_broker, programme, tmp_path):
    # a worker that froze and came back (a zombie) writes its old state of a channel after the newest
    # one, or a changelog read misses the newest: the state the next worker restores is older than the
    # offsets the group committed. The chunks in between must not be skipped (the timeline would jump
    # back by their length and reuse ids for other content): the worker replays from the state's offset
    cfg, _ = kafka_cfg(kafka_broker, "kafka.state_every_s=0")
    res = Ingest([("p", str(programme["ts"]))], cfg).run()
    first = Worker(cfg, metrics=Metrics())
    states = []
    while first.processed < res["p"]["chunks"] * 2 // 3:
        records = first.consumer.poll(timeout_ms=500, max_records=4)
        if records:
            first.process(records)
            if first.processed >= res["p"]["chunks"] // 4 and not states:
                states = read_topic(cfg, cfg["kafka"]["topic_state"])
    first.producer.close(timeout=10)
    first.consumer.close(autocommit=False)
    old = json.loads(states[-1].value)
    p = producer(cfg)
    p.send(cfg["kafka"]["topic_state"], key=b"p", value=states[-1].value)   # the zombie's late write
    p.flush()
    p.close()
    metrics = Metrics()
    second = Worker(cfg, metrics=metrics)
    try:
        wait_until(lambda: second.process(second.consumer.poll(timeout_ms=500)) or (
            "p" in second.channels and second.channels["p"].ended), 300, "the second worker to end the channel")
    finally:
        second.close()
    segs, _ = segments_by_channel(cfg)
    assert same_after_restore(segs["p"], direct_segments(programme["ts"], tmp_path)), (
        old["offset"], strip(segs["p"]), strip(direct_segments(programme["ts"], tmp_path)))
    songs = {}
    for m in read_topic(cfg, cfg["kafka"]["topic_requests"]):
        r = json.loads(m.value)
        assert songs.setdefault(r["request_id"], r["song_start"]) == r["song_start"], "one id, two songs"
    reqs, _ = requests_by_channel(cfg)
    got = [r["song_start"] for r in reqs["p"]]
    want = [r["song_start"] for r in direct_segments(programme["ts"], tmp_path, what="requests")]
    assert len(got) == len(want) and all(abs(a - b) <= 0.97 for a, b in zip(got, want)), (got, want)   # as above
    assert metrics.registry.get_sample_value("onair_state_gaps_total", {"channel": "p", "kind": "stale"}) == 1


def test_a_changelog_that_cannot_be_read_is_an_error_not_an_empty_one():
    from pipeline import config
    from pipeline.kafka.checkpoint import StateStore, StateUnavailable
    cfg = config.load(None, [f"kafka.bootstrap_servers=127.0.0.1:{broker_mod.free_port()}"])
    store = StateStore(cfg, timeout_s=2)
    with pytest.raises(StateUnavailable, match="no metadata"):
        store.refresh()
    assert not store.fresh


# (True, 7) is the hard case (the end still with the embedding stage); the others run under -m slow
@pytest.mark.parametrize("overlap,per_poll", [pytest.param(False, 1000, marks=pytest.mark.slow),
                                              pytest.param(True, 1000, marks=pytest.mark.slow), (True, 7)])
def test_a_source_that_ends_and_starts_again_gets_two_clean_runs(kafka_broker, programme, tmp_path, overlap,
                                                                 per_poll):
    # the end of one run and the first chunks of the next reach the worker in the same poll (or, 7
    # records a poll, while the end is still with the embedding stage): the new run must start from a
    # new decoder and detector, and the ended run's final state must still go out, and first
    cfg, _ = kafka_cfg(kafka_broker)
    runs = [Ingest([("p", str(programme["ts"]))], cfg).run()["p"] for _ in range(2)]
    w = Worker(cfg, metrics=Metrics())
    polls = []
    while w.processed < sum(r["chunks"] + 1 for r in runs):
        records = w.consumer.poll(timeout_ms=500, max_records=per_poll)
        if records:
            polls.append(sum(len(v) for v in records.values()))
            w.process(records, overlap=overlap)
    w.close()
    assert polls[0] == w.processed or per_poll < runs[0]["chunks"], "both runs were meant to arrive in one poll"
    waited = w.metrics.registry.get_sample_value("onair_worker_embed_wait_seconds_total")
    assert waited > 0        # at each checkpoint (overlapping) or after every poll (serial), on the engine
    segs, _ = segments_by_channel(cfg, dedupe=False)
    once = strip(direct_segments(programme["ts"], tmp_path))
    assert strip(segs["p"]) == once + once, (strip(segs["p"]), once)
    # the same stream times twice, and still no id twice: the second run is later in UTC
    assert len({s["id"] for s in segs["p"]}) == len(segs["p"])
    states = [json.loads(m.value) for m in read_topic(cfg, cfg["kafka"]["topic_state"])]
    ends = [st["offset"] for st in states if st["finished"]]
    assert len(ends) == 2 and ends[0] < ends[1]       # the first run's final state went out first


def ingested(cfg: dict, ts) -> list[bytes]:
    """The media record values `onair ingest` makes of a file, captured instead of produced: a test
    changes or interleaves them before it produces them itself."""
    chunks = []

    class Capture:
        def send(self, topic, key, value):
            chunks.append(value)
            return self

        def add_errback(self, *a):
            return self

        def flush(self, *a, **k):
            pass

    Ingest([("p", str(ts))], cfg, producer=Capture()).run()
    return chunks


def test_bad_chunks_go_to_the_dead_letter_topic_and_the_channel_goes_on(kafka_broker, programme, tmp_path):
    cfg, _ = kafka_cfg(kafka_broker)
    chunks = ingested(cfg, programme["ts"])      # so bad records can be slipped in between
    header, payload = envelope.unpack(chunks[10])
    garbage = envelope.pack({**header, "seq": 9999}, np.random.default_rng(0).bytes(len(payload)))
    truncated = envelope.pack({**header, "seq": 9998}, payload[:100])
    p = producer(cfg)
    topic = cfg["kafka"]["topic_media"]
    for i, value in enumerate(chunks):
        if i == 20:
            for bad in (garbage, b"\x00not an envelope", truncated):
                p.send(topic, key=b"p", value=bad)
        p.send(topic, key=b"p", value=value)
    p.flush()
    metrics = Metrics()
    run_worker(cfg, len(chunks) + 3, metrics=metrics)     # the programme's records and the 3 bad ones
    dlq = read_topic(cfg, cfg["kafka"]["topic_dlq"])
    reasons = sorted(json.loads(m.value.split(b"\n", 1)[0])["reason"] for m in dlq)
    assert reasons == ["bad_envelope", "undecodable", "undecodable"], [m.value.split(b"\n", 1)[0] for m in dlq]
    assert json.loads(dlq[0].value.split(b"\n", 1)[0])["offset"] >= 20
    assert metrics.registry.get_sample_value("onair_dlq_records_total", {"reason": "undecodable"}) == 2
    segs, _ = segments_by_channel(cfg)
    # the chunks after the bad records were processed: the timeline reaches the end of the programme
    assert abs(segs["p"][-1]["end"] - len(programme["audio"]) / 48000) < 0.2
    assert strip(segs["p"]) == strip(direct_segments(programme["ts"], tmp_path))


def test_an_ingest_reconnect_after_an_outage_is_a_no_signal_segment(kafka_broker, programme, tmp_path):
    """A live source that ingest reconnects after 20 s without signal: the worker writes the outage
    as a no_signal segment, in stream time and UTC, and the timeline goes on after it."""
    cfg, _ = kafka_cfg(kafka_broker)
    chunks = ingested(cfg, programme["ts"])
    media = [envelope.unpack(v) for v in chunks]
    media = media[:40] + media[-1:]          # 40 s of the programme and its end of stream
    cut = 20
    p = producer(cfg)
    for i, (h, payload) in enumerate(media):
        if i >= cut:     # the second session: 20 s later on the wall clock, marked as a reconnect
            h = {**h, "session": "second", "seq": i - cut, "wall": h["wall"] + 20.0, "disc": i == cut}
        p.send(cfg["kafka"]["topic_media"], key=b"p", value=envelope.pack(h, payload))
    p.flush()
    metrics = Metrics()
    w = run_worker(cfg, len(media), metrics=metrics)
    segs, _ = segments_by_channel(cfg)
    gaps = [s for s in segs["p"] if s["label"] == "no_signal"]
    assert len(gaps) == 1, strip(segs["p"])
    gap = gaps[0]
    assert 20.0 - cfg["kafka"]["chunk_s"] - 0.5 <= gap["end"] - gap["start"] <= 20.5
    assert parse_iso(gap["end_utc"]) - parse_iso(gap["start_utc"]) == pytest.approx(gap["end"] - gap["start"], abs=0.5)
    for a, b in zip(segs["p"], segs["p"][1:]):
        assert a["end"] == b["start"]
    assert segs["p"][-1]["end"] == pytest.approx(w.audio_s + gap["end"] - gap["start"], abs=0.3)
    assert metrics.registry.get_sample_value("onair_no_signal_seconds_total", {"channel": "p"}) >= 18.0


def _worker_proc(sets, log, idle_s: float = 8):
    cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--exit-when-idle", str(idle_s)]
    for s in sets:
        cmd += ["--set", s]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def test_sigkill_of_a_worker_loses_nothing_and_pays_nothing_twice(kafka_broker, programme, tmp_path):
    cfg, sets = kafka_cfg(kafka_broker, "kafka.session_timeout_ms=4000")
    broker_mod.create_topic(kafka_broker, cfg["kafka"]["topic_state"], 4, compact=True)
    broker_mod.create_topic(kafka_broker, cfg["kafka"]["topic_media"], 4)
    channels = [f"ch{i}" for i in range(6)]
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    workers = [_worker_proc(sets, logs[i]) for i in range(2)]
    try:
        _failover(kafka_broker, programme, tmp_path, cfg, channels, workers, logs)
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()


# the double fault of issue #21: the broker restarts as the survivor takes the orphans over (0 s:
# before it noticed the death; 6 s: as it reads the changelog), about 100 s each
@pytest.mark.slow
@pytest.mark.parametrize("restart_after_s", [0.0, 2.0, 6.0])
def test_sigkill_of_a_worker_and_a_broker_restart(programme, tmp_path, restart_after_s):
    d = tmp_path / "kafka"
    b = broker_mod.start(d, partitions=4)
    workers = []
    try:
        cfg, sets = kafka_cfg(b, "kafka.session_timeout_ms=4000")
        broker_mod.create_topic(b, cfg["kafka"]["topic_state"], 4, compact=True)
        broker_mod.create_topic(b, cfg["kafka"]["topic_media"], 4)
        channels = [f"ch{i}" for i in range(6)]
        logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
        workers = [_worker_proc(sets, logs[i], idle_s=40) for i in range(2)]
        _failover(b, programme, tmp_path, cfg, channels, workers, logs, broker_restart=(restart_after_s, 8.0))
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
        broker_mod.stop(d)


def _group_settled(tmp_path) -> bool:
    """Both workers joined and the group balanced: the last shares they logged are disjoint and
    cover the media topic's 4 partitions. (A slow start, TF import on a loaded machine, must not
    leave one worker to do the programme alone, nor the kill land mid-rebalance.)"""
    shares = []
    for i in range(2):
        found = re.findall(r"partitions assigned: \[([\d, ]*)\]",
                           (tmp_path / f"worker{i}.log").read_text(errors="replace"))
        if not found:
            return False
        shares.append({int(x) for x in found[-1].split(",") if x.strip()})
    return all(shares) and not shares[0] & shares[1] and shares[0] | shares[1] == {0, 1, 2, 3}


def _failover(kafka_broker, programme, tmp_path, cfg, channels, workers, logs, broker_restart=None):
    wait_until(lambda: _group_settled(tmp_path), 180, "both workers to join the group and share its partitions")
    ing = Ingest([(ch, str(programme["ts"])) for ch in channels], cfg, rate=3.0)
    feeder = threading.Thread(target=ing.run, daemon=True)
    feeder.start()

    owners = {}

    def state_owners():
        for m in read_topic(cfg, cfg["kafka"]["topic_state"]):
            s = json.loads(m.value)
            owners.setdefault(s["channel"], []).append((s["owner"], s["wall"], s["finished"]))
        return owners

    wait_until(lambda: len({o for v in state_owners().values() for o, _, _ in v}) == 2, 60,
               "both workers to send states of their channels")
    time.sleep(3)   # the scenario: the victim's work since its last state (state_every_s is 10) is replayed
    victim_pid = workers[0].pid
    victim = next(o for v in owners.values() for o, _, _ in v if o.split("-")[-2] == str(victim_pid))
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.time()
    if broker_restart:
        # the double fault: the broker goes down while the survivor takes the orphans over
        after_s, down_s = broker_restart
        time.sleep(after_s)
        broker_mod.stop_kafka(kafka_broker)
        time.sleep(down_s)
        broker_mod.start_kafka(kafka_broker)
    feeder.join()
    workers[1].wait(timeout=120)
    for f in logs:
        f.close()

    owners.clear()
    state_owners()
    # the channels the victim held unfinished when it died: their last state before the kill is its own
    orphans = [ch for ch, v in owners.items()
               if (last := max((r for r in v if r[1] <= killed_at), key=lambda r: r[1], default=None))
               and last[0] == victim and not last[2]]
    assert orphans, "the killed worker should hold unfinished channels when it dies"
    taken = [min(w for o, w, _ in owners[ch] if o != victim and w > killed_at) for ch in orphans]
    failover_s = min(taken) - killed_at
    print(f"failover: first record from the survivor {failover_s:.1f} s after the kill")
    assert failover_s < 30

    segs, dupes = segments_by_channel(cfg)
    reference = strip(direct_segments(programme["ts"], tmp_path))
    for ch in channels:
        assert same_after_restore(segs[ch], direct_segments(programme["ts"], tmp_path)), (ch, strip(segs[ch]), reference)
    print(f"duplicate segment records (dropped by id): {dupes}")
    reqs, req_dupes = requests_by_channel(cfg)
    # the replay gave the copies the ids of the first emission: after dropping copies by id, each
    # channel has exactly the direct run's requests
    key = lambda r: (r["song_start"], r["request_id"].rsplit(":", 1)[1])  # noqa: E731
    want = [key(r) for r in direct_segments(programme["ts"], tmp_path, what="requests")]
    for ch in channels:
        got = [key(r) for r in reqs.get(ch, [])]
        # song starts within a frame, as the segments above
        assert len(got) == len(want) and all(g[1] == w[1] and abs(g[0] - w[0]) <= 0.97
                                             for g, w in zip(got, want)), (ch, got, want)
    print(f"duplicate request records (dropped by id): {req_dupes}")


# about a minute (a 20 s outage, a broker of its own, the clients' reconnects): with -m slow, so the
# default suite keeps its 10 minutes with room for a loaded machine
@pytest.mark.slow
def test_broker_outage_of_20s_mid_stream(programme, tmp_path, caplog):
    """Its own broker: it is stopped for 20 s while ingest and a worker run.

    The outage starts once the worker has joined and handled records, and while ingest still has
    the rest of the programme to send (its sends after the 8th wait for the outage), so a worker
    that starts slowly on a loaded machine delays the outage instead of missing it."""
    d = tmp_path / "kafka"
    b = broker_mod.start(d, partitions=4)
    w = None
    threads = []
    outage = threading.Event()
    try:
        cfg, _ = kafka_cfg(b, "kafka.session_timeout_ms=6000")
        metrics = Metrics()
        caplog.set_level(logging.INFO, logger="onair.worker")
        w = Worker(cfg, metrics=metrics)
        threads = [threading.Thread(target=w.run, daemon=True)]
        threads[0].start()
        wait_until(lambda: any(re.match(r"partitions assigned: \[\d", m) for m in caplog.messages), 180,
                   "the worker to be assigned the media topic's partitions")
        ing = Ingest([("p", str(programme["ts"]))], cfg, rate=5.0, producer=HeldProducer(producer(cfg), 8, outage))
        threads.insert(0, threading.Thread(target=ing.run, daemon=True))
        threads[0].start()
        wait_until(lambda: w.processed > 3, 180, lambda: f"the worker to handle 4 records (it handled {w.processed})")
        broker_mod.stop_kafka(b)
        outage.set()                     # ingest goes on into the outage
        time.sleep(20)                   # the outage itself
        broker_mod.start_kafka(b)
        wait_until(lambda: not threads[0].is_alive(), 300, "ingest to finish after the broker came back")
        chunks = ing.results["p"]["chunks"]
        value = lambda name: metrics.registry.get_sample_value(name, {"channel": "p"}) or 0  # noqa: E731
        wait_until(lambda: value("onair_media_chunks_total") + value("onair_media_chunks_skipped_total")
                   >= chunks and w.processed >= chunks + 1, 300,
                   lambda: f"the worker to handle all {chunks + 1} media records (handled {w.processed}, "
                           f"decoded {value('onair_media_chunks_total')})")
        w.stop.set()
        threads[1].join(timeout=60)
        res = ing.results["p"]
        assert res["ok"] and ing.send_errors == 0
        media = read_topic(cfg, cfg["kafka"]["topic_media"])
        assert len(media) == res["chunks"] + 1                       # every chunk reached Kafka, once
        handled = value("onair_media_chunks_total")
        assert handled == res["chunks"], (handled, value("onair_media_chunks_skipped_total"))
        segs, _ = segments_by_channel(cfg)
        got = segs["p"]
        assert got[0]["start"] == 0.0 and all(a["end"] == b_["start"] for a, b_ in zip(got, got[1:]))
        assert strip(got) == strip(direct_segments(programme["ts"], tmp_path))
    finally:
        outage.set()
        if w is not None:
            w.stop.set()
            for t in threads:
                t.join(timeout=30)
        broker_mod.stop(d)


def test_broker_command_reports_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "broker", "status", "--dir", str(tmp_path)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 3 and "not running" in r.stdout
