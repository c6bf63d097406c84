"""Music beds under speech: how much of the bed time the music head finds, at what cost on plain
speech, and how well the talk-over head tells background from foreground (issue #22).

Programmes of plain speech, speech over a bed 9-21 dB under the voice, and plain music
(pipeline.training.beds), made only from sources held out of the study that chose the recipe
(HELD_OUT), plus the dev streams' speech_over_music regions (the real beds). Per 0.96 s frame:
the head's probability > 0.5 ("raw") and the HMM's decision with the head's own settings.
Usage: every frame whose truth is bed (background) or music (foreground), by the talk-over head.

    .venv/bin/python benchmarks/beds_eval.py [--heads configs/heads/yamnet] [--programmes 6]

The shipped heads are trained on every source, held-out ones included: for them these programmes
test the mixing, not unseen voices and music (docs/figures.md, "Beds").
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("ONAIR_MODEL_DIR", str(REPO.parent / "shared" / "models"))

from operators.decisions.hmm import FixedLagHMM  # noqa: E402
from operators.models.classify import Head  # noqa: E402
from pipeline import config  # noqa: E402
from pipeline.heads import TALK_CLASS  # noqa: E402
from pipeline.models import load_embedder  # noqa: E402
from pipeline.training.audiofile import frames_of, read_audio  # noqa: E402
from pipeline.training.beds import BedComposer, frame_labels  # noqa: E402
from pipeline.training.evaluate import read_labels  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
HELD_OUT = {   # speech and music sources no head of the recipe study saw
    "debian:fillets-ng-data-cs@1.0.1-1.1", "debian:fillets-ng-data@1.0.1-1.1",
    "github:PhilippMatthes/dc_tts@132e5cd83114", "github:f90/jamendolyrics@6e54911444920137abe6fa81d4b4303dff7c73fe",
    "debian:wesnoth-1.16-music@1:1.16.9-1", "debian:supertuxkart-data@1.4+dfsg-2",
    "debian:asterisk-moh-opsound-wav@2.03-1.1"}


def hmm_states(p: np.ndarray, head: Head, lag: int = 4) -> np.ndarray:
    h = head.meta.get("hmm", {})
    enter, leave = h.get("p_enter_music", 0.01), h.get("p_leave_music", 0.01)
    A = np.array([[1 - enter, enter], [leave, 1 - leave]])
    hmm = FixedLagHMM(A, np.array([leave, enter]) / (leave + enter), lag, np.array(h.get("class_prior", [0.5, 0.5])),
                      h.get("emission_weight", 1.0))
    s = np.zeros(len(p), int)
    for i, x in enumerate(p):
        for d in hmm.push(float(x), i * 0.96):
            s[d.index] = d.state
    for d in hmm.flush():
        s[d.index] = d.state
    return s


def held_out_programmes(n: int, embedder, cache: Path) -> list[dict]:
    out = []
    with open(SHARED / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["source"] in HELD_OUT]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "held_out.csv"
        with open(manifest, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        composer = None
        for seed in range(1, n + 1):
            key = cache / f"beds-eval-{embedder.name}-{seed}.npz"
            if not key.exists():
                composer = composer or BedComposer(manifest, root=SHARED)
                audio, labels = composer.build(random.Random(seed), 10.0)
                frames = frames_of(audio)
                cache.mkdir(parents=True, exist_ok=True)
                np.savez(key, emb=embedder.embed(frames).embeddings, label=np.array(frame_labels(labels, len(frames))))
            out.append(dict(np.load(key)))
    return out


def dev_streams(embedder, cache: Path) -> list[dict]:
    out = []
    for labels_csv in sorted((SHARED / "streams").glob("*.labels.csv")):
        key = cache / f"dev-{embedder.name}-{labels_csv.name[:-11]}.npz"
        if not key.exists():
            audio = read_audio(str(labels_csv.with_name(labels_csv.name[:-11] + ".opus")))
            frames = frames_of(audio)
            rows = [(s, e, {"speech_over_music": "bed", "music": "music", "speech": "speech"}.get(lab, ""))
                    for s, e, lab in read_labels(labels_csv)]
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(key, emb=embedder.embed(frames).embeddings, label=np.array(frame_labels(rows, len(frames))))
        out.append(dict(np.load(key)))
    return out


def figures(sets: list[dict], music: Head, talk: Head | None) -> dict:
    calls = {"raw": {}, "hmm": {}}
    usage = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for d in sets:
        p = music.predict_proba(d["emb"])[:, music.classes.index("music")]
        for name, called in (("raw", p > 0.5), ("hmm", hmm_states(p, music) == 1)):
            for lab in ("bed", "speech", "music"):
                m = d["label"] == lab
                a = calls[name].setdefault(lab, [0, 0])
                a[0] += int(called[m].sum())
                a[1] += int(m.sum())
        if talk is not None:
            bg = talk.predict_proba(d["emb"])[:, talk.classes.index(TALK_CLASS)] > 0.5
            for lab, truth in (("bed", True), ("music", False)):
                m = d["label"] == lab
                usage["tp" if truth else "fp"] += int(bg[m].sum())
                usage["fn" if truth else "tn"] += int((~bg[m]).sum())
    out = {name: {lab: {"called_music": round(v[0] / max(v[1], 1), 4), "frames": v[1]} for lab, v in c.items()}
           for name, c in calls.items()}
    if talk is not None:
        u = usage
        out["usage"] = {
            "background": {"precision": round(u["tp"] / max(u["tp"] + u["fp"], 1), 4),
                           "recall": round(u["tp"] / max(u["tp"] + u["fn"], 1), 4), "frames": u["tp"] + u["fn"]},
            "foreground": {"precision": round(u["tn"] / max(u["tn"] + u["fn"], 1), 4),
                           "recall": round(u["tn"] / max(u["tn"] + u["fp"], 1), 4), "frames": u["tn"] + u["fp"]}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default=str(REPO / "configs" / "heads" / "yamnet"))
    ap.add_argument("--programmes", type=int, default=6)
    ap.add_argument("--cache", default=str(REPO / ".cache" / "beds_eval"))
    args = ap.parse_args()
    embedder = load_embedder(config.load(None, []))
    heads = Path(args.heads)
    music = Head.load(heads / "music.json")
    talk = Head.load(heads / "talkover.json") if (heads / "talkover.json").exists() else None
    cache = Path(args.cache)
    res = {"heads": str(heads),
           "held_out_programmes": figures(held_out_programmes(args.programmes, embedder, cache), music, talk),
           "dev_streams": figures(dev_streams(embedder, cache), music, talk)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
