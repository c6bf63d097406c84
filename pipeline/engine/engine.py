"""The engine: decoded audio of many channels in, records out.

Callers open a run of a channel (`open`), `feed` it decoded chunks and `end` it.
Feeding cuts the run's frames from its ring buffer at once, in the caller's thread,
and queues them; one embedding thread takes frames of all channels from the queue,
embeds up to `batch_size` of them per model call (waiting at most `max_wait_s` for a
batch to fill) and hands each run's frames, in order, to its ChannelDetector, whose
records go to the outputs. The queue is bounded (`queue_frames`), so a caller that
feeds faster than the model works waits instead of filling memory.

Queue order is the contract: a run's frames reach its detector in the order fed and
its end after all of them, and a `barrier()` returns once everything fed before it
has been decided and written. The Kafka worker saves channel states only after a
barrier, so a state never runs ahead of the records it covers.

Direct mode (pipeline.direct), the Kafka worker (pipeline.kafka.worker) and the
throughput benchmark drive this class; nothing else frames, embeds or decides.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from operators.audio.decode import Chunk
from pipeline.engine.channel import ChannelDetector
from pipeline.heads import Heads, hmm_params, load_heads
from pipeline.metrics import Metrics
from pipeline.outputs import Outputs
from pipeline.params import EngineParams

log = logging.getLogger("onair.engine")


@dataclass
class _Frame:
    run: ChannelDetector
    time: float
    frame: np.ndarray
    newest_time: float


@dataclass
class _End:
    run: ChannelDetector
    end_time: float


class _Barrier:
    def __init__(self):
        self.done = threading.Event()


_STOP = object()


class EngineError(RuntimeError):
    """The embedding thread failed; the engine takes no more input."""


class Engine:
    def __init__(self, embedder, heads: Heads, params: EngineParams, outputs: Outputs, metrics: Metrics,
                 observer=None):
        self.embedder = embedder
        # observer.embedded(run, times): after a run's frames were decided (the throughput benchmark
        # times decisions with it); None in the product
        self.observer = observer
        self.heads = heads
        self.params = params
        self.outputs = outputs
        self.metrics = metrics
        self.error: BaseException | None = None
        self.index = None              # the fingerprint index channels check their audio against (set by callers)
        self.frames_done = 0
        self.embed_seconds = 0.0
        self._items: queue.Queue = queue.Queue(maxsize=params.queue_frames)
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._frames_counter = metrics.frames_embedded.labels(embedder.name)
        self._batch_hist = metrics.embed_batch.labels(embedder.name)
        self._latency_hist = metrics.embed_latency.labels(embedder.name)

    @classmethod
    def from_config(cls, cfg: dict, embedder, outputs: Outputs, metrics: Metrics, observer=None) -> "Engine":
        """The engine of a process: its heads loaded and checked against `embedder` once, and the
        parameters built from the validated config."""
        heads = load_heads(cfg, embedder, metrics)
        return cls(embedder, heads, EngineParams.from_config(cfg, hmm_params(heads.music, cfg)), outputs, metrics,
                   observer)

    # -- what drivers call
    def start(self) -> "Engine":
        self._thread.start()
        return self

    def open(self, channel: str, clock=None) -> ChannelDetector:
        """A new run of `channel`: a fresh timeline, its own framing and decisions, and its clock
        (pipeline.clock.StreamClock; by default the wall clock at this call is stream time 0)."""
        return ChannelDetector(channel, self.heads, self.params.channel, self.metrics, clock, self.index)

    def feed(self, run: ChannelDetector, chunk: Chunk) -> None:
        """Cut the chunk's frames and queue them (blocks while the queue is full)."""
        for t, frame in run.frames_for(chunk):
            self._put(_Frame(run, t, frame, run.newest_time))

    def end(self, run: ChannelDetector, end_time: float | None = None) -> None:
        """The run's audio is over: after its last frames, close its segment and genre record."""
        self._put(_End(run, run.newest_time if end_time is None else max(end_time, run.newest_time)))

    def barrier(self) -> None:
        """Return once everything fed so far is decided and written to the outputs (flushing them,
        where that means more than writing, is the driver's checkpoint)."""
        b = _Barrier()
        self._put(b)
        while not b.done.wait(0.5):
            self._check()
        self._check()

    def close(self) -> None:
        """Decide what was fed, then stop the embedding thread (raises what it raised)."""
        if self._thread.is_alive():
            self._put(_STOP)
            self._thread.join()
        self._check()

    # -- the embedding thread
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # surfaced to the drivers, which stop their sources
            log.exception("embedding failed: %s", e)
            self.error = e
            self._release()

    def _loop(self) -> None:
        p = self.params
        while True:
            item = self._items.get()
            if item is _STOP:
                return
            batch = [item]
            n = isinstance(item, _Frame)
            deadline = time.monotonic() + p.max_wait_s
            stop = False
            while n < p.batch_size and not isinstance(batch[-1], _Barrier):
                try:
                    nxt = self._items.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
                n += isinstance(nxt, _Frame)
            self._process(batch)
            if stop:
                return

    def _process(self, batch: list) -> None:
        frames: list[_Frame] = []
        for item in batch:
            if isinstance(item, _Frame):
                frames.append(item)
                continue
            self._embed(frames)
            frames = []
            if isinstance(item, _End):
                self._write(item.run.finish(item.end_time))
            else:
                item.done.set()
        self._embed(frames)

    def _embed(self, frames: list[_Frame]) -> None:
        if not frames:
            return
        t0 = time.perf_counter()
        result = self.embedder.embed(np.stack([f.frame for f in frames]))
        dt = time.perf_counter() - t0
        self._frames_counter.inc(len(frames))
        self._batch_hist.observe(len(frames))
        self._latency_hist.observe(dt)
        self.embed_seconds += dt
        self.frames_done += len(frames)
        # grouped by run, not by channel name: two runs of a channel may share a batch
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(id(f.run), []).append(i)
        for idx in groups.values():
            part = result.take(idx)
            run = frames[idx[0]].run
            times = [frames[i].time for i in idx]
            self._write(run.on_embedded(times, part.embeddings, [frames[i].newest_time for i in idx],
                                        [frames[i].frame for i in idx], part.class_scores, part.features))
            if self.observer is not None:
                self.observer.embedded(run, times)

    def _write(self, records) -> None:
        for kind, rec in records:
            self.outputs.write(kind, rec)

    # -- queue plumbing
    def _put(self, item) -> None:
        while True:
            self._check()
            try:
                self._items.put(item, timeout=0.5)
                return
            except queue.Full:
                pass

    def _check(self) -> None:
        if self.error is not None:
            raise EngineError(f"embedding failed: {self.error}") from self.error

    def _release(self) -> None:
        """After a failure: wake barrier waiters and drain the queue so no feeder blocks forever."""
        while True:
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Barrier):
                item.done.set()
