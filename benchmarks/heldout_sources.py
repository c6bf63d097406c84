"""Music F1 on programmes made only of sources the head never saw.

Holds out a fraction of the manifest's sources, trains a music head on the rest
(same recipe as `onair train`, composed programmes from training sources only),
composes broadcast-like programmes from the held-out sources with
../shared/tools/broadcast_sim.py, and scores the fixed-lag HMM output on them
by the rules of DESIGN.md §4. This is our estimate for "streams you have not seen".

  python benchmarks/heldout_sources.py [--folds 3] [--programmes 2] [--minutes 15]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))

from operators.models.classify import fit_head  # noqa: E402
from operators.audio.framing import HOP_S  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.training.audiofile import frames_of  # noqa: E402
from pipeline.heads import hmm_params  # noqa: E402
from pipeline.models import load_embedder  # noqa: E402
from pipeline.training.evaluate import music_f1, replay  # noqa: E402
from pipeline.training.train import EmbeddingCache, composed_frames, embed_items, manifest_items, music_or_not  # noqa: E402


def compose_from(sim, clips, seed, minutes, profile):
    import av
    rng = random.Random(seed)
    audio, labels, _ = sim.build(sim.Pool(clips, rng), rng, str(SHARED / "data"), minutes, profile)
    frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate, frame.pts = sim.SR, 0
    rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in rs.resample(frame) + rs.resample(None)]), labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--programmes", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--verbose", action="store_true", help="print the blocks each fold gets wrong")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = importlib.util.spec_from_file_location("broadcast_sim", SHARED / "tools" / "broadcast_sim.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    manifest = SHARED / "data" / "manifest.csv"
    rows = list(csv.DictReader(open(manifest)))
    cfg = config.load()
    embedder = load_embedder(cfg)
    shipped = hmm_params(__import__("operators.models.classify", fromlist=["Head"]).Head.load(
        Path(cfg["heads"]["dir"]) / embedder.name / "music.json"), cfg)
    items = manifest_items(manifest, [])
    x_all, y_all, groups, _ = embed_items(items, embedder, EmbeddingCache(REPO / ".cache" / "embeddings",
                                                                          embedder.name), 48)
    groups = np.array(groups)
    sources = sorted({r["source"] for r in rows})
    music_sources = sorted({r["source"] for r in rows if r["label"] == "music" and float(r["duration_s"]) >= 30})
    results = []
    for fold in range(args.folds):
        rng = np.random.default_rng(fold)
        held = set(rng.choice(music_sources, max(2, len(music_sources) // 5), replace=False))
        held |= set(rng.choice([s for s in sources if s not in music_sources], 3, replace=False))
        train = ~np.isin(groups, list(held))
        x, y = x_all[train], [y_all[i] for i in np.where(train)[0]]
        with tempfile.TemporaryDirectory() as tmp:
            kept = Path(tmp) / "manifest.csv"
            with open(kept, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                for r in rows:
                    if r["source"] not in held:
                        w.writerow(r)
            cx, clabels, _ = composed_frames(SHARED / "tools" / "broadcast_sim.py", kept, 4, 15.0, embedder,
                                             Path(tmp) / "composed", root=SHARED / "data")
            cy = music_or_not(clabels)
        head = fit_head(np.concatenate([x, cx]), y + cy, ["non_music", "music"], l2=1e-3)
        test_clips = [sim.Clip(r["path"], r["label"], float(r["duration_s"]), r["source"],
                               r.get("genre", "")) for r in rows if r["source"] in held or r["label"] != "music"]
        for k in range(args.programmes):
            profile = ("radio", "tv")[k % 2]
            a16, labels = compose_from(sim, test_clips, 9000 + 10 * fold + k, args.minutes, profile)
            p = head.predict_proba(embedder.embed(frames_of(a16)).embeddings)[:, 1]
            segs = replay(p, shipped.transition, shipped.prior, shipped.class_prior,
                          cfg["hmm"]["lag_frames"], shipped.emission_weight)
            neutral = replay(p, shipped.transition, shipped.prior, [0.5, 0.5], cfg["hmm"]["lag_frames"], 1.0)
            rows_l = [(s, e, lab) for s, e, lab in labels]
            if args.verbose:  # which blocks were missed, and the held-out sources
                t = np.arange(len(p)) * HOP_S + 0.48
                for s, e, lab in rows_l:
                    m = (t > s + 1) & (t < e - 1)
                    if m.any() and (np.mean(p[m] > 0.5) > 0.5) != (lab == "music"):
                        print("  miss", lab, round(s), round(e), round(float(np.mean(p[m])), 2),
                              sorted(held) if lab == "music" else "", flush=True)
            results.append({"fold": fold, "profile": profile, "held_out_sources": len(held),
                            "f1": round(music_f1(rows_l, segs), 4),
                            "f1_neutral_calibration": round(music_f1(rows_l, neutral), 4),
                            "minutes": round(len(a16) / 16000 / 60, 1)})
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"mean_f1": round(float(np.mean([r["f1"] for r in results])), 4),
                      "min_f1": min(r["f1"] for r in results),
                      "mean_f1_neutral_calibration": round(float(np.mean([r["f1_neutral_calibration"]
                                                                          for r in results])), 4)}))


if __name__ == "__main__":
    main()
