"""Where records go. The engine writes `(kind, record)` and knows nothing else;
kinds are `segments`, `requests`, `genres` (and `nowplaying` from recognition).

An output takes `write(kind, record)` from any thread, `flush()` at a
checkpoint (what was written is then durable or delivered) and `close()` once.
JSONL files (direct mode) and an in-memory list (tests, benchmarks) live here;
Kafka topics in pipeline.kafka.outputs.

Files of direct mode rotate by UTC day: a record goes to DIR/YYYY-MM-DD/<kind>.jsonl
of its own UTC time (the day of the field in DAY_FIELD), appended, never truncated,
so a restart, a second run into the same folder or a 24/7 run loses nothing and no
file grows for ever. DIR/<kind>.jsonl is a symbolic link to the newest day's file,
for `tail -F` and tools that read one file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

from pipeline.clock import day_of
from pipeline.jsonin import BadLine, loads_record

KINDS = ("segments", "requests", "genres", "nowplaying", "corrections")
# the field whose UTC day a record is filed under (ledger lines: their Unix `ts`)
DAY_FIELD = {"segments": "start_utc", "requests": "emitted_at_utc", "genres": "segment_start_utc",
             "nowplaying": "started_at_utc", "ledger": "ts", "corrections": "corrected_at_utc"}
DAY_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
log = logging.getLogger("onair.outputs")


class Outputs(Protocol):
    def write(self, kind: str, record: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


# json.dumps escapes C0 controls; DEL, the C1 controls (U+0085 is a line break) and U+2028/2029
# are left raw, and a reader that splits lines the Unicode way (str.splitlines, many JS
# readers) would cut a record there
_RAW_CONTROLS = re.compile("[\u007f-\u009f\u2028\u2029]")


def dumps(record: dict) -> str:
    """One record as one line of compact UTF-8 JSON, every control character and Unicode line
    break escaped."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    return _RAW_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)


def record_day(kind: str, record: dict) -> str:
    """The UTC day a record is filed under; today's for a record without its time."""
    v = record.get(DAY_FIELD.get(kind, ""))
    if isinstance(v, str) and DAY_DIR.match(v[:10]):
        return v[:10]
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
        return day_of(float(v))
    return day_of(time.time())


def read_jsonl(path: str | Path):
    """(line number, object) of each JSON object line of a JSONL file; a damaged line is skipped
    with one warning naming the file and line. Split on b"\\n" only: str.splitlines would also
    split inside a title at U+2028 or U+0085."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = loads_record(raw)
            except BadLine as e:
                end = "" if raw.endswith(b"\n") else " (an unfinished last line: still being written?)"
                log.warning("%s:%d: damaged line skipped: %s%s", path, n, e, end)
                continue
            yield n, d


def day_dirs(directory: str | Path) -> list[str]:
    """The day folders (YYYY-MM-DD) of an output folder, oldest first."""
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_dir() and DAY_DIR.match(e.name))
    except FileNotFoundError:
        return []


class DailyJsonl:
    """One kind of record in DIR/YYYY-MM-DD/<name>.jsonl by each record's UTC day, appended and
    flushed per record (a follower sees records as they are decided); DIR/<name>.jsonl links to
    the newest day. A few days' files stay open: records of a day arrive late (a segment is
    written when it closes, a channel may lag the others)."""

    OPEN_DAYS = 3

    def __init__(self, directory: str | Path, name: str, kind: str | None = None):
        self.dir = Path(directory)
        self.name = name
        self.kind = kind or name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.link = self.dir / f"{name}.jsonl"
        self._files: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.newest = self._adopt()

    def path(self, day: str) -> Path:
        return self.dir / day / f"{self.name}.jsonl"

    def _adopt(self) -> str | None:
        """The newest day already linked; a plain file of an older onair (no rotation) is filed
        under the day it was last written, so nothing is truncated or lost."""
        if self.link.is_symlink():
            day = Path(os.readlink(self.link)).parent.name
            return day if DAY_DIR.match(day) else None
        if self.link.is_file():
            day = day_of(self.link.stat().st_mtime)
            target = self.path(day)
            if target.exists():
                target = target.with_name(f"{self.name}.before-{int(time.time())}.jsonl")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.link, target)
            log.info("%s: moved to %s (outputs now rotate by UTC day)", self.link, target)
        return None

    def write(self, record: dict) -> None:
        line = dumps(record) + "\n"
        day = record_day(self.kind, record)
        with self._lock:
            f = self._file(day)
            f.write(line)
            f.flush()
            if self.newest is None or day > self.newest:
                self.newest = day
                self._relink(day)

    def _file(self, day: str):
        f = self._files.get(day)
        if f is None:
            p = self.path(day)
            p.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[day] = open(p, "a", encoding="utf-8")
            while len(self._files) > self.OPEN_DAYS:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(day)
        return f

    def _relink(self, day: str) -> None:
        tmp = self.dir / f".{self.name}.jsonl.link"
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(f"{day}/{self.name}.jsonl", tmp)
            os.replace(tmp, self.link)      # atomic: a reader never finds no link
        except OSError as e:       # a file system without symbolic links: the dated files are the record
            log.warning("%s: cannot link to the newest day (%s)", self.link, e)

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


class DailyJsonlOutputs:
    """Direct mode's files: DIR/YYYY-MM-DD/<kind>.jsonl for each kind (DailyJsonl)."""

    def __init__(self, out_dir: str | Path, kinds: tuple[str, ...] = KINDS):
        self.dir = Path(out_dir)
        self.sinks = {kind: DailyJsonl(self.dir, kind) for kind in kinds}

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
