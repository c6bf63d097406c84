"""Where records go. The engine writes `(kind, record)` and knows nothing else;
kinds are `segments`, `requests`, `genres` (and `nowplaying` from recognition).

An output takes `write(kind, record)` from any thread, `flush()` at a
checkpoint (what was written is then durable or delivered) and `close()` once.
JSONL files (direct mode) and an in-memory list (tests, benchmarks) live here;
Kafka topics in pipeline.kafka.outputs.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Protocol

KINDS = ("segments", "requests", "genres", "nowplaying")


class Outputs(Protocol):
    def write(self, kind: str, record: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def dumps(record: dict) -> str:
    """One record as one line of compact UTF-8 JSON."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class JsonlSink:
    """One JSONL file, flushed per record so a follower (tail, the overlay) sees records as they
    are decided."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.count = 0

    def write(self, record: dict) -> None:
        line = dumps(record)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()


class JsonlOutputs:
    """DIR/<kind>.jsonl for each kind."""

    def __init__(self, out_dir: str | Path, kinds: tuple[str, ...] = KINDS):
        self.dir = Path(out_dir)
        self.sinks = {kind: JsonlSink(self.dir / f"{kind}.jsonl") for kind in kinds}

    def write(self, kind: str, record: dict) -> None:
        self.sinks[kind].write(record)

    def flush(self) -> None:
        """Every record is flushed as it is written."""

    def close(self) -> None:
        for s in self.sinks.values():
            s.close()


class MemoryOutputs:
    """Records kept in lists per kind, in the order written."""

    def __init__(self):
        self.records: dict[str, list[dict]] = {kind: [] for kind in KINDS}
        self._lock = threading.Lock()

    def write(self, kind: str, record: dict) -> None:
        with self._lock:
            self.records[kind].append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Tee:
    """Every record to `outputs`, then to `also(kind, record)`: counting, recognition, progress."""

    def __init__(self, outputs: Outputs, also):
        self.outputs, self.also = outputs, also

    def write(self, kind: str, record: dict) -> None:
        self.outputs.write(kind, record)
        self.also(kind, record)

    def flush(self) -> None:
        self.outputs.flush()

    def close(self) -> None:
        self.outputs.close()
