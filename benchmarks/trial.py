"""One paced trial: N live channels for a warm-up and a measurement window,
with the measurements the throughput benchmark reports.

Worker mode: ingest-style chunks, handed over when on air, decoded as the Kafka
worker decodes them (one thread, a ChunkDecoder per channel) and fed to the
engine (pipeline.engine). Direct mode: named pipes fed at real-time pace, read by
`onair run`'s runtime (DirectRun, a thread per source, the same engine). Every
stage is the product's own; the only addition is the engine's observer, which
notes per channel how far the embedding has got and when each decision was made.

- lag (per channel, sampled every second): now minus the wall time at which
  the newest embedded audio was on air. A pipeline that keeps up holds it
  near one frame (0.96 s) plus the chunk length plus batching; one that does
  not lets it grow.
- latency (per decided frame): decision wall time minus the wall time the
  frame's last sample was on air: the 4-frame HMM lag by design, plus queueing.
"""
from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from operators.audio.constants import FRAME_S, HOP_S
from pipeline.direct import DirectRun
from pipeline.metrics import Metrics

from benchmarks.livefeed import ChunkFeed, LiveFeed, Media


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_by_thread_group() -> dict[str, float]:
    """CPU seconds so far per kind of thread: sources (decode), the embedding thread,
    the feeder, and threads Python does not know (the model's own pools, PyAV's)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "native")
        group = "sources" if name.startswith("input-") else "decode" if name.startswith("decode") else \
            name if name in ("embed", "livefeed") else \
            ("native (model pools)" if name == "native" else "other python")
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


class Progress:
    """What the instrumented detectors report, shared by all channels."""

    def __init__(self, feed: LiveFeed):
        self.feed = feed
        self.index = {ch.name: i for i, ch in enumerate(feed.channels)}
        self.embedded_until = np.full(len(feed.channels), np.nan)
        self.frames = 0
        self.latencies: list[float] = []
        self.record = False
        self.lock = threading.Lock()


class Observer:
    """The engine's observer: after a run's frames are decided, how far the channel's embedding has
    got, and the latency of the decisions those frames released (the HMM decides frame t when frame
    t + lag arrives)."""

    def __init__(self, progress: Progress, lag_frames: int):
        self.progress = progress
        self.lag_s = lag_frames * HOP_S

    def embedded(self, run, times) -> None:
        p = self.progress
        i = p.index[run.channel]
        p.embedded_until[i] = times[-1] + FRAME_S
        p.frames += len(times)
        if p.record:
            now = time.monotonic()
            for t in times:
                if t >= self.lag_s:
                    p.latencies.append(now - p.feed.on_air(i, t - self.lag_s + FRAME_S))


@dataclass
class TrialResult:
    channels: int
    window_s: float
    realtime: bool
    lag_slope: float                 # seconds of lag gained per second (>0: falling behind)
    lag_growth_s: float              # mean lag, last third of the window minus first third
    lag_end_s: float                 # mean lag at the end of the window
    lag_p95_end_s: float             # worst 95th percentile over channels, second half of the window
    frames_per_s: float
    cpu_percent: float               # of one core (200 = both cores of a 2-core machine)
    rss_mb: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    channels_started: int
    failed_inputs: int
    cpu_percent_by_thread: dict = field(default_factory=dict)
    lags: list = field(default_factory=list)

    def summary(self) -> dict:
        d = dict(self.__dict__)
        d.pop("lags")
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


def _specs(media: list, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed + n)
    out = []
    for i in range(n):
        m = media[i % len(media)]
        span = m.duration if isinstance(m, Media) else float(m.ends[-1])
        out.append((f"ch{i:04d}", m, float(rng.uniform(0, span))))
    return out


class _Worker:
    """Worker mode: chunks (as ingest makes them) at real-time pace, decoded on one thread as the
    Kafka worker decodes them, into the engine with JSONL outputs."""

    def __init__(self, embedder, cfg, specs, tmp: Path, stagger_s: float):
        import queue

        from pipeline.engine import Engine
        from pipeline.outputs import DailyJsonlOutputs
        from pipeline.params import DecodeParams
        self.feed = ChunkFeed(specs, self._submit, stagger_s=stagger_s)
        self.progress = Progress(self.feed)
        self.outputs = DailyJsonlOutputs(tmp, ("segments", "requests", "genres"))
        self.engine = Engine.from_config(cfg, embedder, self.outputs, Metrics(),
                                         Observer(self.progress, cfg["hmm"]["lag_frames"]))
        self.decode = DecodeParams.from_config(cfg)
        self.inbox: queue.Queue = queue.Queue()     # never blocks the feeder: a growing inbox is falling behind
        self.thread = threading.Thread(target=self._decode, name="decode", daemon=True)
        self.failed = 0

    def _submit(self, channel, data):
        self.inbox.put((channel, data))

    def _decode(self) -> None:
        from operators.audio.decode import ChunkDecoder, ChunkError
        from pipeline.sources import select_audio
        runs = {}
        while True:
            item = self.inbox.get()
            if item is None:
                return
            channel, data = item
            if channel not in runs:
                runs[channel] = (self.engine.open(channel), ChunkDecoder(
                    lambda c: select_audio(c, self.decode.audio_track), self.decode.max_gap_s))
            run, dec = runs[channel]
            try:
                chunks = dec.finish() if data is None else dec.decode(data)
            except ChunkError:
                self.failed += 1
                continue
            for c in chunks:
                self.engine.feed(run, c)
            if data is None:
                self.engine.end(run, dec.normalizer.time)

    def start(self, t0):
        self.engine.start()
        self.thread.start()
        self.feed.start_clock(t0)

    def stop(self):
        self.feed.close()
        for ch in self.feed.channels:
            self.inbox.put((ch.name, None))
        self.inbox.put(None)
        self.thread.join()
        try:
            self.engine.close()
        except Exception:
            self.failed += 1
        self.outputs.close()


class _Direct:
    """Direct mode: `onair run`'s runtime (a thread per source) reading named pipes fed at pace."""

    def __init__(self, embedder, cfg, specs, tmp: Path, stagger_s: float):
        self.feed = LiveFeed(specs, tmp / "pipes", stagger_s=stagger_s)
        self.progress = Progress(self.feed)
        self.run = DirectRun([(name, str(self.feed.paths[name])) for name, _, _ in specs], tmp / "out", cfg,
                             metrics=Metrics(), embedder=embedder,
                             observer=Observer(self.progress, cfg["hmm"]["lag_frames"]))
        self.results: dict = {}
        self.thread = threading.Thread(target=lambda: self.results.update(self.run.run()), name="directrun",
                                       daemon=True)
        self.failed = 0

    def start(self, t0):
        self.thread.start()
        self.feed.start_clock(t0)

    def stop(self):
        self.run.stop.set()
        self.feed.close()
        self.thread.join(timeout=60)
        self.feed.cleanup()
        self.failed = sum(1 for r in self.results.values() if not r.ok)


def run_trial(embedder, cfg: dict, media: list, n: int, warmup_s: float, window_s: float, mode: str = "worker",
              max_slope: float = 0.01, max_lag_s: float | None = None, seed: int = 0) -> TrialResult:
    """`media`: ChunkedMedia for mode "worker", Media for mode "direct"."""
    specs = _specs(media, n, seed)
    if max_lag_s is None:
        # a chunk's audio waits in the chunk until it is complete (ingest's chunk_s), then a frame
        max_lag_s = (cfg["kafka"]["chunk_s"] if mode == "worker" else 0.0) + 4.0
    with tempfile.TemporaryDirectory(prefix="onair-tp-") as tmp:
        run = (_Worker if mode == "worker" else _Direct)(embedder, cfg, specs, Path(tmp), min(4.0, warmup_s / 3))
        progress, feed = run.progress, run.feed
        try:
            t0 = time.monotonic()
            run.start(t0)
            starts = np.array([c.start_wall for c in feed.channels])

            def lag_now():
                now = time.monotonic()
                started = ~np.isnan(progress.embedded_until)
                lag = now - (starts[started] + progress.embedded_until[started])
                return now, lag, int(started.sum())

            # Warm-up: every channel opened and the start-up burst (first chunks of all channels at
            # once, first model calls of each batch shape) worked off. A count that cannot even drain
            # it in 3 warm-ups is not real time: measure a short window for the next guess and stop.
            time.sleep(warmup_s)
            while time.monotonic() - t0 < 3 * warmup_s:
                _, lag, started = lag_now()
                if started == n and len(lag) and np.percentile(lag, 95) <= 0.75 * max_lag_s:
                    break
                time.sleep(1.0)
            else:
                window_s = min(window_s, 6.0)
            progress.record = True
            cpu0, w0, f0 = cpu_seconds(), time.monotonic(), progress.frames
            groups0 = cpu_by_thread_group()
            rss_peak = rss_bytes()
            samples = []
            while time.monotonic() - w0 < window_s:
                time.sleep(1.0)
                now, lag, started = lag_now()
                if len(lag):
                    samples.append((now - w0, float(lag.mean()), float(np.percentile(lag, 95)), started))
                rss_peak = max(rss_peak, rss_bytes())
            wall = time.monotonic() - w0
            cpu = cpu_seconds() - cpu0
            groups1 = cpu_by_thread_group()
            by_group = {k: round(100 * (v - groups0.get(k, 0.0)) / wall, 1) for k, v in groups1.items()}
            frames = progress.frames - f0
            progress.record = False
        finally:
            run.stop()
    lat = np.array(progress.latencies) if progress.latencies else None
    if len(samples) >= 3:
        t, mean_lag = np.array([s[0] for s in samples]), np.array([s[1] for s in samples])
        slope = float(np.polyfit(t, mean_lag, 1)[0])
        third = max(1, len(samples) // 3)
        growth = float(mean_lag[-third:].mean() - mean_lag[:third].mean())
        end_mean, started = samples[-1][1], samples[-1][3]
        end_p95 = max(s[2] for s in samples[len(samples) // 2:])
    else:
        slope = growth = end_mean = end_p95 = float("inf")
        started = 0
    # Growing backlog: the mean lag of the last third of the window above that of the first third
    # by more than half a second plus 1 % of the window (a 20 s window resolves ~3 % overload,
    # 60 s ~2 %); and no channel group far behind at the end (95th percentile of the lag).
    ok = growth <= 0.5 + max_slope * wall and end_p95 <= max_lag_s and started == n and run.failed == 0
    return TrialResult(n, wall, ok, slope, growth, end_mean, end_p95, frames / wall, 100.0 * cpu / wall,
                       rss_peak / 2**20, None if lat is None else float(np.percentile(lat, 50)),
                       None if lat is None else float(np.percentile(lat, 95)), started, run.failed, by_group, samples)
