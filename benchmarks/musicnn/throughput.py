"""Compute per second of audio, same process, same audio: YAMNet as shipped (TFLite, embedding + class scores +
layers 9/10, operators.models.embed.YamnetTFLite.embed on 0.96 s-hop frames) vs musicnn (log-mel + net on 3 s
patches, no overlap). Audio: the first N GTZAN 15-20 s files, decoded once beforehand (decode not timed).
Threads: YAMNet's configured count; musicnn session with intra/inter threads given by argv[2] (0 = TF default)."""
import os as _os
from pathlib import Path as _P
W = _os.environ.get("MUSICNN_WORK", "/tmp/musicnn")  # scratch: venv, caches, out/
REPO = str(_P(__file__).resolve().parents[2])
import os, sys, time
sys.path.insert(0, REPO); sys.path.insert(0, W)
os.environ.setdefault("ONAIR_MODEL_DIR", "/work/shared/models")
import numpy as np
from mnn import Musicnn, logmel
from pipeline import config
from pipeline.models import load_embedder
from pipeline.training.audiofile import read_audio, frames_of

model = sys.argv[1] if len(sys.argv) > 1 else "MSD_musicnn"
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ref = np.load(f"{W}/out/yamnet_genre.npz")
long = [p for p, d in zip(ref["paths"], ref["dur"]) if 10 < d < 25][:6]
audio = np.concatenate([read_audio(p) for p in long])
secs = len(audio) / 16000
cfg = config.load()
emb = load_embedder(cfg)
m = Musicnn(model, threads=threads)
frames = frames_of(audio)
emb.embed(frames[:4]); m.features(audio[:48000 * 2])   # warm-up


def best(f, reps=3):
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return min(ts), ts

ty, ty_all = best(lambda: emb.embed(frames))
tl, _ = best(lambda: m.patches(audio))
tm, tm_all = best(lambda: m.features(audio))
# streaming-like: one 3 s patch per call (what a live channel would run every 3 s)
P = m.patches(audio)
ts, _ = best(lambda: [m.run(P[i:i + 1]) for i in range(len(P))])
print(f"cfg embedding threads: {cfg.get('embedding', {}).get('threads')}; musicnn TF threads {threads or 'default'}")
print(f"audio {secs:.1f} s ({len(long)} files), {len(frames)} YAMNet frames, {len(P)} musicnn patches")
print(f"YAMNet embed: {ty:.3f} s -> {ty/secs*1000:.2f} ms per s of audio (runs {['%.3f' % t for t in ty_all]})")
print(f"musicnn {model} log-mel only: {tl:.3f} s -> {tl/secs*1000:.2f} ms per s")
print(f"musicnn {model} log-mel + net, batched: {tm:.3f} s -> {tm/secs*1000:.2f} ms per s (runs {['%.3f' % t for t in tm_all]})")
print(f"musicnn {model} net only, one patch per call: {ts:.3f} s -> {ts/secs*1000:.2f} ms per s")
for name, t in (("batched", tm), ("per-patch net + log-mel", ts + tl)):
    print(f"ratio musicnn/YAMNet ({name}): {t/ty:.2f}; YAMNet+musicnn compute = {(ty+t)/ty:.2f}x YAMNet's; "
          f"channels in real time on the model alone: {secs/ty:.0f} -> {secs/(ty+t):.0f} ({(ty/(ty+t)-1)*100:+.0f} %)")
