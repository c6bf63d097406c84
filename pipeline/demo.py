"""`onair demo`: encode the shared dev programmes as broadcast MPEG-TS (H.264 + one stereo
audio track at 48 kHz), run them all as concurrent channels through direct mode, and score
them with ../shared/tools/score.py.

Encoding is what made the demo slow on a fresh machine (6 silent minutes with 25 fps 160x96
video), and only the audio matters to onair: the video track just has to be there, as on a
broadcast. So the streams carry 2 fps 64x48 H.264 (ultrafast, one thread), the audio exactly
as `broadcast_sim.py encode` makes it (the programme's mono at 48 kHz, on both channels of a
stereo AAC / MP2 / AC-3 track), encoded while the programme is decoded (once for all its codecs,
no 20-minute array in memory), one process per programme, in parallel, with a progress line.
Results are cached in .cache/streams, keyed by the programme's content, the codec and
ENCODER_VERSION. FFmpeg's AAC encoder is most of the cost; its faster coder (aac_coder=fast,
half the time) is not used: it moved dev-radio's AAC music F1 from 0.9976 to 0.9952.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline import native_stderr
from pipeline.progress import Progress, for_files

log = logging.getLogger("onair.demo")
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "streams"

# Bump when the bytes encode() writes change, so cached streams are made again.
ENCODER_VERSION = 2
RATE = 48000
FRAME_SAMPLES = {"aac": 1024, "mp2": 1152, "ac3": 1536}   # samples per audio frame of each codec
VIDEO_FPS, VIDEO_W, VIDEO_H = 2, 64, 48
ENCODE_COST = {"aac": 3.0, "ac3": 1.5, "mp2": 1.0}   # relative CPU per programme second, to start long jobs first


@dataclass(frozen=True)
class Stream:
    """One demo channel: a programme encoded with one broadcast audio codec."""
    channel: str
    source: Path      # the programme (any audio file PyAV reads)
    codec: str
    path: Path        # the MPEG-TS file, in the cache
    duration_s: float


def _shared(arg: str | None) -> Path:
    for cand in ([Path(arg)] if arg else []) + [REPO.parent / "shared", REPO / "shared"]:
        if (cand / "data" / "streams").is_dir():
            return cand.resolve()
    raise ValueError("shared data not found: pass --shared DIR (a folder with data/streams and tools/)")


def cache_key(source: Path, codec: str, version: int = ENCODER_VERSION) -> str:
    h = hashlib.sha256(source.read_bytes())
    h.update(f"|{codec}|{version}".encode())
    return h.hexdigest()[:16]


def stream_for(source: Path, codec: str, cache: Path = CACHE) -> Stream:
    if codec not in FRAME_SAMPLES:
        raise ValueError(f"--codecs: unknown codec {codec!r}, expected some of {', '.join(FRAME_SAMPLES)}")
    with av.open(str(source)) as c:
        duration = float(c.duration / av.time_base) if c.duration else 0.0
    channel = f"{source.stem}-{codec}"
    return Stream(channel, source, codec, cache / f"{channel}-{cache_key(source, codec)}.ts", duration)


class TsWriter:
    """One broadcast MPEG-TS file being written: tiny H.264 video and one stereo audio track.
    `write()` takes the programme's mono samples at RATE, any number at a time."""

    def __init__(self, dest: Path, codec: str, position=None):
        self.dest, self.codec, self.position = dest, codec, position
        self.n = FRAME_SAMPLES[codec]
        self.fmt = "s16" if codec == "mp2" else "fltp"
        self.tmp = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.out = av.open(str(self.tmp), "w", format="mpegts")
        self.v = self.out.add_stream("libx264", rate=VIDEO_FPS)
        self.v.width, self.v.height, self.v.pix_fmt = VIDEO_W, VIDEO_H, "yuv420p"
        self.v.options = {"preset": "ultrafast", "crf": "40", "threads": "1"}
        self.a = self.out.add_stream(codec, rate=RATE)
        self.a.layout = "stereo"
        self.a.bit_rate = 192000 if codec == "ac3" else 128000
        self.img = av.VideoFrame.from_ndarray(np.full((VIDEO_H, VIDEO_W, 3), 90, np.uint8), format="rgb24")
        self.pending = np.zeros(0, np.float32)
        self.done = self.video_frames = 0

    def write(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, samples])
        k = 0
        while len(self.pending) - k >= self.n:   # whole codec frames only; a last partial one is dropped
            self._frame(self.pending[k:k + self.n])
            k += self.n
        self.pending = self.pending[k:]
        if self.position is not None:
            self.position.value = self.done / RATE

    def _frame(self, block: np.ndarray) -> None:
        while self.video_frames / VIDEO_FPS <= self.done / RATE:
            self.img.pts = self.video_frames
            for p in self.v.encode(self.img):
                self.out.mux(p)
            self.video_frames += 1
        st = np.stack([block, block])
        if self.fmt == "s16":
            st = (np.clip(st, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(st, format=self.fmt, layout="stereo")
        fr.sample_rate, fr.pts = RATE, self.done
        for p in self.a.encode(fr):
            self.out.mux(p)
        self.done += self.n

    def close(self) -> Path:
        for s in (self.v, self.a):
            for p in s.encode():
                self.out.mux(p)
        self.out.close()
        self.tmp.rename(self.dest)
        return self.dest


def encode(source: Path, outputs: list[tuple[str, Path]], positions: list | None = None) -> list[Path]:
    """`source` as broadcast MPEG-TS, one file per (codec, dest), decoded once. Each file is
    written to a .part file, then renamed. `positions`, shared doubles, one per output, follow
    the seconds of programme encoded."""
    writers = [TsWriter(dest, codec, positions[i] if positions else None) for i, (codec, dest) in enumerate(outputs)]
    with av.open(str(source)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=RATE)   # what broadcast_sim.load gives
        for frame in _then_none(c.decode(audio=0)):
            parts = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
            if parts:
                samples = np.concatenate(parts)
                for w in writers:
                    w.write(samples)
    return [w.close() for w in writers]


def _then_none(frames):
    yield from frames
    yield None   # flushes the resampler


def _encode_job(source: str, outputs: list[tuple[str, str]], positions: list) -> None:
    encode(Path(source), [(codec, Path(dest)) for codec, dest in outputs], positions)


def encoded(pairs: list[tuple[Path, str]]) -> list[Path]:
    """(programme, codec) pairs as the demo's cached MPEG-TS files, encoded where missing; for the
    benchmarks, which run on the same streams."""
    streams = [stream_for(src, codec) for src, codec in pairs]
    encode_all(streams)
    return [s.path for s in streams]


def encode_all(streams: list[Stream], progress_stream=None, workers: int | None = None) -> None:
    """Encode the streams not yet cached with a progress line per stream: one process per
    programme (decoded once for all its codecs), at most `workers` (default: the cores this
    process may use) at a time, longest first."""
    todo = [s for s in streams if not s.path.exists()]
    if not todo:
        return
    for s in todo:
        for stale in s.path.parent.glob(f"{s.channel}-*.ts"):   # another key: older encoder or programme
            stale.unlink()
    jobs: dict[Path, list[Stream]] = {}
    for s in todo:
        jobs.setdefault(s.source, []).append(s)
    order = sorted(jobs, key=lambda src: -sum(ENCODE_COST[s.codec] * s.duration_s for s in jobs[src]))
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    log.info("encoding %d stream(s) as broadcast MPEG-TS into %s (%d process(es) at a time); cached for the "
             "next run", len(todo), todo[0].path.parent, min(workers, len(jobs)))
    ctx = multiprocessing.get_context("spawn")   # no fork of a process that has TensorFlow's threads
    positions = {s.channel: ctx.Value("d", 0.0, lock=False) for s in todo}
    waiting, running, failed = list(order), {}, []
    progress = Progress([s.channel for s in todo], progress_stream, every_s=1.0,
                        totals={s.channel: s.duration_s for s in todo}, label="real time (encoding)").start()
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                src = waiting.pop(0)
                group = jobs[src]
                p = ctx.Process(target=_encode_job, name=f"encode-{src.stem}",
                                args=(str(src), [(s.codec, str(s.path)) for s in group],
                                      [positions[s.channel] for s in group]))
                p.start()
                running[src] = p
            time.sleep(0.25)
            for src, p in list(running.items()):
                for s in jobs[src]:
                    progress.note(s.channel, positions[s.channel].value)
                if not p.is_alive():
                    p.join()
                    del running[src]
                    if p.exitcode != 0:
                        failed += [s.channel for s in jobs[src]]
    finally:
        for p in running.values():
            p.terminate()
        progress.close()
    if failed:
        raise RuntimeError(f"encoding failed for {', '.join(failed)} (its error is above)")


def score(shared: Path, labels: Path, segments: Path, channel: str) -> dict:
    out = subprocess.run([sys.executable, str(shared / "tools" / "score.py"), "detect", "--labels", str(labels),
                          "--segments", str(segments), "--channel", channel],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_demo(args, cfg) -> int:
    from pipeline.clock import iso
    from pipeline.direct import DirectRun
    shared = _shared(args.shared)
    os.environ.setdefault("ONAIR_MODEL_DIR", str(shared / "models"))
    out = Path(args.out)
    streams, truth = [], {}
    for opus in sorted((shared / "data" / "streams").glob("*.opus")):
        for codec in args.codecs.split(","):
            s = stream_for(opus, codec.strip())
            streams.append(s)
            truth[s.channel] = opus.with_name(opus.stem + ".labels.csv")
    encode_all(streams)
    inputs = [(s.channel, str(s.path)) for s in streams]
    with native_stderr.filtered():   # TFLite's XNNPACK line, printed when the model loads
        run = DirectRun(inputs, out, cfg, progress=for_files(inputs, cfg["source"]["live"]))
    results = run.run()
    f1s = []
    # outputs are appended: score only this run's segments (an earlier demo's are older in UTC)
    this_run = out / ".demo-segments.jsonl"
    this_run.write_text("".join(line for line in _segment_lines(out)
                                if json.loads(line).get("start_utc", "") >= iso(run.run_start)))
    print(f"{'channel':24} {'f1':>6} {'precision':>9} {'recall':>6}  scored_s")
    for ch, _ in inputs:
        if not results[ch].ok:
            print(f"{ch:24} FAILED ({results[ch].reason})")
            continue
        s = score(shared, truth[ch], this_run, ch)
        f1s.append(s["f1"])
        print(f"{ch:24} {s['f1']:6.4f} {s['precision']:9.4f} {s['recall']:6.4f}  {s['scored_s']}")
    audio_s = sum(r.audio_s for r in results.values())
    print(f"mean music F1 {sum(f1s) / max(len(f1s), 1):.4f} over {len(f1s)} channels; "
          f"{audio_s / 60:.0f} min of audio in {run.summary['wall_s']} s "
          f"({audio_s / max(run.summary['wall_s'], 1e-9):.0f}x real time)")
    this_run.unlink()
    print(f"outputs: {out.resolve()}/segments.jsonl (and requests.jsonl, genres.jsonl), "
          f"links to the newest day's files")
    return 0 if f1s else 1


def _segment_lines(out: Path) -> list[str]:
    from pipeline.outputs import day_dirs
    return [line + "\n" for day in day_dirs(out) if (out / day / "segments.jsonl").exists()
            for line in (out / day / "segments.jsonl").read_text().splitlines() if line.strip()]
