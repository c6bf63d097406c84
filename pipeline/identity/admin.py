"""`onair fingerprints`: what the index holds, exported, pruned.

- `stats`: items, hashes and seconds of audio per kind;
- `list`: one JSON line per recording or unknown item (with the items found to be it folded in);
- `export`: every item as a JSON line, `--hashes` with its landmarks (base64 of uint32 hashes and
  int32 frames), to move an index or to inspect one;
- `prune`: drop unknown items older than the window (`identity.unknown_window_days`: they would be
  asked about again anyway) and recordings not heard for `--unused-days`, with their plays' items.
  In SQLite their landmarks leave the disk when the segments holding them are next merged, or at
  once with `compact`.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from operators.utc import iso, parse_iso
from pipeline.identity.index import make_store


def open_store(cfg: dict, out_dir: Path | None):
    """The configured store, created if new; IndexError_ when it cannot be read."""
    store = make_store(cfg, out_dir)
    store.create()
    return store


def listing(store) -> list[dict]:
    items = store.items()
    by_id = {it["id"]: it for it in items}
    out = {}
    for it in items:
        root = it
        while root["same_as"] is not None and root["same_as"] in by_id:
            root = by_id[root["same_as"]]
        if root["kind"] not in ("recording", "unknown"):
            continue
        row = out.setdefault(root["id"], {
            "item": root["id"], "kind": root["kind"], **(root["answer"] or {}), "ref": root["ref"],
            "duration_s": root["duration_s"], "first_seen": root["first_seen"], "last_seen": root["last_seen"],
            "plays": root["plays"], "paid": root["paid"], "indexed_s": 0.0, "hashes": 0, "entries": 0})
        row["indexed_s"] = round(row["indexed_s"] + float(it["indexed_s"]), 1)
        row["hashes"] += int(it["hashes"])
        row["entries"] += 1
    return list(out.values())


def export(store, out, with_hashes: bool = False) -> int:
    n = 0
    items = store.items()
    # one pass over the index for all items: a posting-list index is read by hash, not by item
    marks = store.all_landmarks({it["id"] for it in items}) if with_hashes else {}
    for it in items:
        if with_hashes:
            h, t = marks[it["id"]]
            it["landmarks"] = {"hash_u32": base64.b64encode(h.tobytes()).decode(),
                               "frame_i32": base64.b64encode(t.tobytes()).decode()}
        out.write(json.dumps(it, ensure_ascii=False) + "\n")
        n += 1
    return n


def prune(store, unknown_days: float, unused_days: float | None, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    items = store.items()
    drop = set()
    for it in items:
        if it["same_as"] is not None:
            continue
        if it["kind"] == "unknown" and now - parse_iso(it["first_seen"]) > unknown_days * 86400:
            drop.add(it["id"])
        elif (unused_days is not None and it["kind"] == "recording"
              and now - parse_iso(it["last_seen"]) > unused_days * 86400):
            drop.add(it["id"])
    # the items found to be a dropped one go with it
    grew = True
    while grew:
        more = {it["id"] for it in items if it["same_as"] in drop} - drop
        grew = bool(more)
        drop |= more
    store.delete_items(sorted(drop))
    return {"deleted_items": len(drop), "at": iso(now), "left": store.stats()}
