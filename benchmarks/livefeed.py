"""Live channels made from files, for the throughput benchmark.

- LiveFeed: each channel is a named pipe that one feeder thread fills with a
  broadcast MPEG-TS file at real-time pace, from its own offset, looping, so
  `onair run` reads it as it reads a live network stream. Bytes are released at
  audio packet boundaries (TS packets stay 188-byte aligned, a released audio
  PES is complete), so a channel's audio up to stream time `s` is in its pipe
  at `start + s` (to within a feeder tick). A reader that falls behind stops
  reading; the pipe fills and the bytes wait in the feeder: lag, not loss.
- ChunkFeed: the same files cut into the chunks `onair ingest` makes
  (ChunkedMedia), each handed to a callback when its last sample is on air.
"""
from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Media:
    path: Path
    data: bytes
    cuts: np.ndarray      # byte offsets where an audio PES starts
    times: np.ndarray     # its media time in seconds, 0 at the first one
    duration: float       # media time of one whole loop

    @classmethod
    def scan(cls, path: Path) -> "Media":
        import av
        cuts, times = [], []
        with av.open(str(path)) as c:
            audio = c.streams.audio[0]
            last_dur = 0.0
            for p in c.demux(audio):
                if p.pts is None or p.pos is None or p.pos < 0:
                    continue
                cuts.append(p.pos)
                times.append(float(p.pts * p.time_base))
                last_dur = float((p.duration or 0) * p.time_base)
        t = np.asarray(times) - times[0]
        # the loop restarts at the first audio packet, so nothing before it is sent twice
        return cls(Path(path), Path(path).read_bytes(), np.asarray(cuts, np.int64), t, float(t[-1] + last_dur))


@dataclass
class _Channel:
    name: str
    media: Media
    fd: int
    start_wall: float     # wall time at which media time `offset` is on air
    offset: float         # where in the media this channel starts
    pos: int              # next byte to write
    target: int = 0       # bytes due so far (within the current loop)
    loops: int = 0
    written: int = 0


class _PacedFeed(threading.Thread):
    """A thread that, every `tick_s`, releases each channel's media that is due on
    air; channel i of n starts `stagger_s * i / n` after the clock (real channels
    are not phase-aligned)."""

    def __init__(self, tick_s: float, stagger_s: float):
        super().__init__(name="livefeed", daemon=True)
        self.tick_s = tick_s
        self.stagger_s = stagger_s
        self._halt = threading.Event()
        self.channels: list = []      # each with a `start_wall`

    def start_clock(self, t0: float | None = None) -> None:
        t0 = time.monotonic() if t0 is None else t0
        n = max(1, len(self.channels))
        for i, ch in enumerate(self.channels):
            ch.start_wall = t0 + self.stagger_s * i / n
        self.start()

    def on_air(self, index: int, stream_time: float) -> float:
        """Wall time at which channel `index`'s audio up to `stream_time` was due."""
        return self.channels[index].start_wall + stream_time

    def run(self) -> None:
        while not self._halt.is_set():
            self._tick(time.monotonic())
            self._halt.wait(self.tick_s)

    def _tick(self, now: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


class LiveFeed(_PacedFeed):
    """Feeds `channels` = [(name, media, offset_s)] into FIFOs under `dirpath`."""

    def __init__(self, channels: list[tuple[str, Media, float]], dirpath: Path, tick_s: float = 0.1,
                 stagger_s: float = 2.0):
        super().__init__(tick_s, stagger_s)
        self.dir = Path(dirpath)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.paths: dict[str, Path] = {}
        self._spec = channels
        for name, media, offset in channels:
            p = self.dir / f"{name}.ts"
            if p.exists():
                p.unlink()
            os.mkfifo(p)
            # O_RDWR: never blocks, and the reader can open before the first byte is due
            fd = os.open(p, os.O_RDWR | os.O_NONBLOCK)
            k = int(np.searchsorted(media.times, offset % media.duration))
            k = min(k, len(media.cuts) - 1)
            self.channels.append(_Channel(name, media, fd, 0.0, float(media.times[k]), int(media.cuts[k])))
            self.paths[name] = p

    def _tick(self, now: float) -> None:
        for ch in self.channels:
            if now >= ch.start_wall:
                self._feed(ch, now)

    def _feed(self, ch: _Channel, now: float) -> None:
        m = ch.media
        due = ch.offset + (now - ch.start_wall) - ch.loops * m.duration
        while True:
            if due >= m.duration:                   # the rest of the file, then loop
                end = len(m.data)
            else:
                k = int(np.searchsorted(m.times, due, side="right"))
                end = int(m.cuts[k]) if k < len(m.cuts) else len(m.data)
            if ch.pos < end and not self._write(ch, end):
                return                              # pipe full: the reader is behind
            if due < m.duration:
                return
            ch.loops += 1
            ch.pos = int(m.cuts[0])
            due -= m.duration

    def _write(self, ch: _Channel, end: int) -> bool:
        try:
            n = os.write(ch.fd, memoryview(ch.media.data)[ch.pos:end])
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.EBADF):
                return False
            raise
        ch.pos += n
        ch.written += n
        return ch.pos >= end

    def close(self) -> None:
        """Stop feeding and close the pipes: readers see the end of their stream."""
        super().close()
        for ch in self.channels:
            try:
                os.close(ch.fd)
            except OSError:
                pass

    def cleanup(self) -> None:
        for p in self.paths.values():
            try:
                p.unlink()
            except OSError:
                pass


@dataclass
class ChunkedMedia:
    """A TS file cut into the self-contained MPEG-TS chunks `onair ingest` makes
    (pipeline.kafka.remux.TsChunker, every track, `chunk_s` of media each)."""
    path: Path
    chunks: list
    starts: np.ndarray    # media time of each chunk's first audio sample
    ends: np.ndarray      # ... and of the end of its last

    @classmethod
    def cut(cls, path: Path, chunk_s: float = 2.0, chunk_bytes: int = 256 * 1024) -> "ChunkedMedia":
        import av

        from pipeline.kafka.remux import TsChunker
        chunks, starts, ends = [], [], []
        span = [None, None]

        def on_chunk(data: bytes) -> None:
            if span[0] is not None:
                chunks.append(data)
                starts.append(span[0])
                ends.append(span[1])
            span[0] = span[1] = None

        with av.open(str(path)) as c:
            audio = c.streams.audio[0]
            streams = list(c.streams.video[:1]) + [audio]
            chunker = TsChunker(streams, on_chunk, chunk_bytes, chunk_s)
            for p in c.demux(*streams):
                if p.stream.index == audio.index and p.pts is not None and p.size:
                    t = float(p.pts * p.time_base)
                    span[0] = t if span[0] is None else span[0]
                    span[1] = t + float((p.duration or 0) * p.time_base)
                chunker.push(p)
            chunker.flush()
        t0 = starts[0]
        return cls(Path(path), chunks, np.asarray(starts) - t0, np.asarray(ends) - t0)


@dataclass
class _ChunkChannel:
    name: str
    media: ChunkedMedia
    k: int                # next chunk
    base: float           # chunk k is due at start_wall + base + ends[k]
    start_wall: float = 0.0


class ChunkFeed(_PacedFeed):
    """Hands each channel's chunks to `submit(channel, bytes)` when the last audio
    sample in them is on air: a live ingest at real-time pace, minus Kafka."""

    def __init__(self, channels: list[tuple[str, ChunkedMedia, float]], submit, tick_s: float = 0.05,
                 stagger_s: float = 2.0):
        super().__init__(tick_s, stagger_s)
        self.submit = submit
        for name, m, offset in channels:
            k = min(int(np.searchsorted(m.ends, offset % m.ends[-1])), len(m.chunks) - 1)
            self.channels.append(_ChunkChannel(name, m, k, -float(m.starts[k])))
        self.submitted = 0

    def _tick(self, now: float) -> None:
        for ch in self.channels:
            m = ch.media
            while now >= ch.start_wall + ch.base + m.ends[ch.k]:
                self.submit(ch.name, m.chunks[ch.k])
                self.submitted += 1
                ch.k += 1
                if ch.k == len(m.chunks):     # loop: the audio goes on where the file ended
                    ch.base += float(m.ends[-1] - m.starts[0])
                    ch.k = 0
