"""Where the fingerprint index lives: embedded SQLite (the default, one file per deployment) or
PostgreSQL (several recognizers and workers sharing one index). Both hold:

- `items`: one row per fingerprinted stretch of audio (a paid clip, or a whole play as it
  aired). `same_as` points at the item it was found to be (a later play of a recording already
  known); the first item of a recording holds its label: `recording` (the provider's answer,
  duration and where item time 0 lies in the recording), `unknown` (the provider did not know
  it) or `pending` (a play indexed before its request was answered).
- landmarks (hash, item, frame), never audio: PostgreSQL holds one row per landmark (`hashes`);
  SQLite holds posting lists in merged segments (pipeline.identity.segments), which keeps queries
  and inserts fast at 100 000 recordings.
- `plays`: which item answered each play (`channel:song_start_utc`), so that a play indexed by the
  engine and the answer the recognizer got for it meet, whichever comes first.

SQLite runs in WAL mode: one writer at a time (others wait up to `busy_timeout`), readers never
blocked, and a committed item survives kill -9. Every write is one short transaction.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np

from pipeline.identity.segments import Segments

log = logging.getLogger("onair.identity")

SCHEMA_VERSION = "1"     # PostgreSQL; SQLite is at SqliteStore.schema
ITEM_FIELDS = ("id", "kind", "same_as", "play_id", "channel", "ref", "answer", "duration_s", "rec_offset_s",
               "indexed_s", "t_end_s", "hashes", "first_seen", "last_seen", "plays", "paid")


class IndexError_(Exception):
    """The index cannot be read or written (corrupt file, unreachable database)."""


class SqlStore:
    """The SQL both backends share; subclasses give a connection and their dialect."""
    schema = SCHEMA_VERSION
    param = "?"
    autoid = "INTEGER PRIMARY KEY"
    real = "REAL"
    bigint = "INTEGER"

    def __init__(self):
        self._local = threading.local()

    # -- connection
    def _connect(self):
        raise NotImplementedError

    def conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self._connect()
        return c

    def _sql(self, q: str) -> str:
        return q if self.param == "?" else q.replace("?", self.param)

    def execute(self, q: str, args=(), many: bool = False, fetch: bool = False):
        try:
            c = self.conn()
            cur = c.cursor()
            (cur.executemany if many else cur.execute)(self._sql(q), args)
            rows = cur.fetchall() if fetch else None
            c.commit()
            return rows
        except IndexError_:
            raise
        except Exception as e:
            self._rollback()
            raise IndexError_(f"{self.describe()}: {type(e).__name__}: {e}") from None

    def _rollback(self) -> None:
        c = getattr(self._local, "conn", None)
        try:
            if c is not None:
                c.rollback()
        except Exception:
            pass

    def tx(self, fn):
        """fn(connection) in one write transaction."""
        return self._in_transaction(fn, "BEGIN IMMEDIATE")

    def read(self, fn):
        """fn(connection) on one consistent snapshot."""
        return self._in_transaction(fn, "BEGIN")

    def _in_transaction(self, fn, begin: str):
        try:
            c = self.conn()
            c.execute(begin)
            out = fn(c)
            c.commit()
            return out
        except IndexError_:
            self._rollback()
            raise
        except Exception as e:
            self._rollback()
            raise IndexError_(f"{self.describe()}: {type(e).__name__}: {e}") from None

    def describe(self) -> str:
        raise NotImplementedError

    def landmark_tables(self) -> tuple[str, ...]:
        return (f"CREATE TABLE IF NOT EXISTS hashes (hash INTEGER NOT NULL, item {self.bigint} NOT NULL, "
                "t INTEGER NOT NULL)", "CREATE INDEX IF NOT EXISTS hashes_by_hash ON hashes (hash)")

    def create(self) -> None:
        b, r = self.bigint, self.real
        for q in (
                f"CREATE TABLE IF NOT EXISTS items (id {self.autoid}, kind TEXT NOT NULL, same_as {b}, "
                f"play_id TEXT, channel TEXT, ref TEXT, answer TEXT, duration_s {r}, rec_offset_s {r}, "
                f"indexed_s {r} NOT NULL DEFAULT 0, t_end_s {r} NOT NULL DEFAULT 0, hashes {b} NOT NULL DEFAULT 0, first_seen TEXT NOT NULL, "
                f"last_seen TEXT NOT NULL, plays {b} NOT NULL DEFAULT 0, paid {b} NOT NULL DEFAULT 0)",
                "CREATE INDEX IF NOT EXISTS items_by_ref ON items (ref)",
                "CREATE INDEX IF NOT EXISTS items_by_play ON items (play_id)",
                *self.landmark_tables(),
                # rec_start_s: where the recording's start lies in the play (seconds from the song's start)
                f"CREATE TABLE IF NOT EXISTS plays (play_id TEXT PRIMARY KEY, item {b} NOT NULL, rec_start_s {r})",
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"):
            self.execute(q)
        rows = self.execute("SELECT value FROM meta WHERE key = 'schema'", fetch=True)
        if not rows:
            self.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (self.schema,))
        elif rows[0][0] != self.schema:
            self.migrate(rows[0][0])

    def migrate(self, found: str) -> None:
        raise IndexError_(f"{self.describe()}: schema {found}, this onair reads {self.schema}")

    # -- items
    def new_item(self, kind: str, now: str, *, play_id=None, channel=None, ref=None, answer=None,
                 duration_s=None, rec_offset_s=None, same_as=None) -> int:
        rows = self.execute(
            "INSERT INTO items (kind, same_as, play_id, channel, ref, answer, duration_s, rec_offset_s, "
            "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (kind, same_as, play_id, channel, ref, None if answer is None else json.dumps(answer), duration_s,
             rec_offset_s, now, now), fetch=True)
        return int(rows[0][0])

    def add_hashes(self, item: int, h: np.ndarray, t: np.ndarray, seconds: float, t_end_s: float) -> None:
        """`seconds` of audio, up to item time `t_end_s`."""
        self._store_landmarks(item, h, t)
        self.execute("UPDATE items SET indexed_s = indexed_s + ?, hashes = hashes + ?, "
                     "t_end_s = CASE WHEN t_end_s > ? THEN t_end_s ELSE ? END WHERE id = ?",
                     (float(seconds), len(h), float(t_end_s), float(t_end_s), item))

    def _store_landmarks(self, item: int, h: np.ndarray, t: np.ndarray) -> None:
        o = np.argsort(h, kind="stable")       # in key order: the index's pages are written in sequence
        h, t = h[o], t[o]
        self.execute("INSERT INTO hashes (hash, item, t) VALUES (?, ?, ?)",
                     list(zip(h.astype(np.int64).tolist(), [item] * len(h), t.astype(np.int64).tolist())),
                     many=True)

    def rows_for(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index rows (hash, item, frame) for the distinct hashes of `h`."""
        u = np.unique(h).astype(np.int64).tolist()
        if not u:
            return (np.zeros(0, np.uint32),) + (np.zeros(0, np.int64),) * 2
        return self._rows(u)

    def _rows(self, u: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._select_hashes(u)
        if not rows:
            return (np.zeros(0, np.uint32),) + (np.zeros(0, np.int64),) * 2
        a = np.asarray(rows, np.int64)
        return a[:, 0].astype(np.uint32), a[:, 1], a[:, 2]

    def _select_hashes(self, u: list[int]):
        out = []
        for i in range(0, len(u), 900):    # SQLite's default limit of parameters is 999 on old builds
            part = u[i:i + 900]
            out += self.execute(f"SELECT hash, item, t FROM hashes WHERE hash IN ({','.join('?' * len(part))})",
                                part, fetch=True)
        return out

    def item(self, item: int) -> dict | None:
        rows = self.execute(f"SELECT {', '.join(ITEM_FIELDS)} FROM items WHERE id = ?", (item,), fetch=True)
        return _item_of(rows[0]) if rows else None

    def canonical(self, item: int) -> dict | None:
        """The item `item` was found to be (following same_as), with its label."""
        seen = set()
        d = self.item(item)
        while d is not None and d["same_as"] is not None and d["id"] not in seen:
            seen.add(d["id"])
            d = self.item(d["same_as"])
        return d

    def by_ref(self, ref: str) -> int | None:
        rows = self.execute("SELECT id FROM items WHERE ref = ? AND same_as IS NULL ORDER BY id LIMIT 1", (ref,),
                            fetch=True)
        return int(rows[0][0]) if rows else None

    def label(self, item: int, kind: str, *, ref=None, answer=None, duration_s=None, rec_offset_s=None,
              same_as=None) -> None:
        self.execute("UPDATE items SET kind = ?, ref = ?, answer = ?, duration_s = ?, rec_offset_s = ?, same_as = ? "
                     "WHERE id = ?", (kind, ref, None if answer is None else json.dumps(answer), duration_s,
                                      rec_offset_s, same_as, item))

    def restart_window(self, item: int, now: str) -> None:
        """An unknown item asked about again and still unknown: its window starts anew."""
        self.execute("UPDATE items SET first_seen = ? WHERE id = ?", (now, item))

    def longest_indexed(self, item: int) -> float:
        """Seconds of audio held by the longest entry of canonical item `item` (itself or found to be it)."""
        rows = self.execute("SELECT MAX(indexed_s) FROM items WHERE id = ? OR same_as = ?", (item, item), fetch=True)
        return float(rows[0][0]) if rows and rows[0][0] is not None else 0.0

    def unplace(self, item: int) -> None:
        """Entries found to be `item` lose their place in it (their time base was another's)."""
        self.execute("UPDATE items SET rec_offset_s = NULL WHERE same_as = ?", (item,))

    def placed(self, item: int) -> dict[int, tuple[float, float, float]]:
        """Entries of canonical item `item` placed in it: {entry: (item time at the entry's time 0,
        and the stretch it holds, from and to, in item time)}."""
        rows = self.execute("SELECT id, rec_offset_s, t_end_s - indexed_s, t_end_s FROM items "
                            "WHERE (id = ? OR same_as = ?) AND rec_offset_s IS NOT NULL", (item, item), fetch=True)
        return {int(i): (float(o), float(o + a), float(o + b)) for i, o, a, b in rows}

    def groups(self, ids: list[int]) -> dict[int, tuple[int, float]]:
        """For entries `ids`: {entry: (its canonical item, seconds its times move to be in the
        canonical's)} where both are placed in one time base; entries not placed so are left out."""
        out = {}
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            rows = self.execute(
                "SELECT e.id, c.id, e.rec_offset_s - c.rec_offset_s FROM items e JOIN items c ON c.id = e.same_as "
                f"WHERE e.id IN ({','.join('?' * len(part))}) AND c.same_as IS NULL "
                "AND e.rec_offset_s IS NOT NULL AND c.rec_offset_s IS NOT NULL", part, fetch=True)
            out.update({int(e): (int(c), float(d)) for e, c, d in rows})
        return out

    def plays_of(self, item: int) -> list[str]:
        """Plays answered by `item` or by items found to be it."""
        rows = self.execute("SELECT play_id FROM plays WHERE item = ? OR item IN "
                            "(SELECT id FROM items WHERE same_as = ?) ORDER BY play_id", (item, item), fetch=True)
        return [r[0] for r in rows]

    def touch(self, item: int, now: str, paid: int = 0) -> None:
        self.execute("UPDATE items SET last_seen = ?, plays = plays + 1, paid = paid + ? WHERE id = ?",
                     (now, paid, item))

    # -- plays
    def set_play(self, play_id: str, item: int, rec_start_s: float | None = None) -> None:
        """The play's answer is `item`, the recording starting `rec_start_s` into the play (when known)."""
        self.execute("DELETE FROM plays WHERE play_id = ?", (play_id,))
        self.execute("INSERT INTO plays (play_id, item, rec_start_s) VALUES (?, ?, ?)", (play_id, item, rec_start_s))

    def play(self, play_id: str) -> tuple[int, float | None] | None:
        """(item, rec_start_s) of a play answered, or None."""
        rows = self.execute("SELECT item, rec_start_s FROM plays WHERE play_id = ?", (play_id,), fetch=True)
        return (int(rows[0][0]), rows[0][1]) if rows else None

    # -- listing and pruning
    def items(self, kind: str | None = None, limit: int | None = None) -> list[dict]:
        q = f"SELECT {', '.join(ITEM_FIELDS)} FROM items"
        args: tuple = ()
        if kind:
            q, args = q + " WHERE kind = ?", (kind,)
        q += " ORDER BY id"
        if limit:
            q += f" LIMIT {int(limit)}"
        return [_item_of(r) for r in self.execute(q, args, fetch=True)]

    def hashes_of(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.execute("SELECT hash, t FROM hashes WHERE item = ? ORDER BY t", (item,), fetch=True)
        a = np.asarray(rows, np.int64).reshape(-1, 2)
        return a[:, 0].astype(np.uint32), a[:, 1].astype(np.int32)

    def all_landmarks(self, items: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {i: self.hashes_of(i) for i in items}

    def storage(self) -> dict:
        return {}

    def _delete_landmarks(self, part: list[int]) -> None:
        self.execute(f"DELETE FROM hashes WHERE item IN ({','.join('?' * len(part))})", part)

    def delete_items(self, ids: list[int]) -> None:
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            marks = ",".join("?" * len(part))
            self._delete_landmarks(part)
            self.execute(f"DELETE FROM plays WHERE item IN ({marks})", part)
            self.execute(f"UPDATE items SET same_as = NULL WHERE same_as IN ({marks})", part)
            self.execute(f"DELETE FROM items WHERE id IN ({marks})", part)

    def stats(self) -> dict:
        rows = self.execute("SELECT kind, COUNT(*), COALESCE(SUM(hashes), 0), COALESCE(SUM(indexed_s), 0) "
                            "FROM items GROUP BY kind", fetch=True)
        return {k: {"items": int(n), "hashes": int(h), "seconds": round(float(s), 1)} for k, n, h, s in rows}

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None


def _item_of(row) -> dict:
    d = dict(zip(ITEM_FIELDS, row))
    d["answer"] = json.loads(d["answer"]) if d["answer"] else None
    return d


class SqliteStore(SqlStore):
    """One file per deployment; landmarks in merged posting-list segments (pipeline.identity.segments).
    `flush_landmarks`, `merge_factor`: when batches become a segment and segments merge;
    `background`: compact in a thread of this process (False: in the writing call)."""
    schema = "2"

    def __init__(self, path: Path, busy_timeout_s: float = 30.0, flush_landmarks: int = 1_000_000,
                 merge_factor: int = 4, background: bool = True):
        super().__init__()
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.segments = Segments(self, Path(str(self.path) + ".compact.lock"), flush_landmarks, merge_factor,
                                 background)

    def describe(self) -> str:
        return f"fingerprint index {self.path}"

    def _connect(self):
        try:
            c = sqlite3.connect(self.path, timeout=self.busy_timeout_s)
            # a new file only: 16 KiB pages hold a large hash's posting list in its row
            c.execute("PRAGMA page_size=16384")
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: a commit survives a crash of the process
            c.execute("PRAGMA cache_size=-65536")    # 64 MiB of pages: the upper levels of the B-trees stay in memory
            c.execute("PRAGMA journal_size_limit=67108864")   # a merge's WAL is cut back to 64 MiB after it
            return c
        except sqlite3.Error as e:
            raise IndexError_(f"{self.describe()}: {type(e).__name__}: {e}") from None

    def landmark_tables(self) -> tuple[str, ...]:
        return Segments.TABLES

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        super().create()

    def migrate(self, found: str) -> None:
        """Schema 1 (one row per landmark) to 2: each item's landmarks become one batch."""
        if found != "1":
            super().migrate(found)
        rows = self.execute("SELECT item, hash, t FROM hashes ORDER BY item, t", fetch=True)
        a = np.asarray(rows, np.int64).reshape(-1, 3)
        for item in np.unique(a[:, 0]):
            m = a[:, 0] == item
            self.segments.add(int(item), a[m, 1].astype(np.uint32), a[m, 2].astype(np.int32))
        self.execute("DROP TABLE hashes")
        self.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (self.schema,))
        log.info("%s: moved %d landmarks to schema %s", self.describe(), len(a), self.schema)

    def _store_landmarks(self, item: int, h: np.ndarray, t: np.ndarray) -> None:
        self.segments.add(item, h, t)

    def _rows(self, u: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            return self.segments.rows_for(u)
        except (ValueError, TypeError) as e:       # a damaged posting list: the file is corrupt
            raise IndexError_(f"{self.describe()}: unreadable posting list: {e}") from None

    def hashes_of(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        return self.segments.landmarks_of({item})[item]

    def all_landmarks(self, items: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return self.segments.landmarks_of(items)

    def _delete_landmarks(self, part: list[int]) -> None:
        self.segments.delete_items(part)

    def storage(self) -> dict:
        pages = {k: self.execute(f"PRAGMA {k}", fetch=True)[0][0] for k in ("page_count", "freelist_count", "page_size")}
        return {**self.segments.storage(), "file_bytes": pages["page_count"] * pages["page_size"],
                "free_bytes": pages["freelist_count"] * pages["page_size"]}

    def compact(self, full: bool = False) -> dict:
        return self.segments.compact(full)


class PostgresStore(SqlStore):
    param = "%s"
    autoid = "BIGSERIAL PRIMARY KEY"
    real = "DOUBLE PRECISION"
    bigint = "BIGINT"

    def __init__(self, dsn: str):
        super().__init__()
        self._dsn = dsn

    def describe(self) -> str:
        # the DSN may hold a password: name the database only
        try:
            import psycopg
            info = psycopg.conninfo.conninfo_to_dict(self._dsn)
            return f"fingerprint index postgresql://{info.get('host', '')}:{info.get('port', '')}/{info.get('dbname', '')}"
        except Exception:
            return "fingerprint index (postgresql)"

    def _connect(self):
        try:
            import psycopg
        except ImportError:
            raise IndexError_("identity.backend postgres needs the psycopg package: pip install 'onair[postgres]'") \
                from None
        try:
            return psycopg.connect(self._dsn, connect_timeout=10)
        except Exception as e:
            raise IndexError_(f"{self.describe()}: {type(e).__name__}: {e}") from None

    def _select_hashes(self, u: list[int]):
        return self.execute("SELECT hash, item, t FROM hashes WHERE hash = ANY(?)", (u,), fetch=True)
