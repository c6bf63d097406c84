"""How far bf16 and int8 VGGish embeddings drift from fp32 on the dev programmes.

  python benchmarks/precision_drift.py

Every 0.96 s frame of both dev programmes (../shared/data/streams, 20 min each)
is embedded by the VGGish architecture (the stand-in with random weights, as
in benchmarks/throughput.py; no real weights here) in fp32, bf16 and int8.
Printed per precision:
- cosine similarity to the fp32 embedding of the same frame (min, 1st
  percentile, mean);
- music F1 by the scorer's rules (pipeline.training.evaluate) of a throwaway head:
  there is no trained VGGish head, so a logistic-regression head is fitted on
  the fp32 embeddings of one programme and applied, through the fixed-lag HMM,
  to the other programme's embeddings of each precision (both ways round). Its
  L2 penalty is the one of a small grid that gives the best fp32 F1 (chosen on
  fp32 only). The head never changes between precisions, so the F1 difference
  is the drift's effect on decisions; so is the share of frames whose head
  decision flips. YAMNet runs its float TFLite model only: no drift.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PROGRAMMES = ("dev-radio", "dev-tv")


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def cross_f1(emb: dict, states: dict, l2: float, streams: Path) -> list[float]:
    """Music F1 of a head fitted on one programme's embeddings, on the other's (both ways)."""
    from operators.models.classify import fit_head
    from operators.decisions.hmm import fit_transitions
    from pipeline.training.evaluate import music_f1, read_labels, replay
    out = []
    for train, test in (PROGRAMMES, PROGRAMMES[::-1]):
        head = fit_head(emb[train], ["music" if s else "non_music" for s in states[train]], ["non_music", "music"],
                        l2=l2)
        A = fit_transitions([states[train].tolist()])
        prior = np.array([A[1, 0], A[0, 1]]) / (A[1, 0] + A[0, 1])
        p = head.predict_proba(emb[test])[:, 1]
        out.append(music_f1(read_labels(streams / f"{test}.labels.csv"), replay(p, A, prior, [0.5, 0.5], 4, 1.0)))
    return out


def main() -> None:
    from benchmarks.throughput import prepared
    from operators.models.classify import fit_head
    from operators.models.embed import VGGishHub
    from operators.decisions.hmm import fit_transitions
    from pipeline.training.audiofile import frames_of, read_audio
    from pipeline.training.evaluate import music_f1, read_labels, replay
    from pipeline.models import limit_blas_threads, model_cache
    from pipeline.training.train import programme_states

    limit_blas_threads(1)
    streams = SHARED / "data" / "streams"
    work = prepared()
    frames, states = {}, {}
    for p in PROGRAMMES:
        frames[p] = frames_of(read_audio(str(streams / f"{p}.opus")))
        s = np.asarray(programme_states(streams / f"{p}.labels.csv"))
        n = min(len(frames[p]), len(s))
        frames[p], states[p] = frames[p][:n], s[:n]
    emb: dict[str, dict[str, np.ndarray]] = {}
    speed = {}
    for precision in ("fp32", "bf16", "int8"):
        model = VGGishHub(str(work / "models" / "vggish"), precision, cache_dir=model_cache())
        t0 = time.perf_counter()
        emb[precision] = {p: np.concatenate([model.embed(f[i:i + 64]).embeddings for i in range(0, len(f), 64)])
                          for p, f in frames.items()}
        speed[precision] = sum(len(f) for f in frames.values()) / (time.perf_counter() - t0)
        emb[precision]["_effective"] = model.precision
    # the head's regularisation is chosen on fp32 alone (best cross-programme F1), never on the drift
    l2 = max(L2_GRID, key=lambda v: np.mean(cross_f1(emb["fp32"], states, v, streams)))
    f1 = {prec: [] for prec in emb}
    flips = {prec: [] for prec in emb}      # frames whose head decision (p >= 0.5) differs from fp32's
    dp = {prec: [] for prec in emb}         # |p_music - fp32's p_music|
    for train, test in (PROGRAMMES, PROGRAMMES[::-1]):
        y = ["music" if s else "non_music" for s in states[train]]
        head = fit_head(emb["fp32"][train], y, ["non_music", "music"], l2=l2)
        A = fit_transitions([states[train].tolist()])
        prior = np.array([A[1, 0], A[0, 1]]) / (A[1, 0] + A[0, 1])
        rows = read_labels(streams / f"{test}.labels.csv")
        p_ref = head.predict_proba(emb["fp32"][test])[:, 1]
        for prec in emb:
            p_music = head.predict_proba(emb[prec][test])[:, 1]
            f1[prec].append(music_f1(rows, replay(p_music, A, prior, [0.5, 0.5], 4, 1.0)))
            flips[prec].append((p_music >= 0.5) != (p_ref >= 0.5))
            dp[prec].append(np.abs(p_music - p_ref))
    for prec in emb:
        a = np.concatenate([emb[prec][p] for p in PROGRAMMES])
        b = np.concatenate([emb["fp32"][p] for p in PROGRAMMES])
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(json.dumps({"precision": prec, "effective": emb[prec]["_effective"], "frames": len(a), "head_l2": l2,
                          "cosine_vs_fp32_min": round(float(cos.min()), 5),
                          "cosine_vs_fp32_p01": round(float(np.percentile(cos, 1)), 5),
                          "cosine_vs_fp32_mean": round(float(cos.mean()), 5),
                          "music_f1": {f"{tr}->{te}": round(v, 4) for (tr, te), v in
                                       zip((PROGRAMMES, PROGRAMMES[::-1]), f1[prec])},
                          "music_f1_mean": round(float(np.mean(f1[prec])), 4),
                          "f1_drop_vs_fp32": round(float(np.mean(f1["fp32"]) - np.mean(f1[prec])), 4),
                          "head_decisions_flipped": round(float(np.concatenate(flips[prec]).mean()), 5),
                          "p_music_abs_diff_p99": round(float(np.percentile(np.concatenate(dp[prec]), 99)), 4),
                          "embed_frames_per_s": round(speed[prec], 1)}), flush=True)


if __name__ == "__main__":
    main()
