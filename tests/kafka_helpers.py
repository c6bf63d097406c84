"""Helpers for tests against a real Kafka 0.9 broker started by the test harness."""
from __future__ import annotations

import json
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


def read_topic(cfg: dict, topic: str, idle_ms: int = 2000) -> list:
    from pipeline.kafka.client import consumer
    c = consumer(cfg, topic, group_id=None, consumer_timeout_ms=idle_ms)
    try:
        return list(c)
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

