"""`onair worker`: one member of a consumer group over the media topic, driving the engine.

Per poll: decode each channel's chunks (one persistent decoder per channel run) and
feed the audio to the engine (pipeline.engine), which embeds all channels' frames
together on its own thread and writes segments, requests and genres to their topics.
So decoding the next poll overlaps embedding this one: PyAV and the model both release
the GIL, and the two cores work at once. `kafka.overlap: false` waits for the engine
after every poll instead.

A checkpoint, in this order: wait for the engine to have decided everything fed so far
(`Engine.barrier`), send the states of the channels that are due, flush the producer
(outputs and states), then commit each media partition only up to its oldest record
that no sent state covers (at least once). A channel's state is due when its source
ended or `kafka.state_every_s` after its first unsaved record; all unsaved states go
out together then, so the stages wait for each other once per `state_every_s`, not
every poll. States are large (a YAMNet channel's is about half a megabyte of JSON,
mostly the debouncer's song prototypes), which is why they are not sent every poll;
the price is the replay after a failover, up to `state_every_s` of each orphaned
channel, whose records come out again with the same deterministic ids. Revoked
partitions and a closing worker send their channels' states first, so a rebalance
replays nothing.

Failover: a worker assigned a partition resumes each channel from its latest state on
the changelog (pipeline.kafka.checkpoint); a chunk at or below the restored offset is
a redelivery and is skipped. What was emitted after that state is emitted again by
the replay, with the same segment `id` and `request_id`, so consumers drop the copies
and the recognizer answers the copies of requests from its cache.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from operators.audio.constants import SAMPLE_RATE
from operators.audio.decode import ChunkError
from pipeline.engine import Engine
from pipeline.kafka import envelope
from pipeline.kafka.checkpoint import ChannelState, StateStore, StateUnavailable
from pipeline.kafka.client import offset_and_metadata
from pipeline.kafka.outputs import KafkaOutputs
from pipeline.metrics import Metrics
from pipeline.outputs import dumps
from pipeline.params import DecodeParams

log = logging.getLogger("onair.worker")


class Worker:
    def __init__(self, cfg: dict, embedder=None, metrics: Metrics | None = None):
        from kafka import ConsumerRebalanceListener

        from pipeline.kafka.client import consumer, ensure_topics, producer
        from pipeline.models import load_embedder
        self.cfg = cfg
        self.k = cfg["kafka"]
        self.metrics = metrics or Metrics(currency=cfg["recognition"]["currency"])
        self.embedder = embedder or load_embedder(cfg)
        self.decode = DecodeParams.from_config(cfg)
        self.channels: dict[str, ChannelState] = {}
        self.retired: list[ChannelState] = []   # ended runs replaced by a new run, final state not sent yet
        self.handled: dict = {}       # partition (TopicPartition) -> next offset after the last record handled
        self.committed: dict = {}
        self.state_records = 0
        self.id = f"{socket.gethostname()}-{os.getpid()}-{id(self) % 10000}"
        self.store = StateStore(cfg)
        ensure_topics(cfg)
        self.producer = producer(cfg)
        self.consumer = consumer(cfg)
        self.outputs = KafkaOutputs.from_config(self.producer, cfg)
        self.engine = Engine.from_config(cfg, self.embedder, self.outputs, self.metrics)
        from pipeline.identity.index import open_shared_index
        # the recognizer's index (a volume both mount, or one PostgreSQL: docs/deploy.md)
        self.engine.index = open_shared_index(cfg, None, self.metrics)
        self.engine.start()
        self.stop = threading.Event()
        self.processed = 0          # media records handled (incl. DLQ and skipped)
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
                try:
                    worker.store.refresh()
                except StateUnavailable as e:   # read again before the first new channel is resumed
                    log.warning("changelog not read at assignment (%s); reading it again before resuming", e)
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
    @property
    def segments_out(self) -> int:
        return self.outputs.counts.get("segments", 0)

    def _dlq(self, m, reason: str, detail: str) -> None:
        log.warning("media record %s:%d:%d -> DLQ: %s (%s)", m.topic, m.partition, m.offset, reason, detail)
        header = json.dumps({"reason": reason, "detail": detail[:300], "topic": m.topic, "partition": m.partition,
                             "offset": m.offset}, separators=(",", ":")).encode()
        self.producer.send(self.k["topic_dlq"], key=m.key, value=header + b"\n" + (m.value or b""))
        self.metrics.dlq.labels(reason).inc()

    # -- state
    def _fresh_store(self) -> None:
        """The changelog read to its end since the last assignment, retried with backoff while
        Kafka is away: a channel resumed from a partial read could go back in time."""
        wait = 0.5
        while not self.store.fresh:
            try:
                self.store.refresh()
            except StateUnavailable as e:
                if self.stop.is_set():
                    raise
                log.warning("changelog unreadable (%s); retrying in %.0f s", e, wait)
                self.stop.wait(wait)
                wait = min(wait * 2, 10.0)

    def _state(self, channel: str, partition: int) -> ChannelState:
        st = self.channels.get(channel)
        if st is None:
            self._fresh_store()
            st = self.channels[channel] = ChannelState(channel, self.engine, self.decode)
            saved = self.store.latest.get(channel)
            if saved is not None:
                st.restore(saved)
                self.metrics.state_restores.labels(channel).inc()
                log.info("channel %s: state restored (offset %d, stream time %.1f s)", channel, st.offset,
                         st.run.newest_time)
                if st.partition != partition:
                    # the media topic was repartitioned: its offsets say nothing here, `seq` still does
                    log.warning("channel %s: state was for partition %s, its records now come on %d",
                                channel, st.partition, partition)
                    st.offset, st.restored = -1, False
            st.partition = partition
        return st

    # -- the loop
    def run(self, idle_exit_s: float | None = None) -> None:
        try:
            self._loop(idle_exit_s)
        except StateUnavailable:
            if not self.stop.is_set():
                raise
        finally:
            self.close()

    def _loop(self, idle_exit_s: float | None) -> None:
        last = time.monotonic()
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
        try:
            self.engine.close()
        except Exception as e:  # the model failed: what it decided is out, the rest replays elsewhere
            log.error("engine stopped with an error: %s", e)
        try:
            self.producer.flush(timeout=30)
        finally:
            self.consumer.close()
            self.producer.close(timeout=10)

    def process(self, records: dict, overlap: bool = False) -> None:
        """Handle one poll. With `overlap` (and `kafka.overlap`) the engine goes on embedding its
        frames while the caller polls and decodes the next one; otherwise this waits for it."""
        for tp, msgs in records.items():
            for m in msgs:
                self.processed += 1
                back = self._handle(m)
                if back is not None:     # sought back: the rest of this partition's poll comes again
                    self.handled[tp] = back
                    break
                self.handled[tp] = m.offset + 1
        if not (overlap and self.k["overlap"]):
            self._barrier()
        self._save_due()

    def _barrier(self) -> None:
        """Wait for the engine to decide and write everything fed so far (and raise what it raised)."""
        t0 = time.monotonic()
        try:
            self.engine.barrier()
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
                               value=dumps(st.snapshot(self.id)).encode())
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
                commit[tp] = offset_and_metadata(offset)
        if not commit:
            return
        try:
            self.consumer.commit(commit)
            self.committed.update({tp: om.offset for tp, om in commit.items()})
        except Exception as e:  # rebalance or broker away: the chunks come again and are skipped by offset
            log.warning("offset commit failed (%s); redelivered chunks will be skipped by state", e)

    def _follows(self, st: ChannelState, m, header: dict, seq: int | None) -> int | None:
        """Check a record against its channel's state by the envelope's `seq`. Returns the offset
        this worker sought back to when the state is older than the group's committed offset (the
        chunks in between were covered by a state that is lost or was overwritten), else None."""
        restored, st.restored = st.restored, False
        if seq is None:
            return None
        if st.seq is None:
            if st.offset < 0 and seq > 0 and not restored:
                log.warning("channel %s: no state on %s and its run began before %s:%d:%d (seq %d); "
                            "resuming mid-run", st.channel, self.k["topic_state"], m.topic, m.partition,
                            m.offset, seq)
                self.metrics.state_gaps.labels(st.channel, "missing").inc()
            return None
        expected = st.seq + 1 if header.get("session") == st.session else 0
        if not restored or seq <= expected:
            return None
        from kafka import TopicPartition
        back = st.offset + 1
        log.warning("channel %s: restored state (offset %d, seq %d) is older than the committed offset: "
                    "%s:%d:%d has seq %d; replaying from offset %d", st.channel, st.offset, st.seq, m.topic,
                    m.partition, m.offset, seq, back)
        self.metrics.state_gaps.labels(st.channel, "stale").inc()
        self.consumer.seek(TopicPartition(m.topic, m.partition), back)
        return back

    def _handle(self, m) -> int | None:
        try:
            header, payload = envelope.unpack(m.value)
        except envelope.EnvelopeError as e:
            self._dlq(m, "bad_envelope", str(e))
            return None
        channel = str(header["channel"])
        st = self._state(channel, m.partition)
        if st.partition == m.partition and m.offset <= st.offset:
            self.metrics.media_skipped.labels(channel).inc()
            return None
        seq = header.get("seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else None
        back = self._follows(st, m, header, seq)
        if back is not None:
            return back
        if st.ended and header["kind"] == "media":
            # the channel's source ended before: this is a new run of it with a new timeline. The
            # engine decides the ended run's last frames before the new run's first (queue order);
            # its final state goes out at the next checkpoint, before the new run's
            if st.unsaved_from is not None:
                self.retired.append(st)
            st = self.channels[channel] = ChannelState(channel, self.engine, self.decode)
            st.partition = m.partition
        st.offset, st.session = m.offset, header.get("session")
        if st.unsaved_from is None:
            st.unsaved_from, st.unsaved_since = m.offset, time.monotonic()
        wall = float(header["wall"]) if isinstance(header.get("wall"), (int, float)) else None
        if header["kind"] == "eos":
            chunks = st.decoder.finish()
            st.ended = True
        else:
            if header.get("disc") and wall is not None and st.last_wall is not None:
                # the source reconnected: its audio resumes after an outage as long as the wall clock
                # says, less the chunk it took to cut the first record (a no_signal segment when long)
                st.decoder.normalizer.expect_gap(max(0.0, wall - st.last_wall - self.k["chunk_s"]))
            try:
                chunks = st.decoder.decode(payload)
            except ChunkError as e:
                self._dlq(m, "undecodable", str(e))
                return None
            self.metrics.media_chunks.labels(channel).inc()
        # only a record that decoded moves `seq`: a damaged one must not set what the next restore expects
        st.seq = seq
        if wall is not None:
            st.last_wall = wall
            if chunks:
                # UTC from the ingest's wall clock, observed before the audio is fed (pipeline.clock)
                st.run.clock.observe(st.decoder.normalizer.time, wall)
        for chunk in chunks:
            self.audio_s += len(chunk.samples) / SAMPLE_RATE
            self.engine.feed(st.run, chunk)
        if st.ended:
            self.engine.end(st.run, st.decoder.normalizer.time)
        return None
