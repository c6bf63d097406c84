"""`onair prune --dir DIR --keep-clips-days N`: drop old recognition clips, keep the records.

A request carries its clip inline (base64 FLAC, about 300 kB), as the requests topic does:
the record is the contract, the audit of what was paid for, and what `onair recognize --dir`
sends later. Clips are 99 % of a day's bytes (docs/figures.md), and once a day is recognised,
reported and billed they are needed no more. Pruning rewrites the requests of days older than
N days with `audio.data` null and the clip's `sha1` and `bytes` kept (the ledger's
`clip_sha1` still joins a paid call to its request); every other field stays. A day's file
is replaced atomically (a reader sees the old file or the new one); a day pruned before is
left as it is.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
from pathlib import Path

from pipeline.outputs import day_dirs, dumps

log = logging.getLogger("onair.prune")

MIN_KEEP_DAYS = 2     # today and yesterday still receive late records


def prune_clips(out_dir: str | Path, keep_days: int, today: dt.date | None = None) -> dict:
    """Prune the clips of the days before `today - keep_days`; returns what was done."""
    if keep_days < MIN_KEEP_DAYS:
        raise ValueError(f"--keep-clips-days must be at least {MIN_KEEP_DAYS} (today and yesterday still "
                         f"receive records)")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"--dir {out_dir}: no such folder")
    today = today or dt.datetime.now(dt.timezone.utc).date()
    cutoff = (today - dt.timedelta(days=keep_days)).isoformat()
    done = {"days": 0, "clips": 0, "bytes_before": 0, "bytes_after": 0}
    for day in day_dirs(out_dir):
        path = out_dir / day / "requests.jsonl"
        if day >= cutoff or not path.exists():
            continue
        n, before, after = _prune_file(path)
        if n:
            done["days"] += 1
            done["clips"] += n
            done["bytes_before"] += before
            done["bytes_after"] += after
            log.info("%s: %d clips pruned (%.1f MB -> %.1f MB)", path, n, before / 1e6, after / 1e6)
    return done


def _prune_file(path: Path) -> tuple[int, int, int]:
    before = path.stat().st_size
    lines, n = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            text = line.rstrip("\n")
            try:
                rec = json.loads(text) if text.strip() else None
            except ValueError:
                rec = None
            audio = rec.get("audio") if isinstance(rec, dict) else None
            if isinstance(audio, dict) and isinstance(audio.get("data"), str):
                try:
                    clip = base64.b64decode(audio["data"], validate=True)
                except ValueError:
                    log.warning("%s:%d: clip is not base64; left as it is", path, lineno)
                else:
                    rec["audio"] = {**audio, "data": None, "sha1": hashlib.sha1(clip).hexdigest(),
                                    "bytes": len(clip)}
                    text, n = dumps(rec), n + 1
            lines.append(text)
    if not n:
        return 0, before, before
    tmp = path.with_name(f".{path.name}.prune")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(x + "\n" for x in lines))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n, before, path.stat().st_size
