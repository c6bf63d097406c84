"""Per GTZAN excerpt: musicnn blocks averaged over its 3 s patches -> out/musicnn_<model>.npz (same file order
as out/yamnet_genre.npz)."""
import os as _os
from pathlib import Path as _P
W = _os.environ.get("MUSICNN_WORK", "/tmp/musicnn")  # scratch: venv, caches, out/
REPO = str(_P(__file__).resolve().parents[2])
import sys, time
sys.path.insert(0, REPO); sys.path.insert(0, W)
import numpy as np
from mnn import Musicnn, BLOCKS
from pipeline.training.audiofile import read_audio

model = sys.argv[1] if len(sys.argv) > 1 else "MSD_musicnn"
ref = np.load(f"{W}/out/yamnet_genre.npz")
m = Musicnn(model)
feats = {b: [] for b in BLOCKS}
t_dec = t_net = 0.0; secs = 0.0
for i, p in enumerate(ref["paths"]):
    t0 = time.perf_counter(); a = read_audio(p); t1 = time.perf_counter()
    f = m.features(a, cap=16); t2 = time.perf_counter()   # 16 x 3 s = 48 s, as the YAMNet cache cap of 48 frames
    t_dec += t1 - t0; t_net += t2 - t1; secs += len(a) / 16000
    for b in BLOCKS:
        feats[b].append(f[b].mean(0))
    if i < 3 or i % 100 == 0:
        from musicnn.configuration import MSD_LABELS, MTT_LABELS
        lab = MTT_LABELS if "MTT" in model else MSD_LABELS
        top = np.argsort(-f["taggram"].mean(0))[:4]
        print(i, ref["y"][i], "%.1fs" % (len(a) / 16000), [lab[j] for j in top], flush=True)
print(f"{model}: {secs:.0f} s audio, decode {t_dec:.1f} s, logmel+net {t_net:.1f} s ({t_net/secs*1000:.2f} ms per s)")
np.savez(f"{W}/out/musicnn_{model}.npz", **{b: np.stack(v) for b, v in feats.items()})
