"""Recognition requests on the dev programmes: onair's debounce vs two naive policies.

  python benchmarks/request_policies.py [--codecs aac,mp2]

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
from pipeline.demo import encode_programme  # noqa: E402
from pipeline.runner import DirectRun  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codecs", default="aac,mp2")
    args = ap.parse_args()
    score = scorer()
    cfg = config.load()
    clip_s = cfg["debounce"]["clip_s"]
    progs = sorted((SHARED / "data" / "streams").glob("*.opus"))
    inputs = {}
    for p in progs:
        for codec in args.codecs.split(","):
            inputs[f"{p.stem}-{codec}"] = (p, encode_programme(SHARED, p, codec,
                                                               REPO / ".cache" / "streams" / f"{p.stem}-{codec}.ts"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        DirectRun([(ch, str(ts)) for ch, (_, ts) in inputs.items()], out, cfg).run()
        segs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
        reqs = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines()]
    for ch, (p, _) in inputs.items():
        labels = p.with_name(p.stem + ".labels.csv")
        songs_csv = p.with_name(p.stem + ".songs.csv")
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


if __name__ == "__main__":
    main()
