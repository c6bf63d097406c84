#!/usr/bin/env python3
"""How well landmark hashes survive two channels' codecs: every pair of request clips from two
different channels of one airplay run that hold the same recording, overlapping by 8 s or more,
against pairs of clips of different items (issue #20; docs/figures.md#audio-identity-issue-20).

    .venv/bin/python benchmarks/fingerprint_pairs.py --run .cache/airplay/RUN \\
        --day .cache/airplay/day-c4-m60-s1 [--max-clips 220]

For each hashing (fan-out 3 and 6) it prints the aligned-hash count at the best offset for the
same-recording pairs (median, 10th percentile) and for the unrelated pairs (99.9th percentile,
max, and max among those whose aligned hashes span half the query), and the share of
same-recording pairs that onair's rule (25 hashes, half the query) accepts.
"""
from __future__ import annotations

import argparse
import base64
import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from operators.audio.clip import decode_clip  # noqa: E402
from operators.fingerprint import landmarks as L  # noqa: E402


def clips(run: Path, day: Path, limit: int):
    plays = list(csv.DictReader(open(day / "plays.csv")))
    out = []
    for line in open(run / "out" / "requests.jsonl"):
        r = json.loads(line)
        mid = (r["clip_start"] + r["clip_end"]) / 2
        own = [p for p in plays if p["channel"] == r["channel"] and float(p["start"]) <= mid <= float(p["end"])]
        if own:
            out.append((own[0]["item_id"], r["channel"], decode_clip(base64.b64decode(r["audio"]["data"])),
                        r["clip_start"] - float(own[0]["start"])))
        if len(out) >= limit:
            break
    return out


def evaluate(cs, fanout: int) -> dict:
    p = L.FingerprintParams()
    fps = [L.hashes(*L.peaks(L.to_fp_rate(c[2]), p.peaks_per_s), fanout=fanout) for c in cs]
    loose = L.FingerprintParams(p.peaks_per_s, 1, 0.0)
    same, diff = [], []
    for i, j in itertools.permutations(range(len(cs)), 2):
        if cs[i][1] == cs[j][1] or (cs[i][0] == cs[j][0] and abs(cs[i][3] - cs[j][3]) > 2):
            continue
        (hq, tq), (hd, td) = fps[i], fps[j]
        m = L.best_match(hq, tq, hd, np.zeros(len(hd), np.int64), td, int(len(cs[i][2]) / 16000 / L.FRAME_S), loose)
        (same if cs[i][0] == cs[j][0] else diff).append((m.aligned, m.coverage) if m else (0, 0.0))
    same, diff = np.array(same), np.array(diff)
    covered = diff[diff[:, 1] >= p.min_coverage][:, 0]
    return {"fanout": fanout, "same_pairs": len(same), "same_median": float(np.median(same[:, 0])),
            "same_p10": float(np.percentile(same[:, 0], 10)),
            "same_accepted": round(float(np.mean((same[:, 0] >= p.min_aligned) & (same[:, 1] >= p.min_coverage))), 3),
            "other_pairs": len(diff), "other_p99_9": float(np.percentile(diff[:, 0], 99.9)),
            "other_max": float(diff[:, 0].max()), "other_max_half_covered": float(covered.max()) if len(covered) else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--day", required=True, type=Path)
    ap.add_argument("--max-clips", type=int, default=220)
    a = ap.parse_args()
    cs = clips(a.run, a.day, a.max_clips)
    for fanout in (3, 6):
        print(json.dumps(evaluate(cs, fanout)), flush=True)


if __name__ == "__main__":
    main()
