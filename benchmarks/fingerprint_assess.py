#!/usr/bin/env python3
"""Assess landmark fingerprinting for the local index (issue #20).

Compares the PyPI package ``audfprint2`` (in-process API: Analyzer, HashTable,
Matcher) with a minimal landmark implementation written here on numpy/scipy
with audfprint's parameters (11025 Hz, 512-point FFT, 256 hop, 8+6+6-bit
hashes, fan-out 3, dt 2..63 frames, |df| < 31 bins) but a growable index with
no depth limit and full 32-bit frame times.

Every figure in docs/fingerprint-assessment.md comes from one run (audfprint2 installed with
`pip install --target /work/fp-pkgs audfprint2`, never into the venv):

    PYTHONPATH=/work/fp-pkgs nice -n 10 .venv/bin/python \
        benchmarks/fingerprint_assess.py --songs 40 --queries 60

Queries are 8 s excerpts at random offsets of the indexed songs after a
condition (clean, AAC/MP2/AC-3 round trip at 48 kHz, +-5 % speed), matched
against an index of the clean songs. Negatives are 8 s excerpts of speech,
noise and of songs not in the index. A match is accepted only with at least
--min-aligned time-aligned hashes (hits within +-1 frame of one offset).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from pathlib import Path

import av
import numpy as np
from scipy import signal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from operators.fingerprint import landmarks  # noqa: E402

CLIPS = Path("/work/shared/data/clips")
SR_IN = 16000          # what onair's pipeline carries
SR = 11025             # audfprint's analysis rate
N_FFT, N_HOP = 512, 256
HOP_S = N_HOP / SR     # 23.2 ms
QUERY_S = 8.0


# ------------------------------------------------------------------ audio

def duration_s(path: Path) -> float:
    with av.open(str(path)) as c:
        return (c.duration or 0) / 1e6


def decode(src, rate: int = SR_IN) -> np.ndarray:
    """File path or bytes -> mono float32 at `rate`."""
    f = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else str(src)
    out = []
    with av.open(f) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in c.decode(audio=0):
            for g in rs.resample(frame):
                out.append(g.to_ndarray().reshape(-1))
        for g in rs.resample(None):
            out.append(g.to_ndarray().reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


CODECS = {  # broadcast-like settings, mono at 48 kHz (stereo rates halved)
    "aac": ("aac", "adts", 64_000),    # AAC-LC 128 kb/s stereo (DAB+/DVB/HLS radio)
    "mp2": ("mp2", "mp2", 128_000),    # MPEG-1 Layer II 256 kb/s stereo (DVB-S/DAB)
    "ac3": ("ac3", "ac3", 96_000),     # AC-3 192 kb/s stereo (DVB/ATSC)
}


def codec_roundtrip(x: np.ndarray, codec: str) -> np.ndarray:
    name, fmt, rate = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        s = c.add_stream(name, rate=48000, layout="mono")
        s.bit_rate = rate
        fr = av.AudioFrame.from_ndarray(x.astype(np.float32)[None, :], format="flt", layout="mono")
        fr.sample_rate = SR_IN
        rs = av.AudioResampler(format=s.codec_context.format.name, layout="mono", rate=48000,
                               frame_size=s.codec_context.frame_size or 1024)
        pts = 0
        for g in list(rs.resample(fr)) + list(rs.resample(None)):
            g.pts = pts
            pts += g.samples
            for p in s.encode(g):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return decode(buf.getvalue(), SR_IN)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (pitch and tempo together, as radio does)."""
    from fractions import Fraction
    fr = Fraction(factor).limit_denominator(200)
    return signal.resample_poly(x, fr.denominator, fr.numerator).astype(np.float32)


def to_11k(x: np.ndarray) -> np.ndarray:
    return signal.resample_poly(x, 441, 640).astype(np.float32)


# ------------------------------------------------------- own landmark code

F1_BITS, DF_BITS, DT_BITS = 8, 6, 6
MINDT, TARGETDT, TARGETDF, FANOUT = 2, 63, 31, 3
PEAK_DT, PEAK_DF = 3, 12   # local max over 7 frames x 25 bins
PEAKS_PER_S = 8            # density: 8 peaks/s x fan-out 3 ~ audfprint2's ~21 hashes/s at density=20


def own_peaks(x11: np.ndarray, per_s: int = PEAKS_PER_S) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima over 25 bins x 7 frames, the strongest `per_s` a second (onair's own code)."""
    return landmarks.peaks(x11, per_s)


def own_hashes(t: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each anchor paired with its next FANOUT peaks with MINDT <= dt < TARGETDT, |df| < TARGETDF.
    Returns (hash uint32 of 20 bits, anchor frame int32), unique pairs (onair's own code, at the
    fan-out assessed here; onair ships 6: docs/fingerprint-assessment.md)."""
    return landmarks.hashes(t, f, fanout=FANOUT)


def own_fingerprint(x16: np.ndarray, per_s: int = PEAKS_PER_S):
    return own_hashes(*own_peaks(to_11k(x16), per_s))


class OwnIndex:
    """CSR index over the 2^20 hash space: per entry item id (int32) and frame (int32)."""
    NH = 1 << 20

    def __init__(self, per_s: int = PEAKS_PER_S):
        self.per_s = per_s
        self.parts = []   # (hash, item, t)
        self.names = []

    def add(self, name: str, x16: np.ndarray) -> int:
        h, t = own_fingerprint(x16, self.per_s)
        self.parts.append((h, np.full(len(h), len(self.names), np.int32), t))
        self.names.append(name)
        return len(h)

    def finalize(self):
        h = np.concatenate([p[0] for p in self.parts])
        it = np.concatenate([p[1] for p in self.parts])
        t = np.concatenate([p[2] for p in self.parts])
        o = np.argsort(h, kind="stable")
        self.item, self.t = it[o], t[o]
        self.off = np.zeros(self.NH + 1, np.int64)
        np.cumsum(np.bincount(h, minlength=self.NH), out=self.off[1:])
        self.parts = []

    def nbytes(self) -> int:
        return self.item.nbytes + self.t.nbytes + self.off.nbytes

    def query_hashes(self, hq, tq):
        """-> (item, aligned count, offset frames, runner-up count)."""
        if len(hq) == 0:
            return None, 0, 0, 0
        lo, hi = self.off[hq], self.off[hq.astype(np.int64) + 1]
        cnt = hi - lo
        tot = int(cnt.sum())
        if tot == 0:
            return None, 0, 0, 0
        rep = np.repeat(np.arange(len(hq)), cnt)
        pos = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(tot)
        delta = self.t[pos].astype(np.int64) - tq[rep]
        item = self.item[pos].astype(np.int64)
        base = int(delta.min())
        span = int(delta.max()) - base + 3
        key = item * span + (delta - base + 1)
        u, c = np.unique(key, return_counts=True)
        sm = c.copy()
        for d in (-1, 1):   # a peak moved by one frame still counts
            j = np.clip(np.searchsorted(u, u + d), 0, len(u) - 1)
            sm += np.where(u[j] == u + d, c[j], 0)
        its = u // span
        order = np.lexsort((-sm, its))          # best offset first within each item
        first = order[np.r_[True, its[order][1:] != its[order][:-1]]]
        best = first[np.argsort(-sm[first])]
        b = best[0]
        ru = int(sm[best[1]]) if len(best) > 1 else 0
        return int(its[b]), int(sm[b]), int(u[b] % span) + base - 1, ru

    def query(self, x16):
        return self.query_hashes(*own_fingerprint(x16, self.per_s))


# ------------------------------------------------------------ audfprint2

class AfpIndex:
    def __init__(self):
        from audfprint2 import Analyzer, HashTable, Matcher
        from audfprint2.core.analyzer import landmarks2hashes
        self.an, self.ht, self.m = Analyzer(), HashTable(), Matcher()
        self.l2h = landmarks2hashes
        self.names = []

    def fingerprint(self, x16):
        x = to_11k(x16).astype(np.float64)
        h = self.l2h(self.an.peaks2landmarks(self.an.find_peaks(x, SR)))
        if len(h) == 0:
            return h
        return np.unique(h, axis=0)          # as Analyzer.wavfile2hashes does

    def add(self, name, x16):
        h = self.fingerprint(x16)
        self.ht.store(name, [(int(a), int(b)) for a, b in h.tolist()])
        self.names.append(name)
        return len(h)

    def finalize(self):
        pass

    def nbytes(self):
        return self.ht.table.nbytes + self.ht.counts.nbytes

    def query_hashes(self, h):
        if len(h) == 0:
            return None, 0, 0, 0
        r = self.m.match_hashes(self.ht, h)
        if len(r) == 0:
            return None, 0, 0, 0
        ru = int(r[1, 1]) if len(r) > 1 else 0
        return int(r[0, 0]), int(r[0, 1]), int(r[0, 2]), ru

    def query(self, x16):
        return self.query_hashes(self.fingerprint(x16))


# ------------------------------------------------------------- workload

def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pick_songs(n_index: int, n_out: int, seed: int):
    files = sorted((CLIPS / "music").glob("*.opus"))
    durs = [(p, duration_s(p)) for p in files]
    ok = [p for p, d in durs if d >= 60]
    rnd = random.Random(seed)
    rnd.shuffle(ok)
    return ok[:n_index], ok[n_index:n_index + n_out]


def excerpt(x: np.ndarray, rnd: random.Random, dur: float, pad: float = 0.0):
    n = int(dur * SR_IN)
    p = int(pad * SR_IN)
    if len(x) < n + 2 * p:
        return None, 0.0
    s = rnd.randrange(p, len(x) - n - p + 1)
    return x[s - p:s + n + p], s / SR_IN


def make_queries(songs, conds, nq, rnd):
    """-> {cond: [(song index, true start s, audio)]}"""
    out = {}
    for cond in conds:
        qs = []
        for _ in range(nq):
            i = rnd.randrange(len(songs))
            x = songs[i]
            if cond == "clean":
                q, s = excerpt(x, rnd, QUERY_S)
            elif cond in CODECS:
                seg, s = excerpt(x, rnd, QUERY_S, pad=1.0)   # s: start of the unpadded part
                y = codec_roundtrip(seg, cond)
                q = y[SR_IN:SR_IN + int(QUERY_S * SR_IN)]
            else:   # speed
                fac = {"speed+5%": 1.05, "speed-5%": 0.95}[cond]
                seg, s = excerpt(x, rnd, QUERY_S * fac + 0.1)
                q = speed(seg, fac)[:int(QUERY_S * SR_IN)]
            qs.append((i, s, q))
        out[cond] = qs
    return out


def negatives(held_out, nq, rnd):
    out = {}
    for kind in ("speech", "noise"):
        files = sorted((CLIPS / kind).glob("*"))
        rnd.shuffle(files)
        qs = []
        for p in files:
            if len(qs) >= nq:
                break
            try:
                x = decode(p)
            except Exception:
                continue
            q, _ = excerpt(x, rnd, QUERY_S)
            if q is not None:
                qs.append((None, 0.0, q))
        out[f"neg:{kind}"] = qs
    qs = []
    for _ in range(nq):
        x = held_out[rnd.randrange(len(held_out))]
        q, _ = excerpt(x, rnd, QUERY_S)
        qs.append((None, 0.0, q))
    out["neg:songs-not-indexed"] = qs
    return out


WARPS = [round(1 + 0.015 * k, 3) for k in range(-4, 5)]   # 0.94 .. 1.06, step 1.5 %


def run_query(idx, q, warp: bool):
    """Plain query, or the best over speed-warped versions of the query."""
    if not warp:
        return idx.query(q) + (1.0,)
    best = (None, 0, 0, 0, 1.0)
    for w in WARPS:
        r = idx.query(q if w == 1.0 else speed(q, 1 / w))
        if r[1] > best[1]:
            best = r + (w,)
    return best


def evaluate(idx, qsets, min_aligned, warp=False):
    rows = {}
    for cond, qs in qsets.items():
        ok = wrong = none = off_ok = 0
        scores, times = [], []
        for i, s, q in qs:
            t0 = time.perf_counter()
            item, n, off, ru, w = run_query(idx, q, warp)
            times.append(time.perf_counter() - t0)
            scores.append(n)
            if n < min_aligned or item is None:
                none += 1
                continue
            if i is None:
                wrong += 1
                continue
            right = item == i
            ok += right
            wrong += not right
            # offset into the recording within 1 s (a warped query is back on the song's timeline)
            if right and abs(off * HOP_S - s) <= 1.0:
                off_ok += 1
        k = max(1, len(qs))
        rows[cond] = dict(n=len(qs), correct=ok / k, wrong=wrong / k, none=none / k,
                          offset_ok=off_ok / max(1, ok),
                          score_p50=float(np.median(scores)) if scores else 0,
                          score_max=int(max(scores)) if scores else 0,
                          query_ms=1000 * float(np.median(times)) if times else 0)
    return rows


# --------------------------------------------------------- audfprint2 limits

def afp_limits(songs, names):
    """Measure the three limits named in the issue."""
    from audfprint2 import HashTable
    out = {}
    r0 = rss_mib()
    ht = HashTable()
    r1 = rss_mib()
    out["table_bytes"] = int(ht.table.nbytes)
    out["table_shape"] = list(ht.table.shape)
    out["rss_after_alloc_mib"] = round(r1 - r0, 1)
    out["maxtime_frames"] = 1 << ht.maxtimebits
    out["offset_wrap_s"] = round((1 << ht.maxtimebits) * HOP_S, 1)
    out["max_ids"] = (1 << (32 - ht.maxtimebits)) - 1
    del ht
    # (a) wrap: an item longer than 380 s (songs concatenated), query at 500 s
    long = np.concatenate(songs)[: int(600 * SR_IN)]
    a = AfpIndex()
    a.add("long", long)
    o = OwnIndex(22)
    o.add("long", long)
    o.finalize()
    wrap = []
    for start in (100.0, 300.0, 450.0, 520.0):
        q = long[int(start * SR_IN):int((start + QUERY_S) * SR_IN)]
        _, na, offa, _ = a.query(q)
        _, no, offo, _ = o.query(q)
        wrap.append(dict(true_s=start, afp_offset_s=round(offa * HOP_S, 1), afp_aligned=na,
                         own_offset_s=round(offo * HOP_S, 1), own_aligned=no))
    out["wrap"] = wrap
    # (b) silent drops: one song stored under 300 names; every bucket it uses overflows depth 100
    a = AfpIndex()
    h = a.fingerprint(songs[0])
    pairs = [(int(x), int(y)) for x, y in h.tolist()]
    a.ht.store("target", pairs)
    q = songs[0][int(30 * SR_IN):int((30 + QUERY_S) * SR_IN)]
    qh = a.fingerprint(q)
    before = a.query_hashes(qh)
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for k in range(300):
            a.ht.store(f"dup{k}", pairs)
    after = a.query_hashes(qh)
    hits_target = int(np.sum((a.ht.table >> a.ht.maxtimebits) == 1))
    out["drop_demo"] = dict(hashes_target=len(pairs), target_entries_left=hits_target,
                            warnings=len(w), before=dict(item=before[0], aligned=before[1]),
                            after=dict(item=a.ht.names[after[0]] if after[0] is not None else None,
                                       aligned=after[1]))
    del a
    return out


def drop_projection(hashes: np.ndarray, hours: float, depth=100):
    """Fraction of hashes audfprint2 would drop at larger index sizes, from the real
    distribution of 20-bit hashes over `hours` of music scaled linearly."""
    c = np.bincount(hashes.astype(np.int64), minlength=1 << 20).astype(np.float64)
    res = {}
    for H in (10, 50, 150, 500, 5000):
        k = c * (H / hours)
        res[f"{H}h"] = round(float(np.maximum(0, k - depth).sum() / k.sum()), 4)
    return res


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=40, help="songs in the index (>= 60 s each)")
    ap.add_argument("--held-out", type=int, default=10, help="songs kept out of the index (negatives)")
    ap.add_argument("--queries", type=int, default=60, help="queries per condition")
    ap.add_argument("--min-aligned", default="own=10,own-dense=20,audfprint2=10",
                    help="per method: time-aligned hashes a match needs (8 s query)")
    ap.add_argument("--methods", default="own,own-dense,audfprint2",
                    help="own: this file's landmarks at audfprint's density (8 peaks/s); "
                         "own-dense: 22 peaks/s; audfprint2: the package")
    ap.add_argument("--warp-queries", type=int, default=30,
                    help="queries per condition for the speed-warped search (0: skip)")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = ap.parse_args()

    t0 = time.time()
    idx_files, out_files = pick_songs(args.songs, args.held_out, args.seed)
    songs = [decode(p) for p in idx_files]
    held = [decode(p) for p in out_files]
    hours = sum(len(x) for x in songs) / SR_IN / 3600
    print(f"{len(songs)} songs, {hours * 60:.1f} min indexed; {len(held)} held out "
          f"(decode {time.time() - t0:.0f} s)", flush=True)
    rnd = random.Random(args.seed)
    conds = ["clean", "aac", "mp2", "ac3", "speed+5%", "speed-5%"]
    qsets = make_queries(songs, conds, args.queries, rnd)
    qsets.update(negatives(held, args.queries, rnd))
    print(f"queries ready ({time.time() - t0:.0f} s)", flush=True)

    results = {"songs": len(songs), "hours": hours, "queries": args.queries,
               "min_aligned": args.min_aligned, "warps": WARPS, "methods": {}}
    thr = {k: int(v) for k, v in (kv.split("=") for kv in args.min_aligned.split(","))}
    results["min_aligned"] = thr
    for m in args.methods.split(","):
        idx = {"own": lambda: OwnIndex(), "own-dense": lambda: OwnIndex(22),
               "audfprint2": lambda: AfpIndex()}[m]()
        r0 = rss_mib()
        tb = time.perf_counter()
        nh = sum(idx.add(str(p.name), x) for p, x in zip(idx_files, songs))
        idx.finalize()
        build = time.perf_counter() - tb
        mem = dict(index_bytes=idx.nbytes(), rss_delta_mib=round(rss_mib() - r0, 1))
        print(f"[{m}] built: {nh} hashes ({nh / hours / 3600:.0f}/s of audio), "
              f"{build:.1f} s = {build / hours:.0f} s per hour of audio; "
              f"index {mem['index_bytes'] / 2**20:.1f} MiB ({8 * nh / hours / 2**20:.2f} MiB/h of entries), "
              f"RSS +{mem['rss_delta_mib']} MiB", flush=True)
        rows = evaluate(idx, qsets, thr[m])
        for c, r in rows.items():
            print(f"[{m}] {c:24s} correct {r['correct']:.2f} wrong {r['wrong']:.2f} "
                  f"none {r['none']:.2f} offset-ok {r['offset_ok']:.2f}  aligned p50 {r['score_p50']:.0f} max {r['score_max']}"
                  f"  {r['query_ms']:.0f} ms", flush=True)
        wrows = {}
        if args.warp_queries:
            sub = {c: qs[:args.warp_queries] for c, qs in qsets.items()
                   if c.startswith("speed") or c.startswith("neg") or c in ("clean", "aac")}
            wrows = evaluate(idx, sub, thr[m], warp=True)
            for c, r in wrows.items():
                print(f"[{m}+warp] {c:19s} correct {r['correct']:.2f} wrong {r['wrong']:.2f} "
                      f"none {r['none']:.2f} offset-ok {r['offset_ok']:.2f}  aligned p50 {r['score_p50']:.0f} max {r['score_max']}"
                      f"  {r['query_ms']:.0f} ms", flush=True)
        entry = dict(hashes=nh, hashes_per_s=nh / hours / 3600, build_s=build,
                     build_s_per_hour=build / hours, memory=mem,
                     # own: 8 B per hash (item, frame) + a fixed 8 MiB CSR offset table
                     entry_bytes_per_hour=(8 * nh / hours) if m != "audfprint2" else None,
                     rows=rows, warp_rows=wrows)
        if m == "own":   # same density as audfprint2: what its table would drop at scale
            allh = np.concatenate([own_fingerprint(x)[0] for x in songs])
            entry["afp_drop_projection_from_own_hashes"] = drop_projection(allh, hours)
        elif m == "audfprint2":
            ht = idx.ht
            entry["buckets_over_depth"] = int(np.sum(ht.counts > ht.depth))
            allh = np.repeat(np.arange(len(ht.counts)), np.minimum(ht.counts, 10**9))
            entry["drop_projection"] = drop_projection(allh, hours)
            print(f"[{m}] projected share of hashes dropped: {entry['drop_projection']}", flush=True)
        results["methods"][m] = entry
        del idx
    if "audfprint2" in args.methods:
        results["afp_limits"] = afp_limits(songs, None)
        print("[audfprint2 limits]", json.dumps(results["afp_limits"], indent=1), flush=True)
    results["wall_s"] = time.time() - t0
    print(f"done in {results['wall_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    sys.exit(main())
