"""Prometheus metrics of one onair process (prometheus_client), in a registry
of its own so tests and several pipelines in one process do not collide."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, currency: str = "USD"):
        r = self.registry = registry or CollectorRegistry()
        ch = ["channel"]
        self.audio_seconds = Counter("onair_audio_decoded_seconds", "Audio decoded, in seconds of 16 kHz mono",
                                     ch, registry=r)
        self.decode_errors = Counter("onair_decode_errors", "Corrupt audio packets dropped", ch, registry=r)
        self.discontinuities = Counter("onair_discontinuities", "PTS gaps and resets that restarted framing",
                                       ch + ["kind"], registry=r)
        self.codec_changes = Counter("onair_codec_changes", "Mid-stream audio codec changes", ch, registry=r)
        self.reconnects = Counter("onair_source_reconnects", "Reconnections of live sources", ch, registry=r)
        self.input_errors = Counter("onair_input_errors", "Input failures by reason", ch + ["reason"], registry=r)
        self.source_up = Gauge("onair_source_up", "1 while the source delivers audio", ch, registry=r)
        self.no_signal = Counter("onair_no_signal_seconds", "Outages of the source, in seconds of stream time "
                                 "(no_signal segments)", ch, registry=r)
        self.frames_embedded = Counter("onair_frames_embedded", "0.96 s frames embedded", ["backend"], registry=r)
        self.embed_batch = Histogram("onair_embedding_batch_size", "Frames per embedding call", ["backend"],
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=r)
        self.embed_latency = Histogram("onair_embedding_batch_latency_seconds", "Wall time of one embedding call",
                                       ["backend"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5,
                                                             5), registry=r)
        self.decision_lag = Histogram("onair_hmm_decision_lag_seconds",
                                      "Stream time from the end of a frame's audio to its HMM decision",
                                      buckets=(0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20), registry=r)
        self.music = Gauge("onair_channel_music", "1 while the channel's decided state is music", ch, registry=r)
        self.segments = Counter("onair_segments", "Closed segments emitted", ch + ["label"], registry=r)

        self.ingest_chunks = Counter("onair_ingest_chunks", "Media chunks produced to Kafka", ch, registry=r)
        self.ingest_bytes = Counter("onair_ingest_bytes", "Media bytes produced to Kafka", ch, registry=r)
        self.media_chunks = Counter("onair_media_chunks", "Media chunks consumed and processed by a worker", ch,
                                    registry=r)
        self.media_skipped = Counter("onair_media_chunks_skipped",
                                     "Redelivered chunks already covered by restored state", ch, registry=r)
        self.dlq = Counter("onair_dlq_records", "Media records sent to the dead-letter topic", ["reason"],
                           registry=r)
        self.embed_wait = Counter("onair_worker_embed_wait_seconds",
                                  "Time a Kafka worker's poll-and-decode thread waited for its embedding stage "
                                  "(high: the model is what limits the worker)", registry=r)
        self.state_restores = Counter("onair_state_restores", "Channel states restored from the changelog", ch,
                                      registry=r)
        self.state_gaps = Counter("onair_state_gaps",
                                  "Restored channel states older than the group's committed offsets (replayed "
                                  "from the state: kind=stale; or no state for a run begun earlier: "
                                  "kind=missing)", ch + ["kind"], registry=r)

        self.requests_emitted = Counter("onair_recognition_requests_emitted",
                                        "Recognition requests decided by the debouncer", ch + ["reason"], registry=r)
        self.same_recording = Counter("onair_song_boundaries_same_recording",
                                      "Candidate song boundaries dropped because the audio on both sides is one "
                                      "record (a break inside a track)", ch, registry=r)

        cp = ["channel", "provider"]
        self.recognition_requests = Counter("onair_recognition_requests",
                                            "Recognition requests by outcome (sent, matched, no_match, error, "
                                            "budget_skipped, deduplicated, local_match, known_unidentified)",
                                            cp + ["outcome"], registry=r)
        self.recognition_spend = Counter(f"onair_recognition_spend_{currency.lower()}",
                                         f"Money paid to recognition providers, in {currency}", cp, registry=r)
        self.recognition_audio = Counter("onair_recognition_audio_sent_seconds",
                                         "Seconds of audio sent to recognition providers", cp, registry=r)
        self.provider_latency = Histogram("onair_recognition_provider_latency_seconds",
                                          "Wall time of one provider call", ["provider"],
                                          buckets=(.05, .1, .25, .5, 1, 2, 4, 8, 16, 32), registry=r)
        self.recognition_saved = Counter(f"onair_recognition_saved_{currency.lower()}",
                                         f"Provider price of requests answered by the local fingerprint index "
                                         f"instead (local_match, known_unidentified), in {currency}", cp, registry=r)
        self.recognition_bad_requests = Counter("onair_recognition_bad_requests",
                                                "Request records that could not be sent (parked as dead letters)",
                                                registry=r)
        self.identity_lookups = Histogram("onair_identity_lookup_seconds",
                                          "Wall time of one fingerprint index lookup (fingerprint and query)",
                                          ["by"], buckets=(.002, .005, .01, .02, .05, .1, .25, .5, 1), registry=r)
        self.identity_errors = Counter("onair_identity_index_errors",
                                       "Fingerprint index reads or writes that failed (onair pays the provider "
                                       "instead)", ["op"], registry=r)
        self.identity_changes = Counter("onair_identity_song_changes",
                                        "New songs found by the fingerprint index: the recording on air changed "
                                        "(index_change), its predicted end passed (predicted_end), or clean "
                                        "music ahead of the decisions was a recording it knows (probe)", ch + ["reason"],
                                        registry=r)
        self.identity_indexed = Counter("onair_identity_indexed_seconds",
                                        "Seconds of aired audio added to the fingerprint index", ch, registry=r)

        self.overlay_records = Counter("onair_overlay_records", "Records folded into the now-playing cards",
                                       ["kind"], registry=r)
        self.overlay_bad_records = Counter("onair_overlay_bad_records",
                                           "Followed records the overlay could not read (skipped)",
                                           ["kind", "reason"], registry=r)
        self.overlay_clients = Gauge("onair_overlay_sse_clients", "Open Server-Sent Events connections",
                                     registry=r)

        self.consumer_lag = Gauge("onair_kafka_consumer_lag", "Records behind the partition's end", ["topic",
                                  "partition"], registry=r)
        self.monthly_budget = Gauge(f"onair_recognition_budget_monthly_{currency.lower()}",
                                    f"Monthly recognition budget from config, in {currency}", registry=r)
        self.expect_music = Gauge("onair_channel_expects_music", "1 for channels that should carry music", ch,
                                  registry=r)
        self.build = Gauge("onair_build_info", "onair version", ["version", "backend"], registry=r)
        self.head_agreement = Gauge("onair_head_embedding_agreement",
                                    "Probe cosine between this runtime's embeddings and those a head was trained "
                                    "on (below 0.99: retrain the head here)", ["head"], registry=r)

    def configure(self, cfg: dict, backend: str = "") -> "Metrics":
        """Gauges that describe the configuration, for the alert rules."""
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("onair")
        except PackageNotFoundError:
            v = "dev"
        self.build.labels(v, backend or cfg["embedding"]["backend"]).set(1)
        self.monthly_budget.set(cfg["recognition"]["monthly_budget"])
        for ch in cfg["metrics"]["music_channels"]:
            self.expect_music.labels(ch).set(1)
        return self

    def serve(self, address: str, port: int):
        """/metrics over HTTP (prometheus_client's own server, in a thread)."""
        from prometheus_client import start_http_server
        return start_http_server(port, addr=address, registry=self.registry)

    _COUNTERS = {"decode_errors": "decode_errors", "discontinuities": "discontinuities",
                 "codec_changes": "codec_changes", "reconnects": "reconnects", "input_errors": "input_errors"}

    def count(self, what: str, channel: str, n: float = 1, **labels) -> None:
        getattr(self, self._COUNTERS[what]).labels(channel=channel, **labels).inc(n)

    def write_textfile(self, path: str) -> None:
        write_to_textfile(path, self.registry)

    def heads_loaded(self, **heads) -> None:
        """Each loaded head's embedding agreement (pipeline.heads.embedding_agreement), by name."""
        for name, head in heads.items():
            if head is not None and head.agreement is not None:
                self.head_agreement.labels(name).set(head.agreement)
