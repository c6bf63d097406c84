"""Records to Kafka topics: one topic per kind (`kafka.topic_<kind>`), key = channel,
value = the record as compact UTF-8 JSON (the same line direct mode writes)."""
from __future__ import annotations

from pipeline.outputs import dumps


class KafkaOutputs:
    def __init__(self, producer, topics: dict[str, str]):
        self.producer = producer
        self.topics = topics          # kind -> topic
        self.counts: dict[str, int] = {}

    @classmethod
    def from_config(cls, producer, cfg: dict) -> "KafkaOutputs":
        k = cfg["kafka"]
        return cls(producer, {kind: k[f"topic_{kind}"] for kind in ("segments", "requests", "genres", "nowplaying")})

    def write(self, kind: str, record: dict) -> None:
        self.producer.send(self.topics[kind], key=record["channel"].encode(), value=dumps(record).encode())
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        """The producer belongs to the process that made it."""
