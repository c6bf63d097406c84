"""Landmark fingerprints (Wang 2003; audfprint's parameters) and the aligned-hash match.

Audio at 16 kHz is resampled to 11025 Hz; a 512-point log spectrogram with a
256-sample hop (23.2 ms frames) and audfprint's onset high-pass gives its peaks
(local maxima over 25 bins x 7 frames), the strongest `peaks_per_s` of each
second. Each peak is paired with its next 6 peaks 2-62 frames later and less
than 31 bins away; a pair is a 20-bit hash (8 bits first bin, 6 bits bin step,
6 bits frame step) at the first peak's frame. The choice of this over the
`audfprint2` package, with figures: docs/fingerprint-assessment.md.

A match is never a best guess: the query's hashes found in the index are
counted per (item, time offset), with the offsets on each side, and an item
matches only with `min_aligned` hashes at one offset whose query times span
`min_coverage` of the query (a jingle cut from a song matches that song only
where it lasts, and a clip straddling two recordings matches neither unless
one fills most of it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

RATE = 11025
N_FFT, HOP = 512, 256
FRAME_S = HOP / RATE              # 23.2 ms: the unit of fingerprint times
MIN_DT, MAX_DT, MAX_DF, FANOUT = 2, 63, 31, 6
PEAK_DT, PEAK_DF = 3, 12
BUCKET_FRAMES = int(round(1 / FRAME_S))   # the strongest peaks_per_s are picked per 43 frames
REPEAT_SHARE = 0.5                # another offset of the item this close to the best: its place is not known


@dataclass(frozen=True)
class FingerprintParams:
    peaks_per_s: int = 22
    min_aligned: int = 25         # hashes at one offset
    min_coverage: float = 0.5     # share of the query's duration the aligned hashes must span


@dataclass(frozen=True)
class Match:
    item: int
    aligned: int                  # hashes at the best offset (+-1 frame)
    offset_s: float               # item time at the query's start
    coverage: float               # share of the query spanned by the aligned hashes
    runner_up: int                # the best count of any other item with min_aligned pairs in all, else 0
    repeat: int = 0               # the best count of the same item at another offset (a loop in it)

    @property
    def placed(self) -> bool:
        """Is the offset known? Music that repeats itself sample for sample (game and library music
        loops) matches at each repeat nearly as well: the item is known, not where in it."""
        return self.repeat < REPEAT_SHARE * self.aligned


def to_fp_rate(x16: np.ndarray) -> np.ndarray:
    return signal.resample_poly(np.asarray(x16, np.float32), 441, 640).astype(np.float32)


def peaks(x: np.ndarray, per_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame, bin) of the spectral peaks of `x` at 11025 Hz, sorted by frame."""
    none = np.zeros(0, np.int32), np.zeros(0, np.int32)
    if len(x) < N_FFT:
        return none
    n = 1 + (len(x) - N_FFT) // HOP
    x = np.ascontiguousarray(x)
    fr = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]))
    win = np.hanning(N_FFT + 2)[1:-1].astype(np.float32)
    sg = np.abs(np.fft.rfft(fr * win, axis=1)).T[:-1]
    mx = sg.max()
    if not mx > 1e-4:                     # digital silence (or near it) has no landmarks
        return none
    sg = np.log(np.maximum(sg, mx / 1e6))
    sg -= sg.mean()
    sg = signal.lfilter([1, -1], [1, -0.98], sg, axis=1)
    loc = ndimage.maximum_filter(sg, size=(2 * PEAK_DF + 1, 2 * PEAK_DT + 1), mode="nearest")
    f, t = np.nonzero((sg == loc) & (sg > 0))
    if len(t) == 0:
        return none
    sec = t // BUCKET_FRAMES
    order = np.lexsort((-sg[f, t], sec))
    ss = sec[order]
    rank = np.arange(len(order)) - np.searchsorted(ss, ss, side="left")
    keep = order[rank < per_s]
    t, f = t[keep], f[keep]
    o = np.lexsort((f, t))
    return t[o].astype(np.int32), f[o].astype(np.int32)


HASH_BITS = 20                  # f1 (8 bits), df (6), dt (6): audfprint's
HASH_SPACE = 1 << HASH_BITS


def hashes(t: np.ndarray, f: np.ndarray, fanout: int = FANOUT) -> tuple[np.ndarray, np.ndarray]:
    """Landmark pairs of peaks (t, f): (hash uint32, anchor frame int32), unique, by frame."""
    n = len(t)
    used = np.zeros(n, np.int32)
    hs, ts = [], []
    for k in range(1, n):
        i = np.arange(n - k)
        dt = t[i + k] - t[i]
        if dt.min() >= MAX_DT:
            break
        df = f[i + k] - f[i]
        ok = (dt >= MIN_DT) & (dt < MAX_DT) & (np.abs(df) < MAX_DF) & (used[i] < fanout)
        i = i[ok]
        used[i] += 1
        hs.append(((f[i].astype(np.uint32) & 255) << 12) | ((df[ok].astype(np.uint32) & 63) << 6)
                  | (dt[ok].astype(np.uint32) & 63))
        ts.append(t[i])
    if not hs:
        return np.zeros(0, np.uint32), np.zeros(0, np.int32)
    u = np.unique((np.concatenate(ts).astype(np.uint64) << np.uint64(32)) | np.concatenate(hs).astype(np.uint64))
    return (u & np.uint64(0xFFFFFFFF)).astype(np.uint32), (u >> np.uint64(32)).astype(np.int32)


def fingerprint(x16: np.ndarray, p: FingerprintParams = FingerprintParams()) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and their frames (FRAME_S units from the audio's start) of float audio at 16 kHz."""
    return hashes(*peaks(to_fp_rate(x16), p.peaks_per_s))


ITEM_BUCKETS = 1 << 18


def ranges(lo: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Indices lo[0] .. lo[0]+n[0]-1, lo[1] .. lo[1]+n[1]-1, ... as one array."""
    return np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))


def best_match(qh: np.ndarray, qt: np.ndarray, rh: np.ndarray, items: np.ndarray, rt: np.ndarray,
               duration_frames: int, p: FingerprintParams = FingerprintParams(), groups=None) -> Match | None:
    """The item the query (hashes qh at frames qt) is, among index rows (hash rh, item, frame rt)
    found for its hashes; None unless one item passes `min_aligned` and `min_coverage`.

    `groups(ids) -> (group, shift)`, when given, says which entries hold one recording and where
    (frames added to an entry's times give the group's): their hashes are counted together, so
    several partial entries of one item (plays clipped at different places) add up to a match
    that none of them holds alone. The match names the entry with most of the aligned hashes, at
    its own offset. Groups are tried from the most aligned hashes down: one whose hashes span
    too little of the query (a jingle cut from the song queried) leaves the next its chance."""
    if len(qh) == 0 or len(rh) == 0:
        return None
    o = np.argsort(qh, kind="stable")
    sh, st = qh[o], qt[o]
    # Where each row's hash lies in the sorted query, from tables indexed by hash: a gather per
    # row, not a binary search (a lookup in a large index returns most rows).
    uq, first, count = np.unique(sh, return_index=True, return_counts=True)
    lo_of, n_of = np.zeros(HASH_SPACE, np.int32), np.zeros(HASH_SPACE, np.int32)
    lo_of[uq], n_of[uq] = first, count
    n = np.take(n_of, rh, mode="clip")
    # An item with fewer pairs than min_aligned in all cannot pass: drop its rows before pairing
    # and sorting. In a large index nearly every row is such a chance hit. Counted per bucket of
    # items (a bucket's pairs bound each of its items'), so memory does not grow with item ids;
    # weighted only when a hash occurs more than once in the query.
    bucket = items & (ITEM_BUCKETS - 1)
    per_bucket = np.bincount(bucket, weights=n if count.max() > 1 else None, minlength=ITEM_BUCKETS)
    keep = np.flatnonzero(np.take(per_bucket, bucket) >= p.min_aligned)
    keep = keep[n[keep] > 0]
    if len(keep) == 0:
        return None
    n, lo = n[keep].astype(np.int64), lo_of[rh[keep]].astype(np.int64)
    item = items[keep].astype(np.int64)
    rows = np.repeat(keep, n)
    tq = st[ranges(lo, n)].astype(np.int64)
    rt_rows = rt[rows].astype(np.int64)
    item_rows = np.repeat(item, n)
    m = _aligned(item_rows, item_rows, rt_rows, 0, tq, duration_frames, p, tries=1)
    if m is not None or groups is None:
        return m
    ids = np.unique(item)
    g, s = groups(ids)
    g, s = np.asarray(g, np.int64), np.asarray(s, np.int64)
    if len(np.unique(g)) == len(g):
        return None        # no entries to count together: the answer above stands
    at = np.searchsorted(ids, item)
    return _aligned(item_rows, np.repeat(g[at], n), rt_rows, np.repeat(s[at], n), tq, duration_frames, p, tries=8)


def _aligned(item: np.ndarray, group: np.ndarray, rt: np.ndarray, shift, tq: np.ndarray, duration_frames: int,
             p: FingerprintParams, tries: int) -> Match | None:
    """The best of up to `tries` groups by hashes at one offset (rt + shift - tq, +-1 frame), the
    first that passes min_aligned and min_coverage; reported as the entry with most of those
    hashes, at its own offset."""
    delta = rt + shift - tq
    base = int(delta.min()) - 1
    span = int(delta.max()) - base + 2
    key = group * span + (delta - base)
    u, c = np.unique(key, return_counts=True)
    sm = c.copy()
    for d in (-1, 1):          # a peak one frame off still counts
        j = np.clip(np.searchsorted(u, u + d), 0, len(u) - 1)
        sm += np.where(u[j] == u + d, c[j], 0)
    gs = u // span
    tried: set[int] = set()
    for b in np.argsort(-sm, kind="stable"):
        if sm[b] < p.min_aligned or len(tried) >= tries:
            return None
        best_group, best_key = int(gs[b]), int(u[b])
        if best_group in tried:
            continue
        tried.add(best_group)
        near = (group == best_group) & (np.abs(key - best_key) <= 1)
        times = tq[near]
        cover = (times.max() - times.min()) / max(1, duration_frames) if len(times) else 0.0
        if cover < p.min_coverage:
            continue
        other = sm[gs != best_group]
        again = sm[(gs == best_group) & (np.abs(u - best_key) > 2)]
        ents, votes = np.unique(item[near], return_counts=True)
        entry = int(ents[np.argmax(votes)])
        own = int(np.broadcast_to(shift, item.shape)[near][item[near] == entry][0])
        return Match(entry, int(sm[b]), float((best_key % span + base - own) * FRAME_S), round(float(cover), 3),
                     int(other.max()) if len(other) else 0, int(again.max()) if len(again) else 0)
    return None
