"""Channel states on the compacted changelog topic (`kafka.topic_state`, key = channel).

A state is a snapshot of one channel's run in a worker: its decoder timeline, the
engine's per-channel state (partial frame, HMM window, open segment, debounce and
genre state) and the last media offset it covers. A worker assigned a partition
reads the latest state of each channel and resumes there; a chunk at or below the
restored offset is a redelivery and is skipped.
"""
from __future__ import annotations

import json
import logging
import time

from operators.audio.decode import ChunkDecoder
from pipeline.sources import select_audio

log = logging.getLogger("onair.checkpoint")

VERSION = 1


class ChannelState:
    """One run of one channel in this worker: its decoder, its engine run, and what it covers."""

    def __init__(self, channel: str, engine, decode):
        self.channel = channel
        self.decoder = ChunkDecoder(lambda c: select_audio(c, decode.audio_track), decode.max_gap_s)
        self.run = engine.open(channel, decode.clock("ingest"))
        self.partition = None
        self.offset = -1
        self.session = None
        self.ended = False           # its end of stream was read (and handed to the engine)
        self.last_wall = None        # the `wall` of the last media record: an outage is measured from it
        self.unsaved_from = None     # offset of the first record handled since the last state sent
        self.unsaved_since = 0.0     # monotonic time of that record

    def snapshot(self, owner: str) -> dict:
        """Taken only after an engine barrier: the run has then decided all it was fed, so an ended
        run is a finished one."""
        return {"v": VERSION, "channel": self.channel, "owner": owner, "wall": round(time.time(), 3),
                "partition": self.partition, "offset": self.offset, "session": self.session,
                "finished": self.ended, "last_wall": self.last_wall, "decoder": self.decoder.snapshot(),
                "detector": self.run.snapshot()}

    def restore(self, d: dict) -> None:
        self.partition, self.offset, self.session, self.ended = d["partition"], d["offset"], d["session"], \
            d["finished"]
        self.last_wall = d.get("last_wall")
        self.decoder.restore(d["decoder"])
        self.run.restore(d["detector"])


class StateStore:
    """Latest state per channel, read from the compacted changelog topic."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.topic = cfg["kafka"]["topic_state"]
        self.latest: dict[str, dict] = {}

    def refresh(self) -> None:
        from kafka import TopicPartition

        from pipeline.kafka.client import consumer
        c = consumer(self.cfg, group_id=None, enable_auto_commit=False)
        try:
            parts = c.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            if not tps:
                return
            c.assign(tps)
            c.seek_to_beginning(*tps)
            end = c.end_offsets(tps)
            deadline = time.monotonic() + 60
            while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
                for msgs in c.poll(timeout_ms=500).values():
                    for m in msgs:
                        if m.value is None:
                            self.latest.pop(m.key.decode(), None)
                            continue
                        try:
                            d = json.loads(m.value)
                            self.latest[d["channel"]] = d
                        except (ValueError, KeyError):
                            log.warning("state record at %s:%d is not valid state; ignored", m.topic, m.offset)
        finally:
            c.close()
