"""Kafka clients built from the `kafka` config section (kafka-python).

The same code talks to the local Kafka 0.9 broker (`api_version: "0.9"`: no
record headers or timestamps, so metadata rides in the value) and to modern
Kafka 3.x/4.x clusters (`api_version: null` negotiates), with SASL/SSL
settings from config and the password from an environment variable or a file,
never from the config itself.
"""
from __future__ import annotations


from pipeline.config import ConfigError
from pipeline.secrets import read_secret


def _api_version(k: dict):
    v = k["api_version"]
    if v is None:
        return None
    try:
        return tuple(int(x) for x in str(v).split("."))
    except ValueError:
        raise ConfigError(f"config key 'kafka.api_version': expected e.g. 0.9 or 3.7 or null, got {v!r}") from None


def common(cfg: dict) -> dict:
    k = cfg["kafka"]
    out = {"bootstrap_servers": k["bootstrap_servers"].split(","), "client_id": k["client_id"],
           "security_protocol": k["security_protocol"],
           "receive_message_max_bytes": max(k["max_message_bytes"] * 4, 16 * 1024 * 1024)}
    if _api_version(k):
        out["api_version"] = _api_version(k)
    if k["security_protocol"].startswith("SASL"):
        out.update(sasl_mechanism=k["sasl_mechanism"], sasl_plain_username=k["sasl_username"],
                   sasl_plain_password=read_secret(cfg, "kafka", "sasl_password", required=False))
    if k["security_protocol"].endswith("SSL"):
        out.update(ssl_cafile=k["ssl_cafile"], ssl_certfile=k["ssl_certfile"], ssl_keyfile=k["ssl_keyfile"])
    return out


def producer(cfg: dict, **overrides):
    from kafka import KafkaProducer
    k = cfg["kafka"]
    kw = common(cfg)
    kw.update(acks="all", retries=2 ** 31 - 1, linger_ms=k["linger_ms"], batch_size=k["batch_bytes"],
              max_request_size=k["max_message_bytes"], buffer_memory=k["buffer_bytes"],
              max_block_ms=int(k["max_block_s"] * 1000), retry_backoff_ms=500, request_timeout_ms=30000,
              delivery_timeout_ms=3_600_000,   # a broker outage delays chunks; it must not drop them
              # one request in flight per connection: retries cannot reorder a channel's chunks
              max_in_flight_requests_per_connection=1,
              compression_type=None if k["compression"] == "none" else k["compression"])
    kw.update(overrides)
    return KafkaProducer(**kw)


def consumer(cfg: dict, *topics, **overrides):
    from kafka import KafkaConsumer
    k = cfg["kafka"]
    kw = common(cfg)
    kw.update(group_id=k["group_id"], enable_auto_commit=False, auto_offset_reset="earliest",
              session_timeout_ms=k["session_timeout_ms"], heartbeat_interval_ms=k["heartbeat_ms"],
              max_partition_fetch_bytes=k["max_message_bytes"] * 2, fetch_max_bytes=k["max_message_bytes"] * 8,
              max_poll_records=k["max_poll_records"], request_timeout_ms=max(30000, k["session_timeout_ms"] + 5000),
              metadata_max_age_ms=30000)
    kw.update(overrides)
    return KafkaConsumer(*topics, **kw)


def ensure_topics(cfg: dict) -> None:
    """Create onair's topics on brokers with an admin API (Kafka 0.10.1+), the
    state changelog compacted. Kafka 0.9 has none: there `onair broker start`
    creates the changelog and the broker auto-creates the rest."""
    import logging

    k = cfg["kafka"]
    if k["api_version"] and tuple(int(x) for x in str(k["api_version"]).split(".")) < (0, 10, 1):
        return
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError
    log = logging.getLogger("onair.kafka")
    try:
        admin = KafkaAdminClient(**common(cfg))
    except KafkaError as e:
        log.warning("cannot reach Kafka's admin API to create topics (%s); relying on auto-creation", e)
        return
    topics = [NewTopic(k["topic_media"], k["partitions"], 1), NewTopic(k["topic_segments"], k["partitions"], 1),
              NewTopic(k["topic_dlq"], 1, 1), NewTopic(k["topic_requests_dlq"], 1, 1),
              NewTopic(k["topic_state"], k["partitions"], 1, topic_configs={"cleanup.policy": "compact", "segment.ms": "600000",
                                                              "min.cleanable.dirty.ratio": "0.2"})]
    for t in topics:
        try:
            admin.create_topics([t])
        except TopicAlreadyExistsError:
            pass
        except KafkaError as e:
            log.warning("creating topic %s: %s", t.name, e)
    admin.close()


def topic_metadata(c, timeout_s: float) -> set[str]:
    """The topics the cluster lists, fetched within `timeout_s` (KafkaTimeoutError otherwise).
    KafkaConsumer.topics() waits without a bound while no broker answers and then returns what
    it had cached, which reads like "no such topic"; this asks its client the same question with
    a deadline (kafka-python has no public call for it)."""
    from kafka.errors import KafkaTimeoutError
    client = c._client
    cluster = client.cluster
    stash, cluster.need_all_topic_metadata = cluster.need_all_topic_metadata, True
    try:
        future = cluster.request_update()
        client.poll(future=future, timeout_ms=int(timeout_s * 1000))
    finally:
        cluster.need_all_topic_metadata = stash
    if not future.is_done or future.failed():
        raise KafkaTimeoutError(f"no metadata from {','.join(c.config['bootstrap_servers'])} in {timeout_s:.0f} s")
    return set(cluster.topics())


def offset_and_metadata(next_offset: int):
    from kafka.structs import OffsetAndMetadata
    # kafka-python 2.3 added leader_epoch to OffsetAndMetadata
    extra = (-1,) if len(OffsetAndMetadata._fields) == 3 else ()
    return OffsetAndMetadata(next_offset, "", *extra)


def consume_records(c, poll_ms: int, stop, handle, idle_exit_s: float | None = None, before_commit=None,
                    log=None, park=None) -> int:
    """Poll `c` until `stop` is set (or `idle_exit_s` without records), hand each record that is a
    JSON object to `handle(topic, record)`, and commit a poll's offsets after `before_commit()`
    (at least once). A record that is not a JSON object (bounded: pipeline.jsonin), or that
    `handle` refuses with a ValueError, is skipped with one line naming its topic, partition and
    offset, and handed to `park(message, why)` when given. Returns the records handled."""
    import time

    from pipeline.jsonin import loads_record

    def skip(m, why):
        if log is not None:
            log.warning("record %s:%d:%d skipped: %s", m.topic, m.partition, m.offset, why)
        if park is not None:
            park(m, why)
    done, last = 0, time.monotonic()
    while not stop.is_set():
        records = c.poll(timeout_ms=poll_ms)
        if not records:
            if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                break
            continue
        last = time.monotonic()
        commit = {}
        for tp, msgs in records.items():
            for m in msgs:
                commit[tp] = offset_and_metadata(m.offset + 1)
                try:
                    handle(m.topic, loads_record(m.value if m.value is not None else b""))
                except ValueError as e:      # pipeline.jsonin.BadLine, a request refused (BadRequest)
                    skip(m, str(e))
                    continue
                done += 1
        if before_commit is not None:
            before_commit()
        c.commit(commit)
    return done
