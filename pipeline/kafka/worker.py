"""`onair worker`: one member of a consumer group over the media topic.

Per poll: decode each channel's chunks (one persistent decoder per channel),
cut frames, embed all channels' frames together, run head -> HMM -> segments,
produce the segments, then the states of the channels when one of them is
`kafka.state_every_s` old (or its source ended) to the compacted changelog
topic, flush, and only then commit the media offsets, each partition's only up
to its oldest record that no state covers yet (at least once).

With `kafka.overlap` (default) a poll's frames are embedded on a second thread
while the main thread polls and decodes the next one: PyAV and the model both
release the GIL, so the two cores work at once. A channel's state is taken only
when both stages have reached the same record (the embedding stage is waited
for first), which is why all unsaved states go out together when one is due:
the stages then wait for each other once per `state_every_s`, not every poll.

A state is sent every `state_every_s` rather than every poll because it is
large (a YAMNet channel's is about half a megabyte of JSON, most of it the
debouncer's song prototypes): every 2 s poll it cost about 2 ms of CPU per
channel and 250 KB/s of changelog traffic per channel. The price is the replay
after a failover, up to `state_every_s` of each orphaned channel, whose records
come out again with the same deterministic ids. Revoked partitions and a
closing worker send their channels' states first, so a rebalance replays nothing.

Failover: a channel's state (decoder timeline, partial frame, HMM window,
open segment, last media offset it covers) is keyed by channel in
`kafka.topic_state`. A worker that is assigned a partition reads the
changelog and resumes each channel where its last state left it; a chunk at
or below the restored offset is a redelivery and is skipped. What was emitted
after that state is emitted again by the replay, with the same deterministic
segment `id` and `request_id`, so consumers drop the copies and the recognizer
answers the copies of requests from its cache.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from operators.audio.decode import ChunkDecoder, ChunkError
from pipeline.kafka import envelope
from pipeline.engine.batcher import embed_by_channel
from pipeline.engine.channel import ChannelDetector
from pipeline.heads import hmm_params, load_heads
from pipeline.metrics import Metrics
from pipeline.sources import select_audio

log = logging.getLogger("onair.worker")


def segment_id(seg: dict) -> str:
    return f"{seg['channel']}/{seg['start']:.3f}"


class ChannelState:
    def __init__(self, channel: str, worker: "Worker"):
        self.channel = channel
        self.decoder = ChunkDecoder(lambda c: select_audio(c, worker.cfg["source"]["audio_track"]),
                                    worker.cfg["source"]["max_gap_s"])
        self.detector = ChannelDetector(channel, worker.head, worker.hmm, worker.cfg["hmm"]["lag_frames"],
                                        worker.emit_segment, worker.metrics, worker.cfg["debounce"],
                                        worker.emit_request, worker.genre_model, worker.cfg["genre"],
                                        worker.emit_genre, worker.talkover)
        self.partition = None
        self.offset = -1
        self.session = None
        self.ended = False           # its end of stream has been read (main thread)
        self.finished = False        # ... and its last frames embedded and closed: the run is over
        self.unsaved_from = None     # offset of the first record handled since the last state sent
        self.unsaved_since = 0.0     # monotonic time of that record

    def snapshot(self, owner: str) -> dict:
        return {"v": 1, "channel": self.channel, "owner": owner, "wall": round(time.time(), 3), "partition": self.partition, "offset": self.offset,
                "session": self.session, "finished": self.finished, "decoder": self.decoder.state_dict(),
                "detector": self.detector.state_dict()}

    def restore(self, d: dict) -> None:
        self.partition, self.offset, self.session, self.finished = d["partition"], d["offset"], d["session"], \
            d["finished"]
        self.ended = self.finished
        self.decoder.load_state_dict(d["decoder"])
        self.detector.load_state_dict(d["detector"])


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


class Worker:
    def __init__(self, cfg: dict, embedder=None, metrics: Metrics | None = None):
        from kafka import ConsumerRebalanceListener

        from pipeline.kafka.client import consumer, ensure_topics, producer
        from pipeline.models import load_embedder
        self.cfg = cfg
        self.k = cfg["kafka"]
        self.metrics = metrics or Metrics(currency=cfg["recognition"]["currency"])
        self.embedder = embedder or load_embedder(cfg)
        self.head, self.talkover, self.genre_model = load_heads(cfg, self.embedder, self.metrics)
        self.hmm = hmm_params(self.head, cfg)
        self.channels: dict[str, ChannelState] = {}
        self.retired: list[ChannelState] = []   # ended runs replaced by a new run, final state not sent yet
        # the embedding stage: one thread, one poll's frames in flight at a time
        self._stage = ThreadPoolExecutor(1, thread_name_prefix="embed") if self.k["overlap"] else None
        self._inflight = None
        self.handled: dict = {}       # partition (TopicPartition) -> next offset after the last record handled
        self.committed: dict = {}
        self.state_records = 0
        self.id = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10000}"
        self.store = StateStore(cfg)
        ensure_topics(cfg)
        self.producer = producer(cfg)
        self.consumer = consumer(cfg)
        self.stop = threading.Event()
        self.processed = 0          # media records handled (incl. DLQ and skipped)
        self.segments_out = 0
        self.first_output_at = None
        self.first_record_at = self.last_record_at = None
        self.busy_s = 0.0
        self.audio_s = 0.0
        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                gone = {tp.partition for tp in revoked}
                # hand over without a replay: what this worker did becomes the next owner's start
                worker._barrier()
                worker._save_states(worker.retired + [st for st in worker.channels.values() if st.partition in gone])
                worker.retired = []
                worker._commit(only=set(revoked))
                for tp in revoked:
                    worker.handled.pop(tp, None)
                    worker.committed.pop(tp, None)
                for ch in [c for c, st in worker.channels.items() if st.partition in gone]:
                    del worker.channels[ch]
                log.info("partitions revoked: %s", sorted(gone))

            def on_partitions_assigned(self, assigned):
                worker.store.refresh()
                log.info("partitions assigned: %s (%d channel states in the changelog)",
                         sorted(tp.partition for tp in assigned), len(worker.store.latest))

        self._await_topic(self.k["topic_media"])
        self.consumer.subscribe([self.k["topic_media"]], listener=Listener())

    def _await_topic(self, topic: str, timeout_s: float = 30.0) -> None:
        """Ask for the topic's metadata until it has partitions: a subscription to a topic that does
        not exist yet would wait for the next metadata refresh (minutes) before it gets any."""
        deadline = time.monotonic() + timeout_s
        while not self.consumer.partitions_for_topic(topic) and time.monotonic() < deadline:
            time.sleep(0.5)

    # -- outputs
    def emit_segment(self, seg: dict) -> None:
        seg = {**seg, "id": segment_id(seg)}
        self.producer.send(self.k["topic_segments"], key=seg["channel"].encode(),
                           value=json.dumps(seg, separators=(",", ":")).encode())
        self.segments_out += 1
        if self.first_output_at is None:
            self.first_output_at = time.time()

    def emit_genre(self, rec: dict) -> None:
        self.producer.send(self.k["topic_genres"], key=rec["channel"].encode(),
                           value=json.dumps(rec, separators=(",", ":")).encode())

    def emit_request(self, req: dict) -> None:
        self.producer.send(self.k["topic_requests"], key=req["channel"].encode(),
                           value=json.dumps(req, separators=(",", ":")).encode())

    def _dlq(self, m, reason: str, detail: str) -> None:
        log.warning("media record %s:%d:%d -> DLQ: %s (%s)", m.topic, m.partition, m.offset, reason, detail)
        header = json.dumps({"reason": reason, "detail": detail[:300], "topic": m.topic, "partition": m.partition,
                             "offset": m.offset}, separators=(",", ":")).encode()
        self.producer.send(self.k["topic_dlq"], key=m.key, value=header + b"\n" + (m.value or b""))
        self.metrics.dlq.labels(reason).inc()

    # -- state
    def _state(self, channel: str, partition: int) -> ChannelState:
        st = self.channels.get(channel)
        if st is None:
            st = self.channels[channel] = ChannelState(channel, self)
            saved = self.store.latest.get(channel)
            if saved is not None:
                st.restore(saved)
                self.metrics.state_restores.labels(channel).inc()
                log.info("channel %s: state restored (offset %d, stream time %.1f s)", channel, st.offset,
                         st.detector.newest_time)
            st.partition = partition
        return st

    # -- the loop
    def run(self, idle_exit_s: float | None = None) -> None:
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                records = self.consumer.poll(timeout_ms=self.k["poll_ms"])
                self._lag()
                if records:
                    t0 = time.monotonic()
                    self.first_record_at = self.first_record_at or time.time()
                    self.process(records, overlap=True)
                    self.busy_s += time.monotonic() - t0
                    self.last_record_at = time.time()
                    last = time.monotonic()
                else:
                    self._save_due()     # a quiet worker still saves what it did and commits it
                    if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                        break
        finally:
            self.close()

    def _lag(self) -> None:
        """Consumer lag per assigned partition, from the high-water marks the fetches brought back."""
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is not None:
                try:
                    self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                        max(0, hw - self.consumer.position(tp)))
                except Exception:  # position unknown during a rebalance
                    pass

    def summary(self) -> dict:
        span = (self.last_record_at - self.first_record_at) if self.first_record_at else 0.0
        return {"worker": self.id, "media_records": self.processed, "segments": self.segments_out,
                "audio_s": round(self.audio_s, 1), "busy_s": round(self.busy_s, 2), "state_records": self.state_records,
                "first_record_at": self.first_record_at, "last_record_at": self.last_record_at,
                "span_s": round(span, 2)}

    def close(self) -> None:
        try:
            self._barrier()
            self._save_states(self.retired + list(self.channels.values()))
            self.retired = []
            self._commit()
        except Exception as e:  # broker away at shutdown: the next owner replays from the last state
            log.warning("final state not saved (%s); the next owner replays from the last one", e)
        if self._stage is not None:
            self._stage.shutdown(wait=True)
        try:
            self.producer.flush(timeout=30)
        finally:
            self.consumer.close()
            self.producer.close(timeout=10)

    def process(self, records: dict, overlap: bool = False) -> None:
        """Handle one poll. With `overlap` (and `kafka.overlap`) its frames are embedded on the
        embedding stage while the caller polls and decodes the next one."""
        frames: list[tuple[ChannelState, float, np.ndarray, float]] = []
        ends: list[ChannelState] = []
        for tp, msgs in records.items():
            for m in msgs:
                self.handled[tp] = m.offset + 1
                self.processed += 1
                self._handle(m, frames, ends)
        self._barrier()
        if overlap and self._stage is not None:
            self._inflight = self._stage.submit(self._drain, frames, ends)
        else:
            self._drain(frames, ends)
        self._save_due()

    def _barrier(self) -> None:
        """Wait for the embedding stage to finish what it was given (and raise what it raised)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            t0 = time.monotonic()
            try:
                inflight.result()
            finally:
                self.metrics.embed_wait.inc(time.monotonic() - t0)

    def _save_due(self) -> None:
        now, every = time.monotonic(), self.k["state_every_s"]
        unsaved = [st for st in self.channels.values() if st.unsaved_from is not None]
        if self.retired or any(st.ended or now - st.unsaved_since >= every for st in unsaved):
            self._barrier()
            # runs that ended and were followed by a new run of their channel: their final states go
            # out first, so the changelog's latest is the new run's
            self._save_states(self.retired + unsaved)
            self.retired = []
        self._commit()

    def _save_states(self, states: list[ChannelState]) -> None:
        """Send these channels' states and flush (the outputs before them too)."""
        for st in states:
            if st.unsaved_from is None:
                continue
            self.producer.send(self.k["topic_state"], key=st.channel.encode(),
                               value=json.dumps(st.snapshot(self.id), separators=(",", ":")).encode())
            st.unsaved_from = None
            self.state_records += 1
        self.producer.flush()

    def _commit(self, only: set | None = None) -> None:
        """Commit each partition up to its oldest record that no sent state covers yet."""
        unsaved: dict[int, int] = {}
        for st in self.channels.values():
            if st.unsaved_from is not None:
                unsaved[st.partition] = min(unsaved.get(st.partition, st.unsaved_from), st.unsaved_from)
        commit = {}
        for tp, nxt in self.handled.items():
            if only is not None and tp not in only:
                continue
            offset = min(nxt, unsaved.get(tp.partition, nxt))
            if self.committed.get(tp) != offset:
                commit[tp] = _offset(offset)
        if not commit:
            return
        try:
            self.consumer.commit(commit)
            self.committed.update({tp: om.offset for tp, om in commit.items()})
        except Exception as e:  # rebalance or broker away: the chunks come again and are skipped by offset
            log.warning("offset commit failed (%s); redelivered chunks will be skipped by state", e)

    def _handle(self, m, frames, ends) -> None:
        try:
            header, payload = envelope.unpack(m.value)
        except envelope.EnvelopeError as e:
            self._dlq(m, "bad_envelope", str(e))
            return
        channel = str(header["channel"])
        st = self._state(channel, m.partition)
        if st.partition == m.partition and m.offset <= st.offset:
            self.metrics.media_skipped.labels(channel).inc()
            return
        if st.ended and header["kind"] == "media":      # (finished implies ended)
            # the channel's source ended before (in an earlier poll, whose final state went out then,
            # or earlier in this one): this is a new run of it with a new timeline
            if not st.finished:               # its end is with the embedding stage, or in this poll:
                self._barrier()               # its last records go out before the new run's first
            if not st.finished:
                self._drain(frames, ends)
            if st.unsaved_from is not None:
                self.retired.append(st)
            st = self.channels[channel] = ChannelState(channel, self)
            st.partition = m.partition
        st.offset, st.session = m.offset, header.get("session")
        if st.unsaved_from is None:
            st.unsaved_from, st.unsaved_since = m.offset, time.monotonic()
        if header["kind"] == "eos":
            chunks = st.decoder.finish()
            st.ended = True
            ends.append(st)
        else:
            try:
                chunks = st.decoder.decode(payload)
            except ChunkError as e:
                self._dlq(m, "undecodable", str(e))
                return
            self.metrics.media_chunks.labels(channel).inc()
        for chunk in chunks:
            self.audio_s += len(chunk.samples) / 16000
            for t, frame in st.detector.frames_for(chunk):
                frames.append((st, t, frame, st.detector.newest_time))

    def _drain(self, frames: list, ends: list) -> None:
        """Embed the frames handled so far and close the runs that ended."""
        self._embed(frames)
        for st in ends:
            st.detector.finish(max(st.detector.newest_time, st.decoder.normalizer.time))
            st.finished = True
        frames.clear()
        ends.clear()

    def _embed(self, frames) -> None:
        bs = self.cfg["embedding"]["batch_size"]
        for i in range(0, len(frames), bs):
            batch = frames[i:i + bs]
            # grouped by ChannelState, not by name: two runs of a channel may share a batch
            res, groups, _ = embed_by_channel(self.embedder, [f[2] for f in batch], [f[0] for f in batch],
                                              self.metrics)
            for idx in groups.values():
                part = res.take(idx)
                batch[idx[0]][0].detector.on_embedded(
                    [batch[j][1] for j in idx], part.embeddings, [batch[j][3] for j in idx],
                    [batch[j][2] for j in idx], part.class_scores, part.features)


def _offset(next_offset: int):
    from kafka.structs import OffsetAndMetadata
    # kafka-python 2.3 added leader_epoch to OffsetAndMetadata
    extra = (-1,) if len(OffsetAndMetadata._fields) == 3 else ()
    return OffsetAndMetadata(next_offset, "", *extra)
