#!/usr/bin/env python3
"""Fingerprint index at scale: insert rate, query time and disk per recording (issue #20).

Synthetic recordings, as the issue allows: each is `--seconds` of landmarks at the density onair
indexes (`--hashes-per-s`, measured on aired music: docs/identity.md), uniformly random 20-bit
hashes at increasing frames. Queries are 8 s excerpts of indexed recordings with 30 % of their
hashes dropped and as many random ones added (a codec's losses), plus excerpts of recordings not
in the index; each query runs the product's path: AudioIndex.lookup_hashes (SQL rows for the
distinct hashes, then the aligned-hash match). Inserts go through the product's path too
(`add_hashes`, one batch per recording), with its background compaction into posting-list
segments; the insert time runs until the compaction is idle.

    nice .venv/bin/python benchmarks/index_scale.py --recordings 1000 10000 --out /tmp/scale

Prints one JSON line per size; the index files are left in --out (delete them after).
`--query-existing INDEX` only looks up in an index it wrote, finished or not; `--warm` first reads
the index's posting lists once, so that lookups find them in the OS page cache (as on a server
whose memory holds the index) instead of on disk (the figure right after a build larger than the
page cache).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.fingerprint.landmarks import FRAME_S  # noqa: E402
from pipeline.identity.index import AudioIndex, IdentityParams  # noqa: E402
from pipeline.identity.store import SqliteStore  # noqa: E402
from pipeline.metrics import Metrics  # noqa: E402


def recording(rng, seconds: float, per_s: float):
    n = int(seconds * per_s)
    t = np.sort(rng.integers(0, int(seconds / FRAME_S), n)).astype(np.int32)
    h = rng.integers(0, 1 << 20, n).astype(np.uint32)
    return h, t


def excerpt(rng, h, t, start_s: float, seconds: float = 8.0):
    a, b = int(start_s / FRAME_S), int((start_s + seconds) / FRAME_S)
    keep = (t >= a) & (t < b) & (rng.random(len(t)) > 0.3)
    qh, qt = h[keep], t[keep] - a
    extra = len(qh)
    qh = np.concatenate([qh, rng.integers(0, 1 << 20, extra).astype(np.uint32)])
    qt = np.concatenate([qt, rng.integers(0, b - a, extra).astype(np.int32)])
    return qh, qt


def run(n: int, out: Path, seconds: float, per_s: float, queries: int, seed: int = 20) -> dict:
    path = out / f"index-{n}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    store = SqliteStore(path)
    idx = AudioIndex(store, IdentityParams(), Metrics())
    idx.create()
    rng = np.random.default_rng(seed)
    kept = {}
    t0 = time.perf_counter()
    for i in range(n):
        h, t = recording(rng, seconds, per_s)
        item = store.new_item("recording", "2026-12-06T00:00:00.000Z", ref=f"r{i}", answer={"title": f"r{i}"})
        store.add_hashes(item, h, t, seconds, seconds)
        if i % max(1, n // queries) == 0 and len(kept) < queries:
            kept[item] = (h, t)
    store.segments.wait_idle()
    insert_s = time.perf_counter() - t0
    storage = store.storage()
    store.close()
    disk = sum(os.path.getsize(str(path) + s) for s in ("", "-wal") if os.path.exists(str(path) + s))
    store = SqliteStore(path)
    rows = n * int(seconds * per_s)
    return {"recordings": n, "rows": rows, "insert_s": round(insert_s, 1),
            "insert_recordings_per_s": round(n / insert_s, 1), "insert_rows_per_s": round(rows / insert_s),
            **lookups(store, kept, rng, seconds, per_s),
            "disk_mb": round(disk / 1e6, 1), "disk_kb_per_recording": round(disk / n / 1e3, 1),
            "storage": storage}


def lookups(store, kept: dict, rng, seconds: float, per_s: float) -> dict:
    """A query from each kept recording (item -> its landmarks), then as many from recordings not in
    the index, through the product's lookup: times and verdicts."""
    idx = AudioIndex(store, IdentityParams(), Metrics())
    times, right, wrong, false = [], 0, 0, 0
    for item, (h, t) in kept.items():
        qh, qt = excerpt(rng, h, t, float(rng.uniform(0, seconds - 8)))
        t1 = time.perf_counter()
        found = idx.lookup_hashes(qh, qt, 8.0, "bench")
        times.append(time.perf_counter() - t1)
        right += found is not None and found[1]["id"] == item
        wrong += found is not None and found[1]["id"] != item
    for _ in range(len(kept)):
        h, t = recording(rng, seconds, per_s)            # not in the index
        qh, qt = excerpt(rng, h, t, 30.0)
        t1 = time.perf_counter()
        false += idx.lookup_hashes(qh, qt, 8.0, "bench") is not None
        times.append(time.perf_counter() - t1)
    return {"query_p50_ms": round(1000 * float(np.percentile(times, 50)), 1),
            "query_p95_ms": round(1000 * float(np.percentile(times, 95)), 1),
            "queries": len(times), "found": right, "wrong": wrong, "false_matches": false}


def warm(store) -> float:
    """Read every posting list once; returns the seconds it took."""
    t0 = time.perf_counter()
    store.execute("SELECT SUM(LENGTH(data)) FROM postings", fetch=True)
    return round(time.perf_counter() - t0, 1)


def query_existing(path: Path, seconds: float, per_s: float, queries: int, seed: int = 20,
                   warm_first: bool = False) -> dict:
    """Lookups on an index this script is still writing (or left unfinished): the recordings in it
    are made again from the same seed, in insert order (item ids from 1)."""
    store = SqliteStore(path)
    n = store.execute("SELECT COUNT(*) FROM items", fetch=True)[0][0]
    rng = np.random.default_rng(seed)
    kept = {}
    for i in range(n):
        h, t = recording(rng, seconds, per_s)
        if i % max(1, n // queries) == 0 and len(kept) < queries:
            kept[i + 1] = (h, t)
    warmed = {"warm_s": warm(store)} if warm_first else {}
    return {"recordings": n, **warmed, **lookups(store, kept, np.random.default_rng(seed + 1), seconds, per_s),
            "storage": store.storage()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recordings", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--seconds", type=float, default=180.0, help="length of one recording")
    ap.add_argument("--hashes-per-s", type=float, default=60.0,
                    help="landmarks indexed per second of audio (onair's default parameters on aired music)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--out", default="/tmp/onair-index-scale")
    ap.add_argument("--query-existing", type=Path, metavar="INDEX",
                    help="only look up in an index file this script wrote (or is still writing)")
    ap.add_argument("--warm", action="store_true", help="--query-existing: read the posting lists once first")
    args = ap.parse_args()
    if args.query_existing:
        print(json.dumps(query_existing(args.query_existing, args.seconds, args.hashes_per_s, args.queries,
                                        warm_first=args.warm)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for n in args.recordings:
        print(json.dumps(run(n, out, args.seconds, args.hashes_per_s, args.queries)), flush=True)


if __name__ == "__main__":
    main()
