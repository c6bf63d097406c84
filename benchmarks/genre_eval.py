"""Genre head validation: top-1 accuracy by 5 folds of whole GTZAN excerpts
(orig_id groups, never split by file), for the head's inputs (the embedding alone, and with
YAMNet's inner layers as shipped), head alone and blended with YAMNet's AudioSet genre
classes; and the confusion matrix of the shipped setting as a picture.

  python benchmarks/genre_eval.py [--out benchmarks/out] [--seeds 5]

The mean over fold seeds is the figure to quote: one seed's folds move top-1 by about 0.006.
`top1_short` is the accuracy on the 2-3 s excerpts alone (most of the files; the longer ones,
15-20 s, are easier), the closest to tagging unseen short excerpts.

Writes OUT/genre_confusion.svg and prints one JSON line per input set and blend weight.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# OpenBLAS threads fight over the small solves on a shared 2-core machine: one thread is 7x faster
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline import config  # noqa: E402
from pipeline.heads import genre_model_for  # noqa: E402
from pipeline.models import load_embedder  # noqa: E402
from operators.tagging.genre import POOLING  # noqa: E402
from pipeline.training.train import genre_cross_validation, genre_features, genre_inputs, genre_items  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)


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
    default = cfg["genre"]["audioset_weight"]
    embedder = load_embedder(cfg)
    items, classes = genre_items(SHARED / "data" / "manifest.csv")
    y = [it["genre"] for it in items]
    truth = np.array([classes.index(g) for g in y])
    groups = [it["group"] for it in items]
    short = np.array([it["duration_s"] <= 3.0 for it in items])
    shipped, dims = genre_inputs(embedder)
    input_sets = [(shipped, dims)] if shipped == ["embedding"] else [(["embedding"], [embedder.dim]), (shipped, dims)]
    chosen = None
    for names, dims in input_sets:
        X, S = genre_features(items, embedder, REPO / ".cache" / "embeddings" / f"genre-{embedder.name}", inputs=names)
        meta = {"inputs": names, "input_dims": dims, "aggregation": POOLING}
        runs = [genre_cross_validation(X, S, y, groups, classes, args.l2, genre_model_for(cfg, embedder), seed=s,
                                       meta=meta, weights=tuple(sorted({*WEIGHTS, default})))
                for s in range(args.seeds)]
        for w in sorted({*WEIGHTS, default}):
            correct = [np.array(r["predicted_by_weight"][w]) == truth for r in runs]
            print(json.dumps({"backend": embedder.name, "inputs": names, "aggregation": POOLING,
                              "audioset_weight": w, "top1_by_seed": [r["accuracy_by_weight"][w] for r in runs],
                              "top1_mean": round(float(np.mean(correct)), 4),
                              "top1_short": round(float(np.mean([c[short].mean() for c in correct])), 4),
                              "files": len(truth), "short_files": int(short.sum()),
                              "split": "5 folds of orig_id groups"}), flush=True)
        chosen = runs[0]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "genre_confusion.svg").write_text(svg_confusion(
        np.array(chosen["confusion"]), classes,
        f"{embedder.name} genre head ({' + '.join(shipped)}) + AudioSet blend {default}: "
        f"top-1 {chosen['accuracy']:.3f} (5 folds by orig_id, seed 0)"))
    print(json.dumps({"confusion_matrix": str(out / "genre_confusion.svg")}))


if __name__ == "__main__":
    main()
