"""Helpers for tests against a real Kafka 0.9 broker started by the test harness."""
from __future__ import annotations

import json
import time
import uuid

from pipeline import config


def kafka_cfg(broker, *extra: str, prefix: str | None = None) -> tuple[dict, list[str]]:
    """A config whose topics and group are unique to one test; returns it and its --set list."""
    prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
    sets = [f"kafka.bootstrap_servers={broker.bootstrap}", f"kafka.topic_media={prefix}.media",
            f"kafka.topic_segments={prefix}.segments", f"kafka.topic_dlq={prefix}.dlq",
            f"kafka.topic_state={prefix}.state", f"kafka.topic_requests={prefix}.requests",
            f"kafka.topic_nowplaying={prefix}.nowplaying", f"kafka.topic_genres={prefix}.genres", f"kafka.group_id={prefix}.workers", "kafka.chunk_s=1.0",
            *extra]
    return config.load(None, sets), sets


def read_topic(cfg: dict, topic: str, timeout_s: float = 120.0) -> list:
    """Every record of `topic` up to the end offsets it has now, partition by partition: what was
    produced and flushed before the call, without waiting for the topic to fall idle."""
    from kafka import TopicPartition

    from pipeline.kafka.client import consumer
    c = consumer(cfg, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        got: dict = {tp: [] for tp in tps}
        deadline = time.monotonic() + timeout_s
        while any(c.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s to read {topic} up to {end}"
            for tp, msgs in c.poll(timeout_ms=500).items():
                got[tp] += [m for m in msgs if m.offset < end[tp]]
        return [m for tp in tps for m in got[tp]]
    finally:
        c.close()


def unique_by_channel(cfg: dict, topic: str, id_key: str, dedupe: bool = True) -> tuple[dict, int]:
    """A topic's JSON records per channel, copies with the same id dropped; and how many copies there were."""
    out: dict[str, list] = {}
    seen, dupes = set(), 0
    for m in read_topic(cfg, topic):
        r = json.loads(m.value)
        if r[id_key] in seen:
            dupes += 1
            if dedupe:
                continue
        seen.add(r[id_key])
        out.setdefault(r["channel"], []).append(r)
    return out, dupes


def segments_by_channel(cfg: dict, dedupe: bool = True) -> tuple[dict, int]:
    return unique_by_channel(cfg, cfg["kafka"]["topic_segments"], "id", dedupe)


def requests_by_channel(cfg: dict) -> tuple[dict, int]:
    return unique_by_channel(cfg, cfg["kafka"]["topic_requests"], "request_id")


class HeldProducer:
    """A real Kafka producer whose sends after the first `n` wait until `gate` is set: lets a
    test act (stop the broker, kill a worker) while its ingest is certainly mid-stream, however
    slowly the rest of the test started. Everything else is the producer's own."""

    def __init__(self, producer, n: int, gate, timeout_s: float = 600.0):
        self._producer, self._left, self._gate, self._timeout_s = producer, n, gate, timeout_s

    def send(self, *args, **kwargs):
        if self._left <= 0:
            self._gate.wait(self._timeout_s)
        self._left -= 1
        return self._producer.send(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._producer, name)

