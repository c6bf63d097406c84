"""Embeds frames from all channels together: one model call per batch of up
to `batch_size` frames, waiting at most `max_wait_s` for a batch to fill.

Items are consumed in queue order, so each channel's frames reach its
detector in order and a channel's end marker only after all its frames.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("onair.batcher")


@dataclass
class FrameItem:
    channel: str
    time: float
    frame: np.ndarray
    newest_time: float


@dataclass
class EndItem:
    channel: str
    end_time: float


STOP = object()


def embed_by_channel(embedder, frames: list[np.ndarray], channels: list, metrics=None):
    """One model call for frames of many channels; returns the Embedded result and,
    per channel, the indices of its frames in arrival order. `channels` are the frames'
    grouping keys: channel names, or whatever tells one run of a channel from another."""
    t0 = time.perf_counter()
    result = embedder.embed(np.stack(frames))
    dt = time.perf_counter() - t0
    if metrics is not None:
        name = embedder.name
        metrics.frames_embedded.labels(name).inc(len(frames))
        metrics.embed_batch.labels(name).observe(len(frames))
        metrics.embed_latency.labels(name).observe(dt)
    groups: dict = {}
    for i, ch in enumerate(channels):
        groups.setdefault(ch, []).append(i)
    return result, groups, dt


class EmbedBatcher(threading.Thread):
    def __init__(self, embedder, items: queue.Queue, batch_size: int, max_wait_s: float, on_frames, on_end,
                 metrics=None):
        super().__init__(name="embed", daemon=True)
        self.embedder = embedder
        self.items = items
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.on_frames = on_frames   # (channel, times, embeddings, newest times, frames, class scores, features)
        self.on_end = on_end         # (channel, end_time)
        self.metrics = metrics
        self.error: BaseException | None = None
        self.frames_done = 0
        self.embed_seconds = 0.0

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # surfaced by the runner, which stops the sources
            log.exception("embedding failed: %s", e)
            self.error = e

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self.items.get()
            if item is STOP:
                break
            batch = [item]
            n = isinstance(item, FrameItem)
            deadline = time.monotonic() + self.max_wait_s
            while n < self.batch_size:
                try:
                    nxt = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is STOP:
                    stopping = True
                    break
                batch.append(nxt)
                n += isinstance(nxt, FrameItem)
            self._process(batch)

    def _process(self, batch: list) -> None:
        frames: list[FrameItem] = []
        for item in batch:
            if isinstance(item, FrameItem):
                frames.append(item)
            else:
                self._embed(frames)
                frames = []
                self.on_end(item.channel, item.end_time)
        self._embed(frames)

    def _embed(self, frames: list[FrameItem]) -> None:
        if not frames:
            return
        res, groups, dt = embed_by_channel(self.embedder, [f.frame for f in frames], [f.channel for f in frames],
                                           self.metrics)
        self.embed_seconds += dt
        self.frames_done += len(frames)
        for ch, idx in groups.items():
            part = res.take(idx)
            self.on_frames(ch, [frames[i].time for i in idx], part.embeddings,
                           [frames[i].newest_time for i in idx], [frames[i].frame for i in idx],
                           part.class_scores, part.features)


class ChunkPipeline:
    """Media chunks of many channels -> decisions.

    Chunks are self-contained MPEG-TS (what `onair ingest` puts on Kafka). Decode
    threads (`runtime.decode_threads`, default 1) each own a share of the
    channels: a persistent ChunkDecoder per channel (bit-exact with decoding the
    whole stream) and the channel's ring cut frames, which the EmbedBatcher
    embeds across channels and hands to each channel's detector. Decoding
    overlaps inference (PyAV and the model release the GIL). One thread rather
    than one per channel: with hundreds of channels, per-channel threads spend
    most of their CPU handing the GIL to each other (PyAV releases it around every
    packet; perf put most of their time in the kernel's context switching). On a
    2-core machine a second decode thread was slower than one, for the same reason.

    `submit` never blocks: a caller that delivers faster than the pipeline works
    sees the inboxes grow (`backlog`), which is how falling behind shows.
    """

    def __init__(self, embedder, cfg: dict, make_detector, metrics=None):
        from operators.audio.decode import ChunkDecoder
        from pipeline.sources import select_audio

        self.cfg = cfg
        self.make_detector = make_detector      # channel -> ChannelDetector
        self.metrics = metrics
        self.detectors: dict = {}               # run key -> detector (kept after the run ends)
        self.decoders: dict = {}
        self._keys: dict = {}                   # channel -> run key of its open run
        self._runs: dict = {}
        self._shard: dict = {}                  # channel -> its decode thread
        self.chunk_errors = 0
        self._new_decoder = lambda: ChunkDecoder(lambda c: select_audio(c, cfg["source"]["audio_track"]),
                                                 cfg["source"]["max_gap_s"])
        n = cfg["runtime"].get("decode_threads", 1)
        self.inboxes: list[queue.Queue] = [queue.Queue() for _ in range(n)]
        self.items: queue.Queue = queue.Queue(maxsize=cfg["runtime"]["queue_frames"])
        emb = cfg["embedding"]
        self.batcher = EmbedBatcher(embedder, self.items, emb["batch_size"], emb["max_wait_ms"] / 1000.0,
                                    on_frames=lambda ch, *a: self.detectors[ch].on_embedded(*a),
                                    on_end=lambda ch, end: self.detectors[ch].finish(end), metrics=metrics)
        self._threads = [threading.Thread(target=self._run, args=(q,), name=f"decode-{i}", daemon=True)
                         for i, q in enumerate(self.inboxes)]
        self.error: BaseException | None = None

    @property
    def backlog(self) -> int:
        return sum(q.qsize() for q in self.inboxes)

    def start(self) -> "ChunkPipeline":
        self.batcher.start()
        for t in self._threads:
            t.start()
        return self

    def submit(self, channel: str, data: bytes | None) -> None:
        """A media chunk of `channel`, or None: its source ended (close its last segment)."""
        shard = self._shard.get(channel)
        if shard is None:   # round robin on first sight: shares stay even whatever the names
            shard = self._shard[channel] = len(self._shard) % len(self.inboxes)
        self.inboxes[shard].put((channel, data))

    def close(self) -> None:
        """Process what was submitted, finish, and stop all threads."""
        for q in self.inboxes:
            q.put(STOP)
        for t in self._threads:
            t.join()
        self._put(STOP)
        self.batcher.join()
        if self.error is None:
            self.error = self.batcher.error

    def _run(self, inbox: queue.Queue) -> None:
        from operators.audio.decode import ChunkError
        try:
            while True:
                item = inbox.get()
                if item is STOP:
                    return
                channel, data = item
                key = self._keys.get(channel)
                if key is None:
                    # a new run of the channel (first, or after its end): a key of its own, so frames
                    # of the old run still queued reach the old detector
                    self._runs[channel] = run = self._runs.get(channel, -1) + 1
                    key = self._keys[channel] = channel if run == 0 else f"{channel}#{run}"
                    self.detectors[key] = self.make_detector(channel)
                    self.decoders[key] = self._new_decoder()
                det, dec = self.detectors[key], self.decoders[key]
                try:
                    chunks = dec.finish() if data is None else dec.decode(data)
                except ChunkError as e:
                    self.chunk_errors += 1
                    log.warning("channel %s: media chunk skipped: %s", channel, e)
                    continue
                for chunk in chunks:
                    for t, frame in det.frames_for(chunk):
                        self._put(FrameItem(key, t, frame, det.newest_time))
                if data is None:
                    self._put(EndItem(key, max(det.newest_time, dec.normalizer.time)))
                    del self._keys[channel], self.decoders[key]
        except BaseException as e:  # surfaced by close()
            log.exception("decoding failed: %s", e)
            self.error = e

    def _put(self, item) -> None:
        # bounded: while the model is behind, decoding waits instead of filling memory with frames
        while True:
            try:
                self.items.put(item, timeout=0.5)
                return
            except queue.Full:
                if self.batcher.error is not None or not self.batcher.is_alive():
                    return
