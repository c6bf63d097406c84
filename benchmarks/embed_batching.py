"""Frames/s of the embedding step: batched across channels vs one model call per
frame, for each backend, measured in the same run (ratios, since machines are noisy).

  python benchmarks/embed_batching.py [--frames 256] [--batch 64]

YAMNet runs from $ONAIR_MODEL_DIR (default ../shared/models); VGGish runs the
same-architecture stand-in with random weights (same compute as the real model).
Prints one JSON line per backend.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ONAIR_MODEL_DIR", str(REPO.parent / "shared" / "models"))

from operators.audio.framing import FRAME_SAMPLES  # noqa: E402


def rate(fn, frames: np.ndarray, repeats: int = 3) -> float:
    fn(frames[:4])  # warm-up: graph tracing, allocation
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(frames)
        best = max(best, len(frames) / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    frames = np.random.default_rng(0).normal(0, 0.1, (args.frames, FRAME_SAMPLES)).astype(np.float32)

    def batched(embed):
        return lambda x: [embed(x[i:i + args.batch]) for i in range(0, len(x), args.batch)]

    from operators.models.embed import VGGishHub
    from pipeline import config
    from pipeline.models import load_embedder
    yamnet = load_embedder(config.load())
    per_frame = rate(lambda x: [yamnet.embed(f[None]) for f in x], frames)
    together = rate(batched(yamnet.embed), frames)
    print(json.dumps({"backend": "yamnet-tflite", "frames": len(frames), "batch": args.batch,
                      "per_frame_calls_fps": round(per_frame, 1), "batched_fps": round(together, 1),
                      "ratio": round(together / per_frame, 2)}))

    sys.path.insert(0, str(REPO / "tests"))
    from standin_vggish import build
    with tempfile.TemporaryDirectory() as d:
        vggish = VGGishHub(build(str(Path(d) / "vggish")))
        per_frame = rate(lambda x: [vggish.embed_signature(f) for f in x], frames[: max(32, len(frames) // 4)])
        together = rate(batched(vggish.embed), frames)
    print(json.dumps({"backend": "vggish-standin", "frames": len(frames), "batch": args.batch,
                      "per_frame_calls_fps": round(per_frame, 1), "batched_fps": round(together, 1),
                      "ratio": round(together / per_frame, 2)}))


if __name__ == "__main__":
    main()
