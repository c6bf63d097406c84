"""Golden records: what onair decided on the dev programmes, kept to prove that a
change of the runtime changes no answer.

  python tests/golden.py record DIR [--seconds S] [--kafka]   # records of this checkout
  python tests/golden.py compare GOLDEN DIR                  # exit 1 on any difference

Inputs are the two shared dev programmes, cut to their first `--seconds` (all of
them with 0) and encoded here as broadcast MPEG-TS (tiny H.264 + AAC, MP2 or AC-3)
into .cache/golden, once. Records are normalised for comparison: grouped by
channel in the order they were written, request audio replaced by its SHA-256.
`tests/test_golden.py` asserts both directions the engine promises: direct mode
equals the records committed in tests/golden/, and Kafka mode equals direct mode.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ONAIR_SHARED", REPO.parent / "shared"))
PROGRAMMES = ("dev-radio", "dev-tv")
CODECS = ("aac", "mp2", "ac3")
KINDS = ("segments", "requests", "genres")
RATE = 48000


def load(path: Path, seconds: float) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        parts, need = [], int(seconds * RATE) if seconds else None
        for f in c.decode(audio=0):
            parts += [x.to_ndarray().reshape(-1) for x in rs.resample(f)]
            if need is not None and sum(map(len, parts)) >= need:
                break
        parts += [x.to_ndarray().reshape(-1) for x in rs.resample(None)]
    a = np.concatenate(parts)
    return a[:need] if need else a


def encode(audio: np.ndarray, path: Path, codec: str) -> Path:
    """Broadcast-like MPEG-TS: 2 fps 64x48 H.264 (video only has to be there) and one stereo track."""
    tmp = path.with_suffix(".part")
    out = av.open(str(tmp), "w", format="mpegts")
    v = out.add_stream("libx264", rate=2)
    v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
    v.options = {"preset": "ultrafast", "crf": "40", "threads": "1"}
    a = out.add_stream(codec, rate=RATE)
    a.layout = "stereo"
    a.bit_rate = 192000 if codec == "ac3" else 128000
    n = {"mp2": 1152, "ac3": 1536}.get(codec, 1024)
    fmt = {"mp2": "s16"}.get(codec, "fltp")
    img = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")
    vi = 0
    for i in range(0, len(audio) - n + 1, n):
        while vi / 2 <= i / RATE:
            img.pts = vi
            for p in v.encode(img):
                out.mux(p)
            vi += 1
        st = np.stack([audio[i:i + n]] * 2)
        if fmt == "s16":
            st = (np.clip(st, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(st, format=fmt, layout="stereo")
        fr.sample_rate, fr.pts = RATE, i
        for p in a.encode(fr):
            out.mux(p)
    for s in (v, a):
        for p in s.encode():
            out.mux(p)
    out.close()
    tmp.rename(path)
    return path


def inputs(seconds: float, cache: Path | None = None) -> list[tuple[str, Path]]:
    """(channel, MPEG-TS path) for every programme and codec, encoded once into `cache`."""
    cache = cache or REPO / ".cache" / "golden"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for prog in PROGRAMMES:
        audio = None
        for codec in CODECS:
            path = cache / f"{prog}-{int(seconds)}s-{codec}.ts"
            if not path.exists():
                if audio is None:
                    audio = load(SHARED / "data" / "streams" / f"{prog}.opus", seconds)
                encode(audio, path, codec)
            out.append((f"{prog}-{codec}", path))
    return out


def _is_digest(s: str) -> bool:
    """Already normalised: a SHA-256 in hex (a FLAC or WAV clip in base64 is never 64 characters)."""
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


def normalise(records: list[dict]) -> dict[str, list[dict]]:
    """Records as the golden set holds them: clips by digest, and without what depends on when
    and how the run was made: UTC fields and the clock are dropped, and ids built from UTC get
    back their stream-time form (`ch/start`, `ch:song_start:n`, `ch:song_start`) from the record's own fields."""
    by_channel: dict[str, list[dict]] = {}
    for r in records:
        r = {k: v for k, v in r.items() if not k.endswith("_utc") and k != "clock"}
        if "id" in r and "start" in r:
            r["id"] = f"{r['channel']}/{r['start']:.3f}"
        if "request_id" in r and "song_start" in r:
            r["request_id"] = f"{r['channel']}:{r['song_start']:.2f}:{r['request_id'].rsplit(':', 1)[1]}"
        if "play_id" in r and "song_start" in r:
            r["play_id"] = f"{r['channel']}:{r['song_start']:.2f}"
        audio = r.get("audio")
        if isinstance(audio, dict) and "data" in audio and not _is_digest(audio["data"]):
            r["audio"] = {**audio, "data": hashlib.sha256(audio["data"].encode()).hexdigest()}
        by_channel.setdefault(r["channel"], []).append(r)
    return by_channel


def read_dir(d: Path) -> dict[str, dict[str, list[dict]]]:
    """A golden folder (DIR/<kind>.jsonl) or onair's output (DIR/YYYY-MM-DD/<kind>.jsonl)."""
    from pipeline.outputs import day_dirs
    days = day_dirs(d)
    out = {}
    for kind in KINDS:
        paths = [d / day / f"{kind}.jsonl" for day in days] if days else [d / f"{kind}.jsonl"]
        out[kind] = normalise([json.loads(x) for p in paths if p.exists() for x in p.read_text().splitlines()])
    return out


def write_dir(records: dict[str, dict[str, list[dict]]], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for kind, by_channel in records.items():
        with open(d / f"{kind}.jsonl", "w") as f:
            for ch in sorted(by_channel):
                for r in by_channel[ch]:
                    f.write(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n")


def differences(golden: dict, new: dict, tolerance: dict | None = None) -> list[str]:
    """Where `new` departs from `golden`: a missing record, or a field of a golden record that
    changed (fields `new` adds are allowed). `tolerance` maps a field to the largest absolute
    difference accepted for it (numbers only)."""
    tolerance = tolerance or {}
    out = []
    for kind in KINDS:
        g, n = golden.get(kind, {}), new.get(kind, {})
        for ch in sorted(set(g) | set(n)):
            gs, ns = g.get(ch, []), n.get(ch, [])
            if len(gs) != len(ns):
                out.append(f"{kind} {ch}: {len(gs)} records in golden, {len(ns)} now")
            for i, (a, b) in enumerate(zip(gs, ns)):
                for k, v in a.items():
                    w = b.get(k, "<missing>")
                    tol = tolerance.get(k)
                    if tol is not None and isinstance(v, (int, float)) and isinstance(w, (int, float)):
                        if abs(v - w) > tol:
                            out.append(f"{kind} {ch} #{i} {k}: {v} -> {w} (tolerance {tol})")
                    elif tol is not None and isinstance(v, list) and isinstance(w, list):
                        if not _close_lists(v, w, tol):
                            out.append(f"{kind} {ch} #{i} {k}: {v!r} -> {w!r} (tolerance {tol})")
                    elif v != w:
                        out.append(f"{kind} {ch} #{i} {k}: {v!r} -> {w!r}")
    return out


def _close_lists(a: list, b: list, tol: float) -> bool:
    """Lists of records (genre tags) alike but for numbers within `tol`: same length, order and
    other fields."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not (isinstance(x, dict) and isinstance(y, dict)) or set(x) != set(y):
            return False
        for k in x:
            if isinstance(x[k], (int, float)) and isinstance(y[k], (int, float)) and not isinstance(x[k], bool):
                if abs(x[k] - y[k]) > tol:
                    return False
            elif x[k] != y[k]:
                return False
    return True


def run_direct(ins: list[tuple[str, Path]], out: Path, sets: list[str]) -> Path:
    from pipeline import config
    from pipeline.direct import DirectRun
    DirectRun([(ch, str(p)) for ch, p in ins], out, config.load(None, sets)).run()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="run this checkout on the golden inputs and write normalised records")
    r.add_argument("dir")
    r.add_argument("--seconds", type=float, default=240.0, help="first seconds of each programme (0 = all)")
    c = sub.add_parser("compare", help="compare two record folders")
    c.add_argument("golden")
    c.add_argument("dir")
    args = ap.parse_args()
    os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
    sys.path.insert(0, str(REPO))
    if args.cmd == "record":
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            run_direct(inputs(args.seconds), Path(tmp), [])
            write_dir(read_dir(Path(tmp)), Path(args.dir))
        return 0
    diffs = differences(read_dir(Path(args.golden)), read_dir(Path(args.dir)))
    print("\n".join(diffs) or "same records")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
