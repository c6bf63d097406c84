"""`onair ingest`: live sources -> container bytes on the media topic.

Each input is demuxed with PyAV and its packets copied (not re-encoded) into
self-contained MPEG-TS chunks (pipeline.kafka.remux), wrapped in the media envelope
(pipeline.kafka.envelope) and produced with key = channel id, so all of a channel's
chunks land, in order, in one partition. `--audio-only` keeps just the
selected audio track, which removes the video bitrate from Kafka.
While the broker is away the producer buffers (`kafka.buffer_bytes`), then
blocks the source: chunks are delayed, never dropped.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid

from pipeline.kafka import envelope
from pipeline.kafka.remux import TsChunker
from pipeline.metrics import Metrics
from pipeline.sources import Input, SourceError, run_inputs

log = logging.getLogger("onair.ingest")


class RemuxInput(Input):
    def __init__(self, channel, url, cfg, on_chunk, audio_only: bool = False, rate: float | None = None,
                 metrics=None, stop=None):
        super().__init__(channel, url, cfg, metrics, stop)
        self.on_chunk = on_chunk          # (bytes, discontinuity) -> None
        self.audio_only = audio_only
        self.rate = rate                  # pace files at `rate` x real time (None: as fast as possible)
        k = cfg["kafka"]
        self.chunk_bytes, self.chunk_s = k["chunk_bytes"], k["chunk_s"]
        self._sessions = 0
        self._audio_index = None

    def _streams(self, container, stream):
        if self.audio_only:
            return [stream]
        return list(container.streams.video[:1]) + [stream]

    def _prepare(self, container, stream) -> None:
        self._sessions += 1
        disc = self._sessions > 1
        self._audio_index = stream.index

        def emit(data: bytes, _disc=[disc]):
            self.on_chunk(data, _disc[0])
            _disc[0] = False

        self.chunker = TsChunker(self._streams(container, stream), emit, self.chunk_bytes, self.chunk_s)
        self._t0_wall = time.monotonic()
        self._t0_media = None
        if self._t0_epoch is None:
            self._t0_epoch = time.time()

    _t0_epoch = None        # wall clock when the first session of a file input opened
    _media_s = 0.0          # media seconds read since then

    def wall(self) -> float:
        """The envelope's `wall`: when a live chunk was cut; for a file, its start plus the media
        time read, so a file ingested faster than real time still spans its real duration."""
        if self.live or self._t0_epoch is None:
            return time.time()
        return self._t0_epoch + self._media_s

    def _packet(self, packet, sink) -> bool:
        if packet.dts is not None and packet.time_base:
            t = float(packet.dts * packet.time_base)
            if self._t0_media is None:
                self._t0_media = t
            self._media_s = max(self._media_s, t - self._t0_media)
            if self.rate:
                ahead = (t - self._t0_media) / self.rate - (time.monotonic() - self._t0_wall)
                if ahead > 0 and self.stop.wait(ahead):
                    return False
        is_audio = packet.stream.index == self._audio_index
        self.chunker.push(packet)
        return is_audio and packet.size > 0

    def _end_session(self, sink) -> bool:
        self.chunker.flush()
        return False


class Ingest:
    def __init__(self, inputs: list[tuple[str, str]], cfg: dict, audio_only: bool = False,
                 rate: float | None = None, metrics=None, producer=None):
        from pipeline.kafka.client import ensure_topics, producer as make_producer
        if producer is None:
            ensure_topics(cfg)
        self.inputs = inputs
        self.cfg = cfg
        self.audio_only = audio_only
        self.rate = rate
        self.metrics = metrics or Metrics()
        self.topic = cfg["kafka"]["topic_media"]
        self.producer = producer or make_producer(cfg)
        self.stop = threading.Event()
        self.results: dict[str, dict] = {}
        self.send_errors = 0

    def run(self) -> dict[str, dict]:
        run_inputs([(ch, functools.partial(self._input, ch, url)) for ch, url in self.inputs], self.stop)
        self.producer.flush()
        return self.results

    def _input(self, channel: str, url: str) -> None:
        session = uuid.uuid4().hex[:12]
        res = self.results[channel] = {"ok": True, "reason": "", "chunks": 0, "bytes": 0, "session": session}
        seq = [0]

        def send(data: bytes, disc: bool, kind: str = "media") -> None:
            header = {"channel": channel, "session": session, "seq": seq[0], "wall": round(src.wall(), 3),
                      "kind": kind, "disc": disc, "format": "mpegts", "audio_only": self.audio_only}
            self._send(channel, envelope.pack(header, data))
            seq[0] += 1
            if kind == "media":
                res["chunks"] += 1
                res["bytes"] += len(data)
                self.metrics.ingest_chunks.labels(channel).inc()
                self.metrics.ingest_bytes.labels(channel).inc(len(data))

        src = RemuxInput(channel, url, self.cfg, send, self.audio_only, self.rate, self.metrics, self.stop)
        try:
            src.run(None)
        except SourceError as e:
            res.update(ok=False, reason=e.reason)
            log.error("channel %s: input %s failed: %s", channel, url, e)
        except Exception as e:
            res.update(ok=False, reason="internal_error")
            log.exception("channel %s: input %s failed: %s", channel, url, e)
        if res["chunks"]:
            send(b"", False, kind="eos")   # the source ended: workers close the channel's last segment
        log.info("channel %s: %d chunks, %.1f MB produced", channel, res["chunks"], res["bytes"] / 1e6)

    def _send(self, channel: str, value: bytes) -> None:
        from kafka.errors import KafkaTimeoutError
        while True:
            try:
                self.producer.send(self.topic, key=channel.encode(), value=value).add_errback(self._failed, channel)
                return
            except KafkaTimeoutError:
                # buffer full for kafka.max_block_s: the broker is away; keep the chunk and try again
                log.warning("channel %s: Kafka unavailable, holding the source", channel)
                if self.stop.is_set():
                    return

    def _failed(self, exc, channel) -> None:
        self.send_errors += 1
        log.error("channel %s: a media chunk was not delivered: %s", channel, exc)
