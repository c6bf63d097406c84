"""`onair train`: fit the music/non-music head on embeddings of a labelled
manifest, and the HMM transitions on labelled programmes.

Manifest rows (format of ../shared/data/manifest.csv): path (relative to the
manifest's folder), label (music | speech | noise | silence | other labels
skipped), source (used to hold out whole sources for validation). Folders
given with --music-dir add every audio file below them as music.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from operators.models.classify import fit_head
from operators.audio.framing import HOP_S
from operators.tagging.genre import POOLING, frame_inputs, pool
from operators.decisions.hmm import fit_transitions
from operators.models.probe import fingerprint
from pipeline.training.audiofile import frames_of, read_audio
from pipeline.training.beds import bed_frames, frame_labels
from pipeline.training.evaluate import music_f1, read_labels, replay
from pipeline.heads import TALK_CLASS

log = logging.getLogger("onair.train")

MUSIC_LABELS = {"music"}
NON_MUSIC_LABELS = {"speech", "noise", "silence"}
AUDIO_EXT = {".opus", ".ogg", ".wav", ".flac", ".mp3", ".au", ".m4a", ".aac"}


def manifest_items(manifest: Path, music_dirs: list[Path]) -> list[dict]:
    items = []
    root = manifest.parent
    with open(manifest, newline="") as f:
        for r in csv.DictReader(f):
            lab = r["label"].strip()
            if lab in MUSIC_LABELS:
                cls = "music"
            elif lab in NON_MUSIC_LABELS:
                cls = "non_music"
            else:
                continue
            items.append({"path": str(root / r["path"]), "class": cls, "source": r.get("source") or r["path"],
                          "genre": r.get("genre", "")})
    for d in music_dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.suffix.lower() in AUDIO_EXT:
                items.append({"path": str(p), "class": "music", "source": f"dir:{d.name}/{p.parent.name}",
                              "genre": p.parent.name})
    return items


class EmbeddingCache:
    """Embeddings per (backend, file, frame cap), so retraining does not re-embed."""

    def __init__(self, root: Path, backend: str):
        self.root = root / backend
        self.root.mkdir(parents=True, exist_ok=True)

    def _key(self, path: str, cap: int) -> Path:
        st = Path(path).stat()
        h = hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}|{cap}".encode()).hexdigest()
        return self.root / f"{h}.npy"

    def get(self, path: str, cap: int, embedder) -> np.ndarray:
        k = self._key(path, cap)
        if k.exists():
            return np.load(k)
        emb = embedder.embed(frames_of(read_audio(path), cap)).embeddings
        np.save(k, emb)
        return emb


def embed_items(items, embedder, cache: EmbeddingCache, cap: int):
    xs, ys, groups, bad = [], [], [], 0
    t0 = time.monotonic()
    for i, it in enumerate(items):
        try:
            e = cache.get(it["path"], cap, embedder)
        except Exception as ex:  # a broken training file is skipped, not fatal
            bad += 1
            log.warning("skipping %s: %s", it["path"], str(ex).splitlines()[0] if str(ex) else ex)
            continue
        xs.append(e)
        ys.extend([it["class"]] * len(e))
        groups.extend([it["source"]] * len(e))
        if (i + 1) % 500 == 0:
            log.info("embedded %d/%d files (%.0f s)", i + 1, len(items), time.monotonic() - t0)
    return np.concatenate(xs), ys, groups, bad


def programme_states(labels_csv: Path) -> list[int]:
    """Per-frame states (1 music) of a labelled programme on the 0.96 s frame grid, for the HMM's
    transitions. Speech over music counts as non-music here, though the music head now calls beds
    music: the shipped transitions were fitted this way, and refitting them with beds as music is
    not done yet (the HMM calibration scores speech over music as "don't care" either way)."""
    rows = read_labels(labels_csv)
    t = np.arange(0, rows[-1][1], HOP_S) + HOP_S / 2
    states = np.zeros(len(t), int)
    for s, e, lab in rows:
        states[(t >= s) & (t < e)] = 1 if lab == "music" else 0
    return states.tolist()


def programme_audio(labels_csv: Path) -> Path | None:
    stem = labels_csv.name[:-len(".labels.csv")]
    for ext in (".opus", ".ts", ".wav", ".flac", ".ogg", ".mp3"):
        p = labels_csv.with_name(stem + ext)
        if p.exists():
            return p
    return None


def composed_frames(composer: Path, manifest: Path, count: int, minutes: float, embedder, cache: Path,
                    root: Path | None = None):
    """Frames of broadcast-like programmes composed from the manifest's own clips
    (songs, talk, adverts, jingles, noise, silence at broadcast levels), labelled by
    the composer: embeddings, labels and the programme of each frame. Frames that
    straddle a block boundary are left out."""
    import importlib.util
    import random

    import av

    spec = importlib.util.spec_from_file_location("broadcast_sim", composer)
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    with open(manifest, newline="") as f:
        clips = [sim.Clip(r["path"], r["label"], float(r["duration_s"]), r["source"], r.get("genre", ""))
                 for r in csv.DictReader(f)]
    xs, ys, programme = [], [], []
    for seed in range(count):
        profile = ("radio", "tv")[seed % 2]
        key = cache / f"composed-{embedder.name}-{seed}-{minutes}-{profile}.npz"
        if not key.exists():
            rng = random.Random(1000 + seed)
            audio, labels, _ = sim.build(sim.Pool(clips, rng), rng, str(root or manifest.parent), minutes,
                                            profile)
            frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = sim.SR, 0
            rs = av.AudioResampler(format="flt", layout="mono", rate=16000)
            a16 = np.concatenate([f.to_ndarray().reshape(-1) for f in rs.resample(frame) + rs.resample(None)])
            frames = frames_of(a16)
            lab = frame_labels(labels, len(frames))
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(key, emb=embedder.embed(frames).embeddings, labels=np.array(lab))
            log.info("composed programme %d (%s, %.0f min) embedded", seed, profile, minutes)
        d = np.load(key)
        keep = np.isin(d["labels"], ["music", "speech", "noise", "silence", TALK_CLASS])
        xs.append(d["emb"][keep])
        ys += [str(lab) for lab in d["labels"][keep]]
        programme += [seed] * int(keep.sum())
    return (np.concatenate(xs) if xs else np.zeros((0, embedder.dim), np.float32)), ys, np.array(programme, int)


def music_or_not(labels) -> list[str]:
    """The music head's two classes from the composers' labels. Speech over music (an advert's
    bed, a presenter over an intro) and a bed under speech are music: a monitor counts that music
    (issue #22); that it is background is the talk-over head's to say, and requests skip it."""
    return ["music" if lab in ("music", TALK_CLASS, "bed") else "non_music" for lab in labels]


def calibrate_hmm(head, embedder, programmes: list[Path], transition: np.ndarray, lag: int) -> dict:
    """Pick the class prior and emission weight that give the best mean music F1
    on labelled programmes (a 2-parameter grid; the transitions stay as fitted)."""
    probs = []
    for labels_csv in programmes:
        audio = programme_audio(labels_csv)
        if audio is None:
            continue
        emb = embedder.embed(frames_of(read_audio(str(audio)))).embeddings
        probs.append((read_labels(labels_csv), head.predict_proba(emb)[:, head.classes.index("music")]))
    if not probs:
        return {}
    stationary = np.array([transition[1, 0], transition[0, 1]]) / (transition[1, 0] + transition[0, 1])
    grid = []
    for prior_non in (0.5, 0.6, 0.7, 0.8):
        for weight in (0.5, 0.75, 1.0):
            f1 = [music_f1(rows, replay(p, transition, stationary, [prior_non, 1 - prior_non], lag, weight))
                  for rows, p in probs]
            grid.append((float(np.mean(f1)), prior_non, weight, f1))
    # ties within 0.001 go to the setting closest to a neutral prior: less tuned to these programmes
    best = max(grid, key=lambda g: (round(g[0], 3), -abs(g[1] - 0.5), g[2]))
    log.info("HMM calibration: class prior %.2f/%.2f, emission weight %.2f -> F1 %s", best[1], 1 - best[1],
             best[2], [round(f, 4) for f in best[3]])
    return {"class_prior": [best[1], round(1 - best[1], 6)], "emission_weight": best[2],
            "calibration_f1": [round(f, 4) for f in best[3]]}


def group_split(groups: list[str], frac: float = 0.2, seed: int = 0):
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(uniq, max(1, int(len(uniq) * frac)), replace=False))
    mask = np.array([g in held for g in groups])
    return ~mask, mask


def binary_report(head, x, y) -> dict:
    p = head.predict_proba(x)[:, head.classes.index("music")] >= 0.5
    t = np.array([c == "music" for c in y])
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    prec = tp / max(tp + fp, 1)
    rec = tp / max(tp + fn, 1)
    return {"frames": int(len(t)), "accuracy": round(float(np.mean(p == t)), 4), "precision": round(prec, 4),
            "recall": round(rec, 4), "f1": round(2 * prec * rec / max(prec + rec, 1e-9), 4)}


def train_music_head(embedder, manifest: Path, music_dirs: list[Path], programmes: Path | None, out: Path,
                     cache_dir: Path, cap: int = 48, l2: float = 0.1, composer: Path | None = None,
                     compose: int = 0, lag: int = 4, beds: int = 0) -> dict:
    """`beds`: also train on that many 10-minute programmes of music beds under speech
    (pipeline.training.beds). With them the head needs more regularisation (l2 0.1 rather than
    1e-3): a bed's frames sit close to speech's, and a loose head learns the voices, calling plain
    speech music (docs/figures.md, "Beds")."""
    items = manifest_items(manifest, music_dirs)
    log.info("training on %d files (%d music)", len(items), sum(i["class"] == "music" for i in items))
    x, y, groups, bad = embed_items(items, embedder, EmbeddingCache(cache_dir, embedder.name), cap)
    tr, va = group_split(groups)
    val_head = fit_head(x[tr], [y[i] for i in np.where(tr)[0]], ["non_music", "music"], l2=l2)
    validation = binary_report(val_head, x[va], [y[i] for i in np.where(va)[0]])
    log.info("frame validation on held-out sources: %s", validation)
    if compose:
        cx, clabels, cprog = composed_frames(composer, manifest, compose, 15.0, embedder, cache_dir / "composed")
        x, y = np.concatenate([x, cx]), list(y) + music_or_not(clabels)
        train_talkover_head(cx, clabels, cprog, out.with_name("talkover.json"), embedder.name,
                            probe=probe_meta(embedder))
    if beds:
        bx, blabels = bed_frames(manifest, beds, 10.0, embedder, cache_dir / "beds")
        x, y = np.concatenate([x, bx]), list(y) + music_or_not(blabels)
    head = fit_head(x, y, ["non_music", "music"], l2=l2)
    hmm = {"p_enter_music": 0.01, "p_leave_music": 0.01, "class_prior": [0.5, 0.5], "emission_weight": 1.0,
           "fitted_on": []}
    if programmes:
        labelled = sorted(Path(programmes).glob("*.labels.csv"))
        if labelled:
            A = fit_transitions([programme_states(p) for p in labelled])
            hmm.update(p_enter_music=round(float(A[0, 1]), 6), p_leave_music=round(float(A[1, 0]), 6),
                       fitted_on=[p.name for p in labelled])
            hmm.update(calibrate_hmm(head, embedder, labelled, A, lag))
    head.meta.update({"backend": embedder.name, "kind": "music", "hmm": hmm, "validation": validation,
                      "files": len(items) - bad, "frames": int(len(y)), "frames_per_file_max": cap,
                      "composed_programmes": compose, "bed_programmes": beds, "l2": l2,
                      "manifest": manifest.name, "music_dirs": [Path(d).name for d in music_dirs],
                      **probe_meta(embedder)})
    head.save(out)
    log.info("wrote %s", out)
    return head.meta


def train_talkover_head(x: np.ndarray, labels: list[str], programme: np.ndarray, out: Path, backend: str,
                        l2: float = 0.2, threshold: float = 0.5, probe: dict | None = None) -> dict:
    """Speech over music (adverts, voice-overs on a bed) against music, on the composed programmes'
    frames. The music head rightly calls a bed music often enough (a fifth of advert frames on
    unseen programmes) to cost a request per advert; this head lets the debouncer skip them.
    Classes are not rebalanced: a song frame taken for talk delays a request, an advert frame
    taken for music costs one, and songs are twenty times more frequent."""
    labels = np.asarray(labels)
    classes = ["music", TALK_CLASS]
    keep = np.isin(labels, classes)
    x, y, prog = x[keep], list(labels[keep]), programme[keep]
    if TALK_CLASS not in y:
        log.warning("no speech-over-music frames in the composed programmes: no talk-over head written")
        return {}
    # validation on whole held-out programmes, as the head will meet new ones
    held = np.isin(prog, np.unique(prog)[::4])
    val = {}
    if held.any() and (~held).any():
        h = fit_head(x[~held], [y[i] for i in np.where(~held)[0]], classes, l2=l2, sample_weight=np.ones((~held).sum()))
        p = h.predict_proba(x[held])[:, 1] > threshold
        t = np.array([y[i] == TALK_CLASS for i in np.where(held)[0]])
        val = {"programmes": int(len(np.unique(prog[held]))), "talk_frames": int(t.sum()),
               "talk_recall": round(float(p[t].mean()), 4), "music_called_talk": round(float(p[~t].mean()), 4),
               "threshold": threshold}
        log.info("talk-over validation on held-out programmes: %s", val)
    head = fit_head(x, y, classes, l2=l2, sample_weight=np.ones(len(y)))
    head.meta.update({"backend": backend, "kind": "talkover", "validation": val, "frames": int(len(y)),
                      "composed_programmes": int(len(np.unique(prog))), "l2": l2, **(probe or {})})
    head.save(out)
    log.info("wrote %s", out)
    return head.meta


def probe_meta(embedder) -> dict:
    """The probe embedding a head keeps, so a runtime can tell it gives other embeddings
    (operators.models.probe, pipeline.heads.embedding_agreement)."""
    return {"embedding_probe": np.round(fingerprint(embedder), 5).tolist()}


def main_report(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("backend", "validation", "hmm", "files", "frames")})


# -- genre head ---------------------------------------------------------------------------------

def genre_items(manifest: Path, min_examples: int = 10) -> tuple[list[dict], list[str]]:
    """Rows with a genre; genres with fewer than `min_examples` files are left out."""
    root = manifest.parent
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("genre") or "").strip()]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["genre"]] = counts.get(r["genre"], 0) + 1
    classes = sorted(g for g, n in counts.items() if n >= min_examples)
    items = [{"path": str(root / r["path"]), "genre": r["genre"], "group": r.get("orig_id") or r["path"],
              "duration_s": float(r.get("duration_s") or "nan")} for r in rows if r["genre"] in classes]
    return items, classes


def genre_inputs(embedder) -> tuple[list[str], list[int]]:
    """The blocks a genre head reads from this embedder: its inner-layer features, then the
    embedding (operators.embed; the embedding alone where a backend has no features)."""
    return [*embedder.feature_dims, "embedding"], [*embedder.feature_dims.values(), embedder.dim]


def genre_features(items, embedder, cache: Path, cap: int = 48, inputs: list[str] | None = None):
    """Per file: the pooled mean of its frames' genre inputs (operators.tagging.genre.pool, block by block)
    and, for YAMNet, the mean AudioSet scores."""
    names, dims = genre_inputs(embedder)
    if inputs is not None:
        dims = [dims[names.index(n)] for n in inputs]
        names = list(inputs)
    cache.mkdir(parents=True, exist_ok=True)
    X, S = [], []
    for it in items:
        st = Path(it["path"]).stat()
        key = cache / (hashlib.sha1(f"{Path(it['path']).resolve()}|{st.st_size}|{st.st_mtime_ns}|{cap}|{names}"
                                    .encode()).hexdigest() + ".npz")
        if not key.exists():
            res = embedder.embed(frames_of(read_audio(it["path"]), cap))
            np.savez(key, e=frame_inputs(names, res.embeddings, res.features).mean(0),
                     s=res.class_scores.mean(0) if res.class_scores is not None else np.zeros(0))
        d = np.load(key)
        X.append(d["e"])
        S.append(d["s"])
    return pool(np.stack(X), dims).astype(np.float32), (np.stack(S) if S and S[0].size else None)


def genre_cross_validation(X, S, y, groups, classes, l2: float, model_for, folds: int = 5, seed: int = 0,
                           meta: dict | None = None, weights: tuple = ()) -> dict:
    """Top-1 accuracy and confusion (rows: truth) by folds of whole groups (orig_id), never by file.
    `meta` (inputs, input_dims, aggregation) is given to each fold's head as training gives it.
    `predicted` holds each file's out-of-fold genre; `weights` adds the accuracy and predictions
    with other AudioSet blend weights (the heads are fitted once)."""
    ug = np.array(sorted(set(groups)))
    parts = np.array_split(np.random.default_rng(seed).permutation(ug), folds)
    groups = np.asarray(groups)
    truth = np.array([classes.index(g) for g in y])
    head_p = np.zeros((len(truth), len(classes)))
    for part in parts:
        te = np.isin(groups, part)
        head = fit_head(X[~te], list(np.asarray(y)[~te]), classes, l2=l2)
        head.meta.update(meta or {})
        model = model_for(head)
        head_p[te] = head.predict_proba(X[te])    # X is pooled already

    def predicted(w):   # blending needs only the classes and the AudioSet map: any fold's model does
        return np.array([np.argmax(model.blend(head_p[i], None if S is None else S[i], w))
                         for i in range(len(truth))])

    pred = predicted(model.weight)
    conf = np.zeros((len(classes), len(classes)), int)
    np.add.at(conf, (truth, pred), 1)
    by_weight = {w: predicted(w) for w in weights}
    return {"accuracy": round(float(np.mean(pred == truth)), 4),
            "accuracy_head_only": round(float(np.mean(head_p.argmax(1) == truth)), 4),
            "files": int(conf.sum()), "folds": folds, "split": "orig_id groups", "classes": classes,
            "confusion": conf.tolist(), "predicted": pred.tolist(),
            "accuracy_by_weight": {w: round(float(np.mean(p == truth)), 4) for w, p in by_weight.items()},
            "predicted_by_weight": {w: p.tolist() for w, p in by_weight.items()}}


def train_genre_head(embedder, manifest: Path, out: Path, cache_dir: Path, model_for, l2: float = 0.3,
                     min_examples: int = 10) -> dict:
    items, classes = genre_items(manifest, min_examples)
    if len(classes) < 2:
        raise ValueError(f"{manifest}: fewer than 2 genres with {min_examples}+ files; nothing to train")
    log.info("genre head: %d files in %d genres (%s)", len(items), len(classes), ", ".join(classes))
    names, dims = genre_inputs(embedder)
    X, S = genre_features(items, embedder, cache_dir / f"genre-{embedder.name}")
    y = [it["genre"] for it in items]
    groups = [it["group"] for it in items]
    inputs = {"inputs": names, "input_dims": dims, "aggregation": POOLING}
    validation = genre_cross_validation(X, S, y, groups, classes, l2, model_for, meta=inputs)
    for k in ("predicted", "accuracy_by_weight", "predicted_by_weight"):   # per file: not for the head file
        validation.pop(k)
    log.info("genre validation (5 folds by orig_id): top-1 %.3f blended, %.3f head only", validation["accuracy"],
             validation["accuracy_head_only"])
    head = fit_head(X, y, classes, l2=l2)
    head.meta.update({"backend": embedder.name, "kind": "genre", **inputs, "validation": validation,
                      "manifest": manifest.name, "l2": l2, **probe_meta(embedder)})
    head.save(out)
    log.info("wrote %s", out)
    return head.meta
