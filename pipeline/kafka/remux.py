"""Cuts a demuxed stream into self-contained MPEG-TS chunks for Kafka.

Every chunk is a complete TS file written by its own muxer (PAT/PMT first,
whole PES packets, 188-byte aligned), so a worker can demux any chunk on its
own and one broken chunk never takes its neighbours down. Packets are copied,
not re-encoded: timestamps and audio stay bit-exact. A chunk closes at
`chunk_bytes` or after `chunk_s` seconds of media, whichever comes first
(the latter bounds the latency a live channel adds).
"""
from __future__ import annotations

import io

import av


class TsChunker:
    def __init__(self, streams: list, on_chunk, chunk_bytes: int = 256 * 1024, chunk_s: float = 2.0):
        self.templates = streams
        self.on_chunk = on_chunk     # (bytes) -> None
        self.chunk_bytes = chunk_bytes
        self.chunk_s = chunk_s
        self._out = None
        self._buf = None
        self._map = {}
        self._first_ts = None
        self.chunks = 0

    def push(self, packet) -> None:
        if packet.dts is None or packet.size == 0:
            return
        if self._out is None:
            self._open()
        ts = float(packet.dts * packet.time_base) if packet.time_base else None
        if self._first_ts is None:
            self._first_ts = ts
        packet.stream = self._map[packet.stream.index]
        self._out.mux(packet)
        if self._buf.tell() >= self.chunk_bytes or (
                ts is not None and self._first_ts is not None and ts - self._first_ts >= self.chunk_s):
            self.flush()

    def flush(self) -> None:
        if self._out is None:
            return
        self._out.close()
        data = self._buf.getvalue()
        self._out = self._buf = None
        self._first_ts = None
        if data:
            self.chunks += 1
            self.on_chunk(data)

    def _open(self) -> None:
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, "w", format="mpegts")
        self._map = {s.index: self._out.add_stream_from_template(s) for s in self.templates}
