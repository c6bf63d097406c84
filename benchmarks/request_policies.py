"""Recognition requests on the dev programmes: onair's debounce vs two naive policies.

  python benchmarks/request_policies.py [--codecs aac,mp2] [--composed N] [--set debounce.KEY=VALUE ...]

--composed N adds N more 20 min programmes composed by broadcast_sim from the
manifest's clips (seeds 700.., radio and tv profiles alternating, AAC), so the
figures do not rest on the programmes the defaults were chosen on (the two dev
ones and seeds 500-509).

Runs `onair run` (direct mode) on each dev programme encoded as MPEG-TS and
scores its requests with ../shared/tools/score.py (songs found, exactly one
request per song, false requests per hour, audio sent per hour, latency). In
the same run it scores two naive policies built from the same music segments:
"every frame" (send every 0.96 s music frame window) and "10 s every 30 s"
(a 10 s clip every 30 s of music). One JSON line per programme and policy,
then the budget line the issue sets: sent audio per hour <= 1.2 x songs/h x clip_s.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline import config  # noqa: E402
from pipeline.demo import encoded  # noqa: E402
from pipeline.direct import DirectRun  # noqa: E402


def scorer():
    spec = importlib.util.spec_from_file_location("score", SHARED / "tools" / "score.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def naive_every_frame(segs):
    out = []
    for s in segs:
        t = s["start"]
        while t + 0.975 <= s["end"]:
            out.append({"clip_start": t, "clip_end": t + 0.975, "emitted_at": t + 0.975})
            t += 0.96
    return out


def naive_every_30s(segs, clip_s=10.0, period=30.0):
    out = []
    for s in segs:
        t = s["start"]
        while t + clip_s <= s["end"]:
            out.append({"clip_start": t, "clip_end": t + clip_s, "emitted_at": t + clip_s})
            t += period
    return out


def composed_programmes(n: int, dest: Path) -> list[tuple[str, Path, Path, Path]]:
    """(channel, labels csv, songs csv, ts) for n composed programmes, cached in dest."""
    import random

    from pipeline.demo import _broadcast_sim
    sim = _broadcast_sim(SHARED)
    rows = None
    out = []
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        profile = "tv" if i % 2 else "radio"
        name = f"composed{700 + i}-{profile}"
        labels, songs, ts = (dest / f"{name}.labels.csv", dest / f"{name}.songs.csv", dest / f"{name}.ts")
        if not ts.exists():
            if rows is None:
                with open(SHARED / "data" / "manifest.csv", newline="") as f:
                    rows = [sim.Clip(r["path"], r["label"], float(r["duration_s"]), r["source"], r.get("genre", ""))
                            for r in csv.DictReader(f)]
            rng = random.Random(700 + i)
            audio, lab, sng = sim.build(sim.Pool(rows, rng), rng, str(SHARED / "data"), 20, profile)
            with open(labels, "w") as f:
                f.write("start,end,label\n" + "".join(f"{a:.3f},{b:.3f},{x}\n" for a, b, x in lab))
            with open(songs, "w") as f:
                f.write("song_id,start,end,genre,source\n" +
                        "".join(f"{k},{a:.3f},{b:.3f},{g},{src}\n" for k, a, b, g, src in sng))
            sim.encode(audio, str(ts.with_suffix(".part.ts")), "aac")
            ts.with_suffix(".part.ts").rename(ts)
        out.append((name, labels, songs, ts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codecs", default="aac,mp2")
    ap.add_argument("--composed", type=int, default=0, metavar="N")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as in onair")
    args = ap.parse_args()
    score = scorer()
    cfg = config.load(None, args.set)
    clip_s = cfg["debounce"]["clip_s"]
    progs = sorted((SHARED / "data" / "streams").glob("*.opus"))
    inputs = {}   # channel -> (labels csv, songs csv, ts)
    for p in progs:
        for codec in args.codecs.split(","):
            inputs[f"{p.stem}-{codec}"] = (p.with_name(p.stem + ".labels.csv"), p.with_name(p.stem + ".songs.csv"),
                                           encoded([(p, codec)])[0])
    for name, labels, songs, ts in composed_programmes(args.composed, REPO / ".cache" / "streams" / "composed"):
        inputs[name] = (labels, songs, ts)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        DirectRun([(ch, str(ts)) for ch, (_, _, ts) in inputs.items()], out, cfg).run()
        segs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
        reqs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    pooled: dict[str, list] = {}
    for ch, (labels, songs_csv, _) in inputs.items():
        _, rows = score.truth(str(labels))
        music = [s for s in segs if s["channel"] == ch and s["label"] == "music"]
        n_songs = sum(1 for _ in csv.DictReader(open(songs_csv)))
        hours = rows[-1][1] / 3600
        limit = 1.2 * n_songs / hours * clip_s
        for policy, rq in [("onair", [r for r in reqs if r["channel"] == ch]),
                           ("naive_every_frame", naive_every_frame(music)),
                           ("naive_10s_every_30s", naive_every_30s(music, clip_s))]:
            s = score.request_scores(str(songs_csv), rows, rq)
            s.update(channel=ch, policy=policy, requests=len(rq),
                     audio_budget_s_per_h=round(limit, 1), within_audio_budget=s["sent_audio_s_per_h"] <= limit)
            print(json.dumps(s), flush=True)
            pooled.setdefault(policy, []).append(s)
    for policy, ss in pooled.items():
        n = sum(s["songs"] for s in ss)
        print(json.dumps({"policy": policy, "programmes": len(ss), "songs": n,
                          "song_recall": round(sum(s["song_recall"] * s["songs"] for s in ss) / n, 4),
                          "exactly_once": round(sum(s["exactly_once"] * s["songs"] for s in ss) / n, 4),
                          "false_requests_per_h": round(sum(s["false_requests_per_h"] for s in ss) / len(ss), 2),
                          "programmes_within_audio_budget": sum(s["within_audio_budget"] for s in ss)}), flush=True)


if __name__ == "__main__":
    main()
