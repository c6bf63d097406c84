"""5-fold orig_id genre validation, as pipeline.training.train.genre_cross_validation (same folds, fit_head,
l2 0.3, AudioSet blend by operators.tagging.genre.GenreModel.blend), with per-fold accuracies; for input
blocks that the project's embedder does not give (musicnn), so GenreModel is built directly."""
import os as _os
from pathlib import Path as _P
W = _os.environ.get("MUSICNN_WORK", "/tmp/musicnn")  # scratch: venv, caches, out/
REPO = str(_P(__file__).resolve().parents[2])
import json, os, sys, time
sys.path.insert(0, REPO)
os.environ.setdefault("ONAIR_MODEL_DIR", "/work/shared/models")
import numpy as np
from operators.models.classify import fit_head
from operators.tagging.genre import GenreModel, audioset_indices, pool
from pipeline import config

cfg = config.load()
AUDIOSET = audioset_indices(os.path.join(os.environ["ONAIR_MODEL_DIR"], "yamnet", "yamnet_class_map.csv"),
                            cfg["genre"]["audioset_map"])


def folds_of(groups, seed, folds=5):
    ug = np.array(sorted(set(groups)))
    return np.array_split(np.random.default_rng(seed).permutation(ug), folds)


def cv(X, S, y, groups, classes, seeds=range(5), l2=0.3, weights=(0.0, 0.3)):
    y = np.asarray(y); groups = np.asarray(groups)
    truth = np.array([classes.index(g) for g in y])
    res = {w: {"overall": [], "folds": []} for w in weights}
    for seed in seeds:
        head_p = np.zeros((len(y), len(classes)))
        parts = folds_of(list(groups), seed)
        for part in parts:
            te = np.isin(groups, part)
            head = fit_head(X[~te], list(y[~te]), classes, l2=l2)
            head_p[te] = head.predict_proba(X[te])
        model = GenreModel(head, AUDIOSET, 0.3)
        for w in weights:
            pred = np.array([np.argmax(model.blend(head_p[i], None if S is None else S[i], w)) for i in range(len(y))])
            ok = pred == truth
            res[w]["overall"].append(float(ok.mean()))
            res[w]["folds"] += [float(ok[np.isin(groups, p)].mean()) for p in parts]
    return res


def summary(name, res, dims):
    out = []
    for w, r in res.items():
        f = np.array(r["folds"]); o = np.array(r["overall"])
        d = {"features": name, "dims": int(sum(dims)), "audioset_weight": w, "top1_mean": round(float(o.mean()), 4),
             "fold_std": round(float(f.std(ddof=1)), 4), "seed_std": round(float(o.std(ddof=1)), 4) if len(o) > 1 else None,
             "top1_by_seed": [round(v, 4) for v in o], "seed0_folds": [round(v, 4) for v in f[:5]]}
        print(json.dumps(d), flush=True)
        out.append(d)
    return out


def load():
    ref = np.load(f"{W}/out/yamnet_genre.npz")
    return ref


if __name__ == "__main__":
    # python cv.py [musicnn models ...]
    ref = load()
    classes = list(ref["classes"]); y = list(ref["y"]); groups = list(ref["groups"]); S = ref["S"]
    Xy, ydims = ref["X"], list(ref["dims"])
    results = []
    t = time.time()
    seeds = range(int(os.environ.get("SEEDS", "5")))
    if os.environ.get("BASELINE", "1") == "1":
        results += summary("yamnet: layer9+10 bands + embedding (shipped)", cv(Xy, S, y, groups, classes, seeds), ydims)
    print("%.0fs" % (time.time() - t), flush=True)
    for model in sys.argv[1:]:
        m = np.load(f"{W}/out/musicnn_{model}.npz")
        combos = [tuple(c.split("+")) for c in os.environ.get("COMBOS", "taggram+penultimate+mean_pool+max_pool").split(",")]
        for blocks in combos:
            Xm = pool(np.concatenate([m[b] for b in blocks], 1), [m[b].shape[1] for b in blocks])
            dims = [m[b].shape[1] for b in blocks]
            results += summary(f"{model} {'+'.join(blocks)}", cv(Xm, S, y, groups, classes, seeds, weights=(0.0,)), dims)
            Xc = np.concatenate([Xy, Xm], 1)
            results += summary(f"yamnet shipped + {model} {'+'.join(blocks)}", cv(Xc, S, y, groups, classes, seeds), ydims + dims)
    json.dump(results, open(f"{W}/out/cv_{'_'.join(sys.argv[1:]) or 'baseline'}.json", "w"), indent=1)
