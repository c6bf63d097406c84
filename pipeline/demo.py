"""`onair demo`: encode the shared dev programmes as broadcast MPEG-TS (H.264 +
one audio track, with ../shared/tools/broadcast_sim.py), run them all as
concurrent channels through `onair run`, and score them with
../shared/tools/score.py."""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from pipeline.direct import DirectRun

log = logging.getLogger("onair.demo")
REPO = Path(__file__).resolve().parent.parent


def _shared(arg: str | None) -> Path:
    for cand in ([Path(arg)] if arg else []) + [REPO.parent / "shared", REPO / "shared"]:
        if (cand / "data" / "streams").is_dir():
            return cand.resolve()
    raise ValueError("shared data not found: pass --shared DIR (a folder with data/streams and tools/)")


def _broadcast_sim(shared: Path):
    spec = importlib.util.spec_from_file_location("broadcast_sim", shared / "tools" / "broadcast_sim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def encode_programme(shared: Path, src: Path, codec: str, dest: Path) -> Path:
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return dest
    sim = _broadcast_sim(shared)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part.ts")
    log.info("encoding %s as MPEG-TS with %s audio -> %s", src.name, codec, dest)
    sim.encode(sim.load(str(src)), str(tmp), codec)
    tmp.rename(dest)
    return dest


def score(shared: Path, labels: Path, segments: Path, channel: str) -> dict:
    out = subprocess.run([sys.executable, str(shared / "tools" / "score.py"), "detect", "--labels", str(labels),
                          "--segments", str(segments), "--channel", channel],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_demo(args, cfg) -> int:
    shared = _shared(args.shared)
    os.environ.setdefault("ONAIR_MODEL_DIR", str(shared / "models"))
    out = Path(args.out)
    media = REPO / ".cache" / "streams"
    inputs, truth = [], {}
    for opus in sorted((shared / "data" / "streams").glob("*.opus")):
        for codec in args.codecs.split(","):
            ch = f"{opus.stem}-{codec}"
            ts = encode_programme(shared, opus, codec, media / f"{ch}.ts")
            inputs.append((ch, str(ts)))
            truth[ch] = opus.with_name(opus.stem + ".labels.csv")
    run = DirectRun(inputs, out, cfg)
    results = run.run()
    f1s = []
    print(f"{'channel':24} {'f1':>6} {'precision':>9} {'recall':>6}  scored_s")
    for ch, _ in inputs:
        if not results[ch].ok:
            print(f"{ch:24} FAILED ({results[ch].reason})")
            continue
        s = score(shared, truth[ch], out / "segments.jsonl", ch)
        f1s.append(s["f1"])
        print(f"{ch:24} {s['f1']:6.4f} {s['precision']:9.4f} {s['recall']:6.4f}  {s['scored_s']}")
    audio_s = sum(r.audio_s for r in results.values())
    print(f"mean music F1 {sum(f1s) / max(len(f1s), 1):.4f} over {len(f1s)} channels; "
          f"{audio_s / 60:.0f} min of audio in {run.summary['wall_s']} s "
          f"({audio_s / max(run.summary['wall_s'], 1e-9):.0f}x real time)")
    print(f"outputs: {out.resolve()}/segments.jsonl (and requests.jsonl, genres.jsonl)")
    return 0 if f1s else 1
