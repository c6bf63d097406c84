"""How many live channels one machine keeps in real time, end to end.

  python benchmarks/throughput.py [--quick] [--configs yamnet-fp32,vggish-int8,...] [--kafka-channels N]
                                  [--mode worker|direct] [--channels N] [--set KEY=VALUE ...]

Channels are broadcast MPEG-TS (H.264 + AAC or MP2: the two shared dev
programmes, encoded once into .cache/streams as `onair demo` does), each
starting at its own offset and looping. Mode `worker` (default): the TS is cut
into the chunks `onair ingest` makes (2 s, every track) and each channel's
chunks are handed over when their last sample is on air (benchmarks/livefeed.py
ChunkFeed), decoded as the Kafka worker decodes them and fed to the engine: the worker's path without the
broker. Mode `direct`: `onair run`'s runtime reads one named pipe per channel,
fed at real-time pace, with a thread per source. Either way every stage is
measured: PyAV demux, decode and resample -> framing -> embedding batched
across channels -> music head -> fixed-lag HMM -> segments -> debounce
(-> genre where a head exists).

A channel count is real time when, over the measurement window (after a
warm-up that waits for the start-up burst to drain), the lag of the embedded
audio behind the live edge does not grow (mean over channels, last third of
the window minus first third <= 0.5 s + 1 % of the window) and stays bounded
(95th percentile over channels <= chunk length + 4 s). The search starts from
a guess calibrated on the model's and the decoder's speed, then moves by the
CPU headroom (after a pass) or the frames still embedded (after a fail), and
bisects between the largest count that passed and the smallest that failed.

Each configuration runs in its own process (clean CPU and memory figures):
YAMNet (TFLite, fp32) and VGGish (the same-architecture stand-in with random
weights, built by tests/standin_vggish.py and loaded through pipeline.models:
the same compute as the real model; a throwaway head fitted on its embeddings)
in fp32, bf16 and int8, and the naive design: one call of the VGGish TF-Hub
signature per channel per 0.96 s frame, fp32, no batching. One JSON line per
configuration, then the ratio of the best VGGish configuration to the naive
one, then the Kafka mode figure (live pipes -> `onair ingest` -> a real Kafka
0.9 broker -> one `onair worker` process; benchmarks/kafka_throughput.py).

Latency is from the moment a frame's last sample was on air to its HMM
decision: the 4-frame decision lag (3.84 s) by design, plus waiting for the
chunk to complete (up to 2 s in worker mode), plus queueing and compute.

--quick: 12 s windows after a 6 s warm-up (longer while the start-up burst
drains), at most 3 trials per configuration, a 15 % search tolerance, the
Kafka figure on a 12 s window; the output says so ("search": "quick"). A 12 s
window resolves about 5 % overload. Full mode: 60 s windows after 15 s, up to
7 trials, 5 %.
Timings are only comparable within one run, and on a shared machine each
configuration gets the CPU its neighbours leave: the ratio per core used is
the figure to quote there. The load average at start and end is printed.
"""
from __future__ import annotations

import argparse
import functools
import json
import pickle
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))

CONFIGS = {
    "yamnet-fp32": {"backend": "yamnet", "precision": "fp32"},
    "vggish-int8": {"backend": "vggish", "precision": "int8"},
    "vggish-bf16": {"backend": "vggish", "precision": "bf16"},
    "vggish-fp32": {"backend": "vggish", "precision": "fp32"},
    "vggish-naive": {"backend": "vggish", "precision": "fp32", "naive": True},
}
PROGRAMMES = ("dev-radio", "dev-tv")
CODECS = ("aac", "mp2")


def machine() -> dict:
    from operators.models.vggish import available_cores, cpu_has_bf16
    model, flags = "", []
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    return {"cpu": model, "cores": available_cores(), "bf16": cpu_has_bf16(), "avx512_vnni": "avx512_vnni" in flags,
            "amx": "amx_tile" in flags, "load_avg": [round(x, 2) for x in os.getloadavg()]}


# ---------------------------------------------------------------- parent: assets and orchestration

def media_files() -> list[Path]:
    """The dev programmes as `onair demo` encodes them (and from its cache)."""
    from pipeline.demo import encoded
    return encoded([(SHARED / "data" / "streams" / f"{p}.opus", c) for p in PROGRAMMES for c in CODECS])


@functools.lru_cache(maxsize=None)
def programme_audio(name: str):
    from pipeline.training.audiofile import read_audio
    return read_audio(str(SHARED / "data" / "streams" / f"{name}.opus"))


def programme_frames(name: str, start_s: float, count: int):
    """`count` consecutive 0.96 s frames of a dev programme from `start_s`, with their labels."""
    import numpy as np

    from operators.audio.framing import FRAME_SAMPLES, HOP_S, HOP_SAMPLES
    from pipeline.training.train import programme_states
    audio = programme_audio(name)
    k = int(start_s / HOP_S)
    frames = np.stack([audio[i * HOP_SAMPLES:i * HOP_SAMPLES + FRAME_SAMPLES]
                       for i in range(k, min(k + count, (len(audio) - FRAME_SAMPLES) // HOP_SAMPLES))])
    states = np.asarray(programme_states(SHARED / "data" / "streams" / f"{name}.labels.csv"))
    n = min(len(frames), len(states) - k)
    return frames[:n], states[k:k + n]


def prepare(work: Path) -> None:
    """Model dir with the VGGish stand-in (and YAMNet from $ONAIR_MODEL_DIR), a heads dir with
    YAMNet's trained heads and a throwaway VGGish head, and reference frames for drift."""
    import numpy as np

    sys.path.insert(0, str(REPO / "tests"))
    from standin_vggish import build

    from operators.models.classify import fit_head
    from operators.models.embed import VGGishHub
    models = work / "models"
    models.mkdir(parents=True)
    (models / "yamnet").symlink_to(Path(os.environ["ONAIR_MODEL_DIR"]).resolve() / "yamnet")
    build(str(models / "vggish"))
    heads = work / "heads"
    shutil.copytree(REPO / "configs" / "heads" / "yamnet", heads / "yamnet")
    vggish = VGGishHub(str(models / "vggish"))
    xs, ys = [], []
    for name in PROGRAMMES:
        frames, states = programme_frames(name, 0.0, 200)
        xs.append(vggish.embed(frames).embeddings)
        ys += ["music" if s else "non_music" for s in states]
    # No VGGish weights here, hence no trained head: one fitted on stand-in embeddings keeps the
    # decisions (and so segments and debounce work) realistic; its cost equals any 128 x 2 head.
    head = fit_head(np.concatenate(xs), ys, ["non_music", "music"])
    head.meta["hmm"] = {"p_enter_music": 0.01, "p_leave_music": 0.01, "class_prior": [0.5, 0.5],
                        "emission_weight": 1.0}
    head.save(heads / "vggish" / "music.json")
    ref, _ = programme_frames("dev-tv", 300.0, 128)
    np.savez(work / "reference.npz", frames=ref, vggish_fp32=vggish.embed(ref).embeddings)
    from benchmarks.livefeed import ChunkedMedia
    with open(work / "chunks.pkl", "wb") as f:
        pickle.dump([ChunkedMedia.cut(p) for p in media_files()], f)


def prepared() -> Path:
    """The prepared assets, cached in .cache/throughput under a key of what they are made from."""
    import hashlib

    import tensorflow as tf
    h = hashlib.sha256(f"v1/{tf.__version__}".encode())
    h.update((REPO / "tests" / "standin_vggish.py").read_bytes())
    h.update((REPO / "configs" / "heads" / "yamnet" / "music.json").read_bytes())
    for p in media_files():
        h.update(f"{p.name}/{p.stat().st_size}/{p.stat().st_mtime_ns}".encode())
    work = REPO / ".cache" / "throughput" / h.hexdigest()[:16]
    if not (work / "ready").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="prepare-", dir=work.parent))
        prepare(tmp)
        (tmp / "ready").write_text("")
        tmp.rename(work)
    return work


def run_child(name: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work)] + (["--quick"] if args.quick else [])
    if args.window:
        cmd += ["--window", str(args.window)]
    if args.channels:
        cmd += ["--channels", str(args.channels)]
    cmd += ["--mode", args.mode]
    for item in args.set:
        cmd += ["--set", item]
    env = {**os.environ, "ONAIR_MODEL_DIR": str(work / "models")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or "").strip().splitlines()[-5:]
        return {"config": name, "error": f"exit {p.returncode}", "stderr_tail": tail}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short windows and a coarse search (under 10 minutes)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, of: " + ", ".join(CONFIGS))
    ap.add_argument("--window", type=float, default=0, help="measurement window in seconds (default 60, quick 12)")
    ap.add_argument("--kafka-channels", type=int, default=-1,
                    help="channels for the Kafka mode figure (default: a quarter of the best VGGish count; 0 = skip)")
    ap.add_argument("--channels", type=int, default=0, help="no search: one trial at this many channels")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every configuration and the Kafka line, e.g. embedding.threads=1")
    ap.add_argument("--mode", choices=("worker", "direct"), default="worker",
                    help="worker: chunks as ingest makes them, decoded by one thread for all channels "
                         "(the worker's path, without the broker); direct: `onair run` reading one named pipe "
                         "per channel with a thread per source")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    t_start = time.monotonic()
    start = machine()
    work = prepared()
    results = {}
    for name in names:
        results[name] = run_child(name, work, args)
        print(json.dumps(results[name]), flush=True)
    batched = [r for n, r in results.items() if n.startswith("vggish-") and not CONFIGS[n].get("naive")
               and r.get("channels_realtime")]
    naive = results.get("vggish-naive", {})
    best = max(batched, key=lambda r: r["channels_realtime"]) if batched else None
    if best and naive.get("channels_realtime"):
        per_core = lambda r: r["channels_realtime"] / (r["cpu_percent"] / 100)  # noqa: E731
        print(json.dumps({"what": "VGGish architecture: best batched configuration vs the naive design",
                          "best": best["config"], "channels_realtime": best["channels_realtime"],
                          "naive_channels_realtime": naive["channels_realtime"],
                          "ratio": round(best["channels_realtime"] / naive["channels_realtime"], 2),
                          # on a shared machine each configuration gets whatever CPU is free while it
                          # runs; channels per core actually used compares the designs, not the neighbours
                          "channels_per_core_used": round(per_core(best), 1),
                          "naive_channels_per_core_used": round(per_core(naive), 1),
                          "ratio_per_core_used": round(per_core(best) / per_core(naive), 2)}), flush=True)
    kafka_n = args.kafka_channels
    if kafka_n < 0:
        kafka_n = max(8, (best["channels_realtime"] if best else 32) // 4)
    if kafka_n:
        from benchmarks.kafka_throughput import kafka_figure
        cfg_name = best["config"] if best else "yamnet-fp32"
        fig = kafka_figure(work, CONFIGS[cfg_name], cfg_name, kafka_n, media_files(),
                           window_s=12.0 if args.quick else 60.0, warmup_s=8.0 if args.quick else 15.0,
                           extra_sets=tuple(args.set))
        ref = results.get(cfg_name, {})
        if ref.get("channels_realtime"):
            fig["in_process_cpu_ms_per_channel_s"] = round(10 * ref["cpu_percent"] / ref["channels_realtime"], 3)
        print(json.dumps(fig), flush=True)
    print(json.dumps({"what": "run", "quick": args.quick, "machine_at_start": start,
                      "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
                      "wall_s": round(time.monotonic() - t_start, 1)}), flush=True)


# ---------------------------------------------------------------- child: one configuration

class NaiveVGGish:
    """The design without cross-channel batching: the TF-Hub signature, one call per frame."""

    def __init__(self, hub):
        self.hub, self.name, self.dim, self.precision = hub, hub.name, hub.dim, "fp32"

    def embed(self, frames):
        import numpy as np

        from operators.models.embed import Embedded
        return Embedded(np.concatenate([self.hub.embed_signature(f) for f in frames]))


def child_config(spec: dict, work: Path, extra: list[str]) -> dict:
    from pipeline import config
    sets = [f"embedding.backend={spec['backend']}", f"embedding.precision={spec['precision']}",
            f"heads.dir={work / 'heads'}",
            # hundreds of pipes opened at once on a loaded machine: give PyAV's probe time
            "source.open_timeout_s=60", "source.read_timeout_s=60"]
    sets += extra
    if spec.get("naive"):
        sets += ["embedding.batch_size=1", "embedding.max_wait_ms=0"]
    return config.load(None, sets)


def model_rate(embedder, frames, batch: int) -> float:
    embedder.embed(frames[:batch])
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 2.0:
        for i in range(0, len(frames), batch):
            embedder.embed(frames[i:i + batch])
            n += len(frames[i:i + batch])
    return n / (time.perf_counter() - t0)


def decode_cost(media) -> float:
    """CPU seconds to decode one second of a channel from its chunks (one thread), for the first guess."""
    from operators.audio.decode import ChunkDecoder
    from pipeline.sources import select_audio
    dec = ChunkDecoder(lambda c: select_audio(c, "first"))
    t0 = time.process_time()
    got = sum(len(c.samples) for data in media.chunks[:15] for c in dec.decode(data))
    return (time.process_time() - t0) / (got / 16000)


def search(embedder, cfg: dict, media, first: int, quick: bool, window: float, mode: str,
           only: int = 0) -> tuple[dict | None, list]:
    from benchmarks.trial import run_trial
    from operators.models.vggish import available_cores
    max_trials, tol = (3, 0.15) if quick else (7, 0.05)
    if only:
        max_trials, first = 1, only
    warmup = 6.0 if quick else 15.0
    cores = available_cores()
    best, tried = None, []
    lo, hi = 0, None
    n = max(1, first)
    # a busy machine can fail the first guesses: then go on down (at most 4 more trials), so the
    # figure is the highest count that held, not 0
    while len(tried) < max_trials or (best is None and not only and len(tried) < max_trials + 4 and n > 1):
        r = run_trial(embedder, cfg, media, n, warmup, window, mode)
        tried.append({**r.summary(), "load_avg": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps({"trial": tried[-1]}), file=sys.stderr, flush=True)
        if r.realtime:
            lo, best = n, r
            # headroom left on the cores says how far up to look next, and at least one tolerance step
            guess = int(n * max(1 + tol, min(2.0, 0.92 * 100 * cores / max(r.cpu_percent, 1.0))))
        else:
            hi = n
            # while falling behind, the frames it still embeds per second are its capacity
            guess = int(0.92 * r.frames_per_s * 0.96)
        if hi is not None and lo and (hi - lo) <= max(1, tol * lo):
            break
        nxt = guess if (hi is None or not lo) else (lo + hi) // 2
        if hi is not None:
            nxt = min(nxt, hi - 1)
        nxt = max(nxt, lo + 1, 1)
        if best is None and len(tried) >= max_trials:
            nxt = min(nxt, max(1, n // 2))        # still nothing held: halve
        if nxt in [t["channels"] for t in tried]:
            break
        n = nxt
    return (best.summary() if best else None), tried


def child(args) -> None:
    import numpy as np

    from benchmarks.livefeed import Media
    from benchmarks.trial import rss_bytes
    from pipeline.models import load_embedder
    work = Path(args.work)
    spec = CONFIGS[args.child]
    cfg = child_config(spec, work, args.set)
    t0 = time.monotonic()
    embedder = load_embedder(cfg)
    load_s = time.monotonic() - t0
    if spec.get("naive"):
        embedder = NaiveVGGish(embedder)
    ref = np.load(work / "reference.npz")
    out = {"config": args.child, "mode": args.mode, "backend": spec["backend"], "precision": spec["precision"],
           "precision_effective": getattr(embedder, "precision", spec["precision"]),
           "design": "naive: one signature call per frame" if spec.get("naive") else "batched across channels",
           "model_load_s": round(load_s, 1)}
    if spec["backend"] == "vggish" and not spec.get("naive"):
        e = embedder.embed(ref["frames"]).embeddings
        r = ref["vggish_fp32"]
        cos = np.sum(e * r, 1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(r, axis=1))
        out.update(cosine_vs_fp32_min=round(float(cos.min()), 5), cosine_vs_fp32_mean=round(float(cos.mean()), 5))
    batch = cfg["embedding"]["batch_size"]
    fps = model_rate(embedder, ref["frames"][:64], batch)
    if getattr(embedder, "precision", "") == "int8":
        # every batch shape once: its first call plans the model (XNNPACK), a one-off start-up cost
        for b in range(1, batch + 1):
            embedder.embed(ref["frames"][:b])
    with open(work / "chunks.pkl", "rb") as f:
        chunked = pickle.load(f)
    media = chunked if args.mode == "worker" else [Media.scan(m.path) for m in chunked]
    base_rss = rss_bytes()
    per_channel_s = 1.04 / fps + decode_cost(chunked[0]) / max(1, os.cpu_count() or 1) + 0.0003
    first = int(0.8 / per_channel_s)
    window = args.window or (12.0 if args.quick else 60.0)
    out["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    best, tried = search(embedder, cfg, media, first, args.quick, window, args.mode, args.channels)
    out.update(model_only_frames_per_s=round(fps, 1), first_guess=first, search="quick" if args.quick else "full",
               window_s=window, trials=[[t["channels"], t["realtime"], t["load_avg"][0]] for t in tried])
    if best:
        out.update(channels_realtime=best["channels"], frames_per_s=round(best["frames_per_s"], 1),
                   audio_s_per_s=round(best["frames_per_s"] * 0.96, 1),
                   cpu_percent=round(best["cpu_percent"], 1),
                   rss_mb_per_channel=round((best["rss_mb"] - base_rss / 2**20) / best["channels"], 2),
                   rss_mb=round(best["rss_mb"], 1),
                   cpu_ms_per_channel_s=round(10 * best["cpu_percent"] / best["channels"], 3),
                   cpu_percent_by_thread=best["cpu_percent_by_thread"],
                   latency_p50_s=best["latency_p50_s"], latency_p95_s=best["latency_p95_s"],
                   lag_growth_s=best["lag_growth_s"], lag_p95_end_s=best["lag_p95_end_s"])
    else:
        out.update(channels_realtime=0, note=f"not real time even at {min(t['channels'] for t in tried)} channels")
    out["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
