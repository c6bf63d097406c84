"""Today's genre inputs (YAMNet layers 9+10 bands + embedding, pooled as genre.pool) for the GTZAN
excerpts, with the repo's own code, read-only; cache under /tmp/musicnn/cache."""
import os as _os
from pathlib import Path as _P
W = _os.environ.get("MUSICNN_WORK", "/tmp/musicnn")  # scratch: venv, caches, out/
REPO = str(_P(__file__).resolve().parents[2])
import os, sys, time
from pathlib import Path
import numpy as np
REPO = Path(REPO); SHARED = Path("/work/shared")
sys.path.insert(0, str(REPO))
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from pipeline import config
from pipeline.models import load_embedder
from pipeline.training.train import genre_features, genre_inputs, genre_items

cfg = config.load()
emb = load_embedder(cfg)
items, classes = genre_items(SHARED / "data" / "manifest.csv")
names, dims = genre_inputs(emb)
print(type(emb).__name__, names, dims, len(items), classes, flush=True)
t = time.time()
X, S = genre_features(items, emb, Path(f"{W}/cache") / f"genre-{emb.name}", inputs=names)
print("features", X.shape, None if S is None else S.shape, "%.1fs" % (time.time() - t), flush=True)
np.savez(f"{W}/out/yamnet_genre.npz", X=X, S=S, dims=np.array(dims), names=np.array(names),
         y=np.array([it["genre"] for it in items]), groups=np.array([it["group"] for it in items]),
         paths=np.array([it["path"] for it in items]), dur=np.array([it["duration_s"] for it in items]),
         classes=np.array(classes))
