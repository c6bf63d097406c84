"""Record sinks of direct mode: one JSON object per line, flushed per record
so a follower (tail, the overlay) sees records as they are decided."""
from __future__ import annotations

import json
import threading
from pathlib import Path


class JsonlSink:
    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.count = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()
            self.count += 1

    def close(self) -> None:
        with self._lock:
            self._f.close()
