"""How SQLite holds landmarks: posting lists in segments, merged in the background.

One row per landmark (hash, item, frame) is what a query needs but not what a large index can
afford: a query for an 8 s clip reads ~700 hashes, and at 100 000 recordings each hash has about a
thousand entries, so ~700 000 rows per query, and every insert lands on random pages of one
growing B-tree. Instead, as in a log-structured merge tree:

- `batches`: each `add` (a paid clip, a whole play) is one row holding the item and its hashes
  and frames as blobs: one short insert, durable at commit. Queries read all batches not yet in a
  segment (fewer than `flush_landmarks` landmarks, cached per connection).
- `postings`: segments of (seg, hash) -> blob of (item, frame) pairs: all of one hash's entries in
  a segment are one row, keyed by the rowid seg * 2^20 + hash, so a query reads one row per
  distinct hash per live segment by rowid, a blob up to a page lies in its row (not in overflow
  pages, as it would in a WITHOUT ROWID table), and a new segment is written in key order at the
  end of the table.
- When the batches hold `flush_landmarks` landmarks they become a level-0 segment; when
  `merge_factor` segments share a level they are merged into one of the next level, dropping the
  entries of deleted items, and past MAX_LIVE live segments the smallest are merged. Each landmark
  is rewritten about log_F(N) times; a query reads about MAX_LIVE segments. Flushes and merges
  take turns, so inserts faster than flushes do not starve the merges.
- A segment is written as `building` in short transactions, then made live in one transaction
  that also retires what it replaces (batches or segments): readers see the old layout or the new
  one, never both; a crash leaves only `building` or `dead` rows, removed by the next compaction.
  One compactor at a time per index file (an advisory file lock), so `onair run` and an admin
  command never merge the same segments.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from operators.fingerprint.landmarks import HASH_BITS, HASH_SPACE, ranges

log = logging.getLogger("onair.identity")

PAIR = np.dtype([("item", "<u4"), ("t", "<i4")])
CHUNK_HASHES = 1 << 14          # hashes per merge step: bounds memory and each transaction's length
MAX_LIVE = 4                    # live segments a query reads, at most (merges permitting)
FLUSH_MAX = 32                  # a flush takes at most this many flush_landmarks (about 800 MB at the peak)
WRITE_ROWS = 50_000             # posting rows per write transaction: other writers wait at most this long


class Segments:
    """The landmark tables of one SQLite store, through its `execute`, `tx(fn)` (fn(connection) in
    one write transaction) and `read(fn)` (in one read snapshot)."""

    def __init__(self, store, lock_path: Path, flush_landmarks: int = 1_000_000, merge_factor: int = 4,
                 background: bool = True):
        self.store = store
        self.lock_path = Path(lock_path)
        self.flush_landmarks = int(flush_landmarks)
        self.merge_factor = int(merge_factor)
        self.background = background
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()
        self.failures = 0
        self._last_log = -1e9
        self._local = threading.local()          # each thread's cache of the batches

    TABLES = (
        "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, "
        "n INTEGER NOT NULL, h BLOB NOT NULL, t BLOB NOT NULL)",
        "CREATE INDEX IF NOT EXISTS batches_by_item ON batches (item)",
        "CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, level INTEGER NOT NULL, "
        "entries INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS postings (key INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    )

    # -- writing
    def add(self, item: int, h: np.ndarray, t: np.ndarray) -> None:
        h = np.ascontiguousarray(h, "<u4")
        t = np.ascontiguousarray(t, "<i4")
        self.store.execute("INSERT INTO batches (item, n, h, t) VALUES (?, ?, ?, ?)",
                           (int(item), len(h), h.tobytes(), t.tobytes()))
        pending = self._pending()
        if pending >= self.flush_landmarks:
            self._kick()

    def _pending(self) -> int:
        """Landmarks in batches, not yet in a segment."""
        return self.store.execute("SELECT COALESCE(SUM(n), 0) FROM batches", fetch=True)[0][0]

    def delete_items(self, ids: list[int]) -> None:
        """Their batches go now; their entries in segments at the next merge of each segment (queries
        skip items that no longer exist)."""
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            self.store.execute(f"DELETE FROM batches WHERE item IN ({','.join('?' * len(part))})", part)

    # -- reading
    def rows_for(self, u: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash, item, frame) of every entry for the distinct hashes `u`, batches and live segments,
        from one snapshot."""
        def snapshot(c):
            key = c.execute("SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(n), 0) FROM batches").fetchone()
            live = [r[0] for r in c.execute("SELECT id FROM segments WHERE state = 'live'")]
            keys = [(seg << HASH_BITS) | h for seg in live for h in u]
            rows = []
            for i in range(0, len(keys), 900):
                part = keys[i:i + 900]
                rows += c.execute(f"SELECT key, data FROM postings WHERE key IN ({','.join('?' * len(part))})",
                                  part).fetchall()
            recent = self._recent(c, key)
            return rows, recent
        rows, (rh, ri, rt) = self.store.read(snapshot)
        uh = np.asarray(u, np.int64)
        lo, hi = np.searchsorted(rh, uh, "left"), np.searchsorted(rh, uh, "right")
        sel = ranges(lo, hi - lo)
        parts_h, parts_i, parts_t = [rh[sel]], [ri[sel]], [rt[sel]]
        if rows:
            ph, e = _decode(rows)
            parts_h.append(ph)
            parts_i.append(e["item"])
            parts_t.append(e["t"])
        # 32-bit throughout: a lookup at scale handles most of a million entries
        return np.concatenate(parts_h), np.concatenate(parts_i), np.concatenate(parts_t)

    def _recent(self, c, key) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batches not yet in a segment, sorted by hash; cached per connection until they change."""
        cached = getattr(self._local, "recent", None)
        if cached is not None and cached[0] == tuple(key):
            return cached[1]
        hs, its, ts = [np.zeros(0, "<u4")], [np.zeros(0, "<u4")], [np.zeros(0, "<i4")]
        for item, n, hb, tb in c.execute("SELECT item, n, h, t FROM batches"):
            hs.append(np.frombuffer(hb, "<u4"))
            ts.append(np.frombuffer(tb, "<i4"))
            its.append(np.full(n, item, "<u4"))
        h, i, t = np.concatenate(hs), np.concatenate(its), np.concatenate(ts)
        o = np.argsort(h, kind="stable")
        arrays = (h[o], i[o], t[o])
        self._local.recent = (tuple(key), arrays)
        return arrays

    def landmarks_of(self, items: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """(hashes, frames) of each of `items`, sorted by frame: reads the whole index once."""
        got: dict[int, list] = {i: [] for i in items}
        want = np.fromiter(items, np.int64)

        def scan(c):
            for item, hb, tb in c.execute("SELECT item, h, t FROM batches"):
                if item in got:
                    got[item].append((np.frombuffer(hb, "<u4"), np.frombuffer(tb, "<i4")))
            live = [r[0] for r in c.execute("SELECT id FROM segments WHERE state = 'live'")]
            for seg in live:
                for lo in range(0, HASH_SPACE, CHUNK_HASHES):
                    rows = c.execute("SELECT key, data FROM postings WHERE key >= ? AND key < ?",
                                     _span(seg, lo)).fetchall()
                    if not rows:
                        continue
                    h, e = _decode(rows)
                    keep = np.isin(e["item"], want)
                    for item in np.unique(e["item"][keep]):
                        m = e["item"] == item
                        got[int(item)].append((h[m], e["t"][m]))
        self.store.read(scan)
        out = {}
        for item, parts in got.items():
            h = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, "<u4")
            t = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, "<i4")
            o = np.lexsort((h, t))
            out[item] = (h[o].astype(np.uint32), t[o].astype(np.int32))
        return out

    def storage(self) -> dict:
        rows = self.store.execute("SELECT level, COUNT(*), COALESCE(SUM(entries), 0) FROM segments "
                                  "WHERE state = 'live' GROUP BY level ORDER BY level", fetch=True)
        pending = self.store.execute("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM batches", fetch=True)[0]
        return {"batches": int(pending[0]), "batch_landmarks": int(pending[1]), "compaction_failures": self.failures,
                "segments": {str(lv): {"segments": int(n), "landmarks": int(e)} for lv, n, e in rows}}

    # -- compaction
    def _kick(self) -> None:
        if not self.background:
            self.compact()
            return
        with self._mutex:
            self._idle.clear()
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="onair-index-compactor", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._mutex:
                self._wake.clear()
            try:
                self.compact()
            except Exception as e:     # the index stays readable as it was; the next insert retries
                self.failures += 1
                if time.monotonic() - self._last_log > 60:       # a line a minute, not one per insert
                    self._last_log = time.monotonic()
                    log.error("%s: compaction failed (%d so far), will retry: %s: %s", self.store.describe(),
                              self.failures, type(e).__name__, e)
            with self._mutex:
                if not self._wake.is_set():
                    self._idle.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once no compaction is running or asked for."""
        return self._idle.wait(timeout)

    def compact(self, full: bool = False) -> dict:
        """Flush batches into a segment and merge levels; `full` merges every live segment into one
        (drops deleted items' entries now). Returns what was done; skips (returns {"busy": True})
        when another process or thread compacts this index."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return {"busy": True}
            done = {"flushed": 0, "merged": 0, "removed": self._collect_garbage()}
            while True:
                # a flush, then the merges it makes due, in turn: inserts faster than flushes must
                # not starve the merges (a query reads every live segment)
                pending = self._pending()
                flushing = pending >= self.flush_landmarks or (full and pending > 0)
                if flushing:
                    self._flush()
                    done["flushed"] += 1
                live = self.store.execute("SELECT id, level, entries FROM segments WHERE state = 'live' "
                                          "ORDER BY id", fetch=True)
                group, level = self._due(live) if not full or flushing else ([], 0)
                if group:
                    self._merge(group, level)
                    done["merged"] += len(group)
                    done["removed"] += self._collect_garbage()     # its pages are reused by the next
                elif not flushing:
                    break
            if full:
                live = self.store.execute("SELECT id, level FROM segments WHERE state = 'live'", fetch=True)
                if live:       # even one: it may hold deleted items' entries
                    self._merge([s for s, _ in live], max(lv for _, lv in live) + 1)
                    done["merged"] += len(live)
            done["removed"] += self._collect_garbage()
            return done
        finally:
            os.close(fd)     # closing releases the lock

    def _due(self, live: list) -> tuple[list[int], int]:
        """The segments to merge next and the level of the result: `merge_factor` of one level
        (each landmark is rewritten once per level); else, past MAX_LIVE segments, the smallest
        ones, into the level of the largest of them (a query reads one row per hash per segment)."""
        by_level: dict[int, list[int]] = {}
        for seg, level, _ in live:
            by_level.setdefault(level, []).append(seg)
        for level in sorted(by_level):
            if len(by_level[level]) >= self.merge_factor:
                return by_level[level][:self.merge_factor], level + 1
        if len(live) > MAX_LIVE:
            smallest = sorted(live, key=lambda r: r[2])[:len(live) - MAX_LIVE + 1]
            return sorted(r[0] for r in smallest), max(r[1] for r in smallest)
        return [], 0

    def _new_segment(self, level: int) -> int:
        return int(self.store.execute("INSERT INTO segments (level, state) VALUES (?, 'building') RETURNING id",
                                      (level,), fetch=True)[0][0])

    def _write(self, seg: int, h: np.ndarray, e: np.ndarray) -> int:
        """Entries (sorted by hash) as posting rows of `seg`, in short transactions."""
        if not len(h):
            return 0
        cut = np.flatnonzero(np.diff(h)) + 1
        starts = np.concatenate([[0], cut])
        ends = np.concatenate([cut, [len(h)]])
        raw = e.tobytes()
        size = PAIR.itemsize
        hashes = h[starts].tolist()
        for i in range(0, len(starts), WRITE_ROWS):
            rows = [((seg << HASH_BITS) | hashes[j], raw[starts[j] * size:ends[j] * size])
                    for j in range(i, min(i + WRITE_ROWS, len(starts)))]
            self.store.execute("INSERT INTO postings (key, data) VALUES (?, ?)", rows, many=True)
        return len(h)

    def _flush(self) -> None:
        """The oldest batches, up to FLUSH_MAX times flush_landmarks (memory stays bounded when
        inserts outrun the merges), as a new level-0 segment."""
        sizes = self.store.execute("SELECT id, n FROM batches ORDER BY id", fetch=True)
        if not sizes:
            return
        total = np.cumsum([n for _, n in sizes])
        upto = sizes[min(len(sizes) - 1, int(np.searchsorted(total, FLUSH_MAX * self.flush_landmarks)))][0]
        rows = self.store.execute("SELECT id, item, n, h, t FROM batches WHERE id <= ? ORDER BY id", (upto,),
                                  fetch=True)
        h = np.concatenate([np.frombuffer(r[3], "<u4") for r in rows])
        e = np.empty(len(h), PAIR)
        e["item"] = np.concatenate([np.full(r[2], r[1], "<u4") for r in rows])
        e["t"] = np.concatenate([np.frombuffer(r[4], "<i4") for r in rows])
        # batches of items deleted meanwhile are gone from the table; those deleted after this
        # read are skipped by queries and dropped at the next merge
        o = np.argsort(h, kind="stable")
        seg = self._new_segment(0)
        n = self._write(seg, h[o], e[o])

        def flip(c):
            c.execute("UPDATE segments SET state = 'live', entries = ? WHERE id = ?", (n, seg))
            c.execute("DELETE FROM batches WHERE id <= ?", (upto,))
        self.store.tx(flip)

    def _merge(self, group: list[int], level: int) -> None:
        seg = self._new_segment(level)
        alive = np.asarray([r[0] for r in self.store.execute("SELECT id FROM items", fetch=True)], np.int64)
        newest = int(alive.max()) if len(alive) else 0
        marks = ",".join("?" * len(group))
        n = 0
        for lo in range(0, HASH_SPACE, CHUNK_HASHES):
            rows = []
            for old in group:
                rows += self.store.execute("SELECT key, data FROM postings WHERE key >= ? AND key < ?",
                                           _span(old, lo), fetch=True)
            if not rows:
                continue
            h, e = _decode(rows)
            items = e["item"].astype(np.int64)
            keep = (items > newest) | np.isin(items, alive)
            h, e = h[keep], e[keep]
            o = np.argsort(h, kind="stable")
            n += self._write(seg, h[o], e[o])

        def flip(c):
            c.execute("UPDATE segments SET state = 'live', entries = ? WHERE id = ?", (n, seg))
            c.execute(f"UPDATE segments SET state = 'dead' WHERE id IN ({marks})", group)
        self.store.tx(flip)

    def _collect_garbage(self) -> int:
        """Rows of segments retired or never finished (a crash, a failed merge)."""
        gone = [r[0] for r in self.store.execute("SELECT id FROM segments WHERE state IN ('dead', 'building')",
                                                 fetch=True)]
        for seg in gone:
            for lo in range(0, HASH_SPACE, CHUNK_HASHES):
                self.store.execute("DELETE FROM postings WHERE key >= ? AND key < ?", _span(seg, lo))
            self.store.execute("DELETE FROM segments WHERE id = ?", (seg,))
        return len(gone)


def _span(seg: int, lo: int) -> tuple[int, int]:
    """The keys of hashes lo .. lo + CHUNK_HASHES - 1 of segment `seg`."""
    return (seg << HASH_BITS) + lo, (seg << HASH_BITS) + lo + CHUNK_HASHES


def _decode(rows) -> tuple[np.ndarray, np.ndarray]:
    """Posting rows (key, data) as one entry array and the hash (uint32) of each entry."""
    e = np.frombuffer(b"".join([r[1] for r in rows]), PAIR)
    keys = (np.fromiter((r[0] for r in rows), np.int64, len(rows)) & (HASH_SPACE - 1)).astype("<u4")
    return np.repeat(keys, np.fromiter((len(r[1]) for r in rows), np.int64, len(rows)) // PAIR.itemsize), e
