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


def embed_by_channel(embedder, frames: list[np.ndarray], channels: list[str], metrics=None):
    """One model call for frames of many channels; returns the Embedded result and,
    per channel, the indices of its frames in arrival order."""
    t0 = time.perf_counter()
    result = embedder.embed(np.stack(frames))
    dt = time.perf_counter() - t0
    if metrics is not None:
        name = embedder.name
        metrics.frames_embedded.labels(name).inc(len(frames))
        metrics.embed_batch.labels(name).observe(len(frames))
        metrics.embed_latency.labels(name).observe(dt)
    groups: dict[str, list[int]] = {}
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
        self.on_frames = on_frames   # (channel, times, embeddings, newest times, frames, class scores)
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
            deadline = time.monotonic() + self.max_wait_s
            while sum(isinstance(i, FrameItem) for i in batch) < self.batch_size:
                try:
                    nxt = self.items.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is STOP:
                    stopping = True
                    break
                batch.append(nxt)
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
            self.on_frames(ch, [frames[i].time for i in idx], res.embeddings[idx],
                           [frames[i].newest_time for i in idx], [frames[i].frame for i in idx],
                           None if res.class_scores is None else res.class_scores[idx])
