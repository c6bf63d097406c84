"""Genre head validation: top-1 accuracy by 5 folds of whole GTZAN excerpts
(orig_id groups, never split by file), head alone and blended with YAMNet's
AudioSet genre classes, and the confusion matrix as a picture.

  python benchmarks/genre_eval.py [--out benchmarks/out] [--seeds 5]

The mean over fold seeds is the figure to quote: one seed's folds move top-1 by about 0.006,
and the mean of seeds 0-2 (0.796) sat above that of seeds 0-14 (0.791).

Writes OUT/genre_confusion.svg and prints one JSON line per aggregation/blend.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline import config  # noqa: E402
from pipeline.heads import genre_model_for  # noqa: E402
from pipeline.models import load_embedder  # noqa: E402
from operators.genre import POOLING  # noqa: E402
from pipeline.train import genre_cross_validation, genre_features, genre_items  # noqa: E402


def svg_confusion(conf: np.ndarray, classes: list[str], title: str) -> str:
    n, cell, left, top = len(classes), 44, 90, 70
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + n * cell + 20}" height="{top + n * cell + 60}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="10" y="20" font-size="14">{title}</text>',
           f'<text x="{left}" y="{top - 40}">predicted</text>',
           f'<text x="10" y="{top - 8}">truth</text>']
    for j, c in enumerate(classes):
        out.append(f'<text x="{left + j * cell + cell / 2}" y="{top - 6}" text-anchor="end" '
                   f'transform="rotate(-45 {left + j * cell + cell / 2} {top - 6})">{c}</text>')
    for i, c in enumerate(classes):
        out.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">{c}</text>')
        for j in range(n):
            v = rows[i, j]
            shade = int(255 - 200 * v)
            out.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                       f'fill="rgb({shade},{shade},255)" stroke="#888"/>')
            out.append(f'<text x="{left + j * cell + cell / 2}" y="{top + i * cell + cell / 2 + 4}" '
                       f'text-anchor="middle" fill="{"white" if v > 0.5 else "black"}">{conf[i, j]}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out"))
    ap.add_argument("--l2", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=5, help="fold seeds 0..N-1 (default 5)")
    args = ap.parse_args()
    cfg = config.load()
    embedder = load_embedder(cfg)
    items, classes = genre_items(SHARED / "data" / "manifest.csv")
    X, S = genre_features(items, embedder, REPO / ".cache" / "embeddings" / f"genre-{embedder.name}")
    y = [it["genre"] for it in items]
    groups = [it["group"] for it in items]
    results = {}
    default = cfg["genre"]["audioset_weight"]
    for weight in sorted({0.0, 0.1, 0.2, 0.3, 0.5, default}):
        cfg["genre"]["audioset_weight"] = weight
        accs = [genre_cross_validation(X, S, y, groups, classes, args.l2, genre_model_for(cfg, embedder), seed=s)
                for s in range(args.seeds)]
        results[weight] = accs[0]
        print(json.dumps({"backend": embedder.name, "aggregation": POOLING,
                          "audioset_weight": weight, "top1_by_seed": [a["accuracy"] for a in accs],
                          "top1_mean": round(float(np.mean([a["accuracy"] for a in accs])), 4),
                          "files": accs[0]["files"], "split": "5 folds of orig_id groups"}), flush=True)
    chosen = results[default]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "genre_confusion.svg").write_text(svg_confusion(
        np.array(chosen["confusion"]), classes,
        f"{embedder.name} genre head + AudioSet blend {default}: top-1 {chosen['accuracy']:.3f} (5 folds by orig_id)"))
    print(json.dumps({"confusion_matrix": str(out / "genre_confusion.svg")}))


if __name__ == "__main__":
    main()
