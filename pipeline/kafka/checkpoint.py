"""Channel states on the compacted changelog topic (`kafka.topic_state`, key = channel).

A state is a snapshot of one channel's run in a worker: its decoder timeline, the
engine's per-channel state (partial frame, HMM window, open segment, debounce and
genre state) and the last media offset it covers. A worker assigned a partition
reads the latest state of each channel and resumes there; a chunk at or below the
restored offset is a redelivery and is skipped.

The state, not the committed offset, says where a channel resumes: a state can be
older than the group's offsets (a zombie worker's late write, a changelog read that
missed the newest). The envelope's `seq` tells: the first chunk after a restore
must follow the state's, or the worker seeks back to the state's offset and replays.
"""
from __future__ import annotations

import json
import logging
import time

from operators.audio.decode import ChunkDecoder
from pipeline.sources import select_audio

log = logging.getLogger("onair.checkpoint")

VERSION = 1


class StateUnavailable(RuntimeError):
    """The changelog could not be read to its end: resuming from what was read could restore states
    older than the offsets the group committed."""


class ChannelState:
    """One run of one channel in this worker: its decoder, its engine run, and what it covers."""

    def __init__(self, channel: str, engine, decode):
        self.channel = channel
        self.decoder = ChunkDecoder(lambda c: select_audio(c, decode.audio_track), decode.max_gap_s)
        self.run = engine.open(channel, decode.clock("ingest"))
        self.partition = None
        self.offset = -1
        self.session = None
        self.seq = None              # the envelope seq of the last record handled (None: unknown)
        self.restored = False        # its first record after a restore must follow `seq`
        self.ended = False           # its end of stream was read (and handed to the engine)
        self.last_wall = None        # the `wall` of the last media record: an outage is measured from it
        self.unsaved_from = None     # offset of the first record handled since the last state sent
        self.unsaved_since = 0.0     # monotonic time of that record

    def snapshot(self, owner: str) -> dict:
        """Taken only after an engine barrier: the run has then decided all it was fed, so an ended
        run is a finished one."""
        return {"v": VERSION, "channel": self.channel, "owner": owner, "wall": round(time.time(), 3),
                "partition": self.partition, "offset": self.offset, "session": self.session,
                "seq": self.seq, "finished": self.ended, "last_wall": self.last_wall, "decoder": self.decoder.snapshot(),
                "detector": self.run.snapshot()}

    def restore(self, d: dict) -> None:
        self.partition, self.offset, self.session, self.ended = d["partition"], d["offset"], d["session"], \
            d["finished"]
        self.last_wall, self.seq = d.get("last_wall"), d.get("seq")
        self.restored = True
        self.decoder.restore(d["decoder"])
        self.run.restore(d["detector"])


class StateStore:
    """Latest state per channel, read from the compacted changelog topic."""

    def __init__(self, cfg: dict, timeout_s: float = 60.0):
        self.cfg = cfg
        self.topic = cfg["kafka"]["topic_state"]
        self.timeout_s = timeout_s
        self.latest: dict[str, dict] = {}
        self.fresh = False           # read to its end since the last assignment

    def refresh(self) -> None:
        """Read the changelog to the end offsets it has now, or raise StateUnavailable and keep
        `fresh` False. kafka-python answers an unreachable cluster's metadata with an empty topic
        list, which must not pass for a changelog without states."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from pipeline.kafka.client import consumer, topic_metadata
        self.fresh = False
        latest: dict[str, dict] = {}
        try:
            c = consumer(self.cfg, group_id=None, enable_auto_commit=False)
        except KafkaError as e:
            raise StateUnavailable(f"cannot reach Kafka to read {self.topic}: {e}") from None
        try:
            # no such topic yet (nothing was ever saved): no states, and that is a complete read
            known = self.topic in topic_metadata(c, min(self.timeout_s, 30.0))
            tps = [TopicPartition(self.topic, p) for p in sorted(c.partitions_for_topic(self.topic) or ())] \
                if known else []
            if tps:
                c.assign(tps)
                c.seek_to_beginning(*tps)
                end = c.end_offsets(tps)
                deadline = time.monotonic() + self.timeout_s
                while any(c.position(tp) < end[tp] for tp in tps):
                    if time.monotonic() > deadline:
                        raise StateUnavailable(f"{self.topic} not read to its end in {self.timeout_s:.0f} s")
                    for msgs in c.poll(timeout_ms=500).values():
                        for m in msgs:
                            if m.offset >= end[TopicPartition(m.topic, m.partition)]:
                                continue
                            self._apply(latest, m)
        except KafkaError as e:
            raise StateUnavailable(f"reading {self.topic}: {e}") from None
        finally:
            c.close()
        self.latest, self.fresh = latest, True

    @staticmethod
    def _apply(latest: dict, m) -> None:
        if m.value is None:
            latest.pop(m.key.decode(errors="replace"), None)
            return
        try:
            d = json.loads(m.value)
            latest[d["channel"]] = d
        except (ValueError, KeyError, TypeError):
            log.warning("state record at %s:%d:%d is not valid state; ignored", m.topic, m.partition, m.offset)
