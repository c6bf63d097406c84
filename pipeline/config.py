"""Pipeline configuration: YAML validated against an explicit schema.

Every key has a type, a range or a set of choices and a default; an unknown
key or a bad value raises ConfigError naming the dotted key and what was
expected, so a broken config stops the process with one clear line.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "pipeline.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Spec:
    """What every key type carries besides its check: its meaning and unit, for `onair config --doc`.
    Keyword-only and left out of comparisons, so documenting a key never changes how it validates."""
    doc: str = field(default="", kw_only=True, compare=False)
    unit: str = field(default="", kw_only=True, compare=False)


@dataclass(frozen=True)
class Int(Spec):
    default: int
    lo: int | None = None
    hi: int | None = None

    def check(self, key, v):
        if isinstance(v, bool) or not isinstance(v, int) or (self.lo is not None and v < self.lo) \
                or (self.hi is not None and v > self.hi):
            raise ConfigError(f"config key '{key}': expected an integer in [{self.lo}, {self.hi}], got {v!r}")
        return v


@dataclass(frozen=True)
class OptInt(Spec):
    """An integer in range, or null (no limit)."""
    default: int | None
    lo: int = 0
    hi: int = 10**9

    def check(self, key, v):
        if v is None:
            return None
        return Int(0, self.lo, self.hi).check(key, v)


@dataclass(frozen=True)
class Float(Spec):
    default: float | None
    lo: float | None = None
    hi: float | None = None
    optional: bool = False

    def check(self, key, v):
        if v is None and self.optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            opt = " or null" if self.optional else ""
            raise ConfigError(f"config key '{key}': expected a number in [{self.lo}, {self.hi}]{opt}, got {v!r}")
        return float(v)


@dataclass(frozen=True)
class Choice(Spec):
    default: str
    choices: tuple

    def check(self, key, v):
        if v not in self.choices:
            raise ConfigError(f"config key '{key}': expected one of {', '.join(map(str, self.choices))}, got {v!r}")
        return v


@dataclass(frozen=True)
class Bool(Spec):
    default: bool

    def check(self, key, v):
        if isinstance(v, bool):
            return v
        raise ConfigError(f"config key '{key}': expected true or false, got {v!r}")


@dataclass(frozen=True)
class AutoBool(Spec):
    """`auto`, or a YAML boolean (true/false, yes/no)."""
    default: object = "auto"

    def check(self, key, v):
        if v == "auto" or isinstance(v, bool):
            return v
        raise ConfigError(f"config key '{key}': expected auto, true or false, got {v!r}")


@dataclass(frozen=True)
class Str(Spec):
    default: str | None
    optional: bool = False

    def check(self, key, v):
        if v is None and self.optional:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(f"config key '{key}': expected a non-empty string, got {v!r}")
        return v


@dataclass(frozen=True)
class Track(Spec):
    """Audio track selector: first | index:N | lang:CODE | pid:N (decimal or 0x hex)."""
    default: str = "first"

    def check(self, key, v):
        import re
        if not isinstance(v, str) or not re.fullmatch(r"first|index:\d+|lang:[A-Za-z]{2,3}|pid:(0x[0-9a-fA-F]+|\d+)", v):
            raise ConfigError(f"config key '{key}': expected first, index:N, lang:CODE or pid:N, got {v!r}")
        return v


@dataclass(frozen=True)
class StrList(Spec):
    default: tuple = ()

    def check(self, key, v):
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"config key '{key}': expected a list of names, got {v!r}")
        return v


@dataclass(frozen=True)
class GenreMap(Spec):
    """genre -> list of AudioSet class names (the YAMNet class map's display names)."""
    default: dict

    def check(self, key, v):
        if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, list) and x and
                                               all(isinstance(n, str) for n in x) for k, x in v.items()):
            raise ConfigError(f"config key '{key}': expected a mapping of genre -> list of AudioSet class names")
        return v


AUDIOSET_GENRES = {
    "blues": ["Blues", "Rhythm and blues"], "classical": ["Classical music", "Opera"],
    "country": ["Country", "Bluegrass"], "disco": ["Disco"], "hiphop": ["Hip hop music", "Rapping"],
    "jazz": ["Jazz", "Swing music"], "metal": ["Heavy metal", "Punk rock", "Grunge"], "pop": ["Pop music"],
    "reggae": ["Reggae", "Ska"], "rock": ["Rock music", "Progressive rock", "Rock and roll", "Psychedelic rock"],
}

# One line per section for the generated docs/configuration.md: what the section is for.
SECTIONS: dict[str, str] = {
    "embedding": "The embedding model that turns each 0.96 s frame into a vector, and how frames of all channels "
                 "are batched into it.",
    "heads": "Where the small models fitted on embeddings (music, talk-over, genre) are read from.",
    "hmm": "The online two-state HMM that turns the music head's per-frame probabilities into decisions, "
           "with a fixed lag.",
    "debounce": "Music segments into recognition requests, at most one per song: when a song counts, where a new "
                "one starts, which clip is sent.",
    "recognition": "Paid recognition (`onair recognize`, or the same stage in `onair run` when a provider is set): "
                   "provider, retries, spend caps and the cost ledger. Keys come from the environment or files, "
                   "never from this config.",
    "identity": "The local fingerprint index (landmark hashes, never audio) that answers repeats without paying, "
                "keeps the provider's \"unknown\" for a window and finds song changes without a level dip.",
    "genre": "Genre tags per music segment (`heads/<backend>/genre.json`).",
    "source": "Opening inputs (files and live URLs): which audio track, what counts as live, timeouts, reconnects "
              "and gaps.",
    "kafka": "Kafka mode (`onair ingest`, `worker`, `recognize --kafka`, `overlay --kafka`): the broker, topics, "
             "consumer group, producer and the state changelog.",
    "metrics": "Prometheus metrics of every long-running command.",
    "overlay": "`onair overlay`: the now-playing card for OBS / CasparCG (HTML, JSON, Server-Sent Events).",
    "runtime": "Process-wide settings of the runtime.",
}

SCHEMA: dict[str, dict[str, Any]] = {
    "embedding": {
        "backend": Choice("yamnet", ("yamnet", "vggish"),
                          doc="embedding model; yamnet is the only backend with heads trained here"),
        "yamnet_handle": Str("https://tfhub.dev/google/yamnet/1",
                             doc="TF-Hub handle (or SavedModel folder) for YAMNet, used when "
                                 "`$ONAIR_MODEL_DIR/yamnet/yamnet.tflite` is absent"),
        "vggish_handle": Str("https://tfhub.dev/google/vggish/1",
                             doc="TF-Hub handle (or SavedModel folder) for VGGish, used when "
                                 "`$ONAIR_MODEL_DIR/vggish/` is absent"),
        "batch_size": Int(64, 1, 4096, unit="frames", doc="frames from all channels per model call, at most"),
        "max_wait_ms": Float(20.0, 0.0, 10000.0, doc="longest wait for a batch to fill"),
        "threads": Int(0, 0, 256, doc="model threads; 0 = every core this process may use"),
        "precision": Choice("fp32", ("fp32", "bf16", "int8"),   # VGGish only; see operators/models/vggish.py
                            doc="VGGish only: fp32 (exact), bf16 (AVX512-BF16/AMX CPUs, else fp32 with a "
                                "warning), int8 (dynamic-range TFLite on XNNPACK, about 3.5x fp32); YAMNet runs "
                                "its TFLite model whatever this says"),
    },
    "heads": {
        "dir": Str("heads",
                   doc="folder of the head files (`<backend>/music.json`, `talkover.json`, `genre.json`); "
                       "relative to the config file's folder, or to the working directory when given with "
                       "--set; not given: the heads onair ships"),
    },
    "hmm": {
        "lag_frames": Int(5, 0, 60, unit="frames",
                          doc="decision delay: frame t is decided when frame t + lag has arrived "
                              "(4 = 3.84 s after the frame's audio ends)"),
        "p_enter_music": Float(None, 1e-9, 0.5, optional=True, unit="per frame",
                               doc="probability of going from non-music to music; null = the value fitted by "
                                   "`onair train` and stored with the head"),
        "p_leave_music": Float(None, 1e-9, 0.5, optional=True, unit="per frame",
                               doc="probability of going from music to non-music; null = the value stored with "
                                   "the head"),
        "emission_weight": Float(None, 0.01, 10.0, optional=True,
                                 doc="weight of the head's evidence; null = the calibrated value stored with the "
                                     "head; below 1 trusts the transitions more"),
    },
    "debounce": {
        "min_music_s": Float(12.0, 1.0, 120.0,
                             doc="a song must last this long (boundaries known) before it costs anything; idents "
                                 "and jingles run 3-8 s on air"),
        "first_request_s": Float(8.0, 0.0, 120.0,
                                 doc="with the fingerprint index on: a new song is asked about once it has lasted "
                                     "this long to the newest audio, before its boundaries are confirmed "
                                     "(repeats are then answered from the index, free); 0 = wait for "
                                     "`min_music_s`"),
        "index_start_wait_s": Float(4.0, 0.0, 30.0,
                                    doc="a song the index began (a recording's predicted end passed, or the "
                                        "recording changed) is asked about this much later than "
                                        "`first_request_s`, with the newest audio: stations put jingles there"),
        "talk_intro_s": Float(4.0, 0.0, 12.0,
                              doc="with the fingerprint index on: a song that starts as clean music straight "
                                  "after 2-15 s of music under speech (a presenter talking over its intro; an "
                                  "advert's voice runs over its whole bed) is asked about once it has lasted "
                                  "this long to the newest audio, instead of `first_request_s`; 0 = off"),
        "clip_s": Float(10.0, 3.0, 12.0, doc="seconds of audio sent for recognition (providers take 3-12)"),
        "lead_in_s": Float(1.5, 0.0, 30.0, doc="the clip starts this far into the song, after the fade-in"),
        "requery_after_s": Float(240.0, 30.0, 86400.0,
                                 doc="ask again within one long run of music after this long"),
        "cooldown_s": Float(20.0, 0.0, 3600.0, doc="at least this long between two requests of a channel"),
        "window_frames": Int(6, 2, 60, unit="frames",
                             doc="change-point windows (x 0.96 s) on each side of a candidate song boundary"),
        "novelty_high": Float(2.0, 0.0, 2.0,
                              doc="cosine distance between the windows that alone marks a new song; 2 (the "
                                  "maximum) = off, since intros, breaks and texture changes move the embedding "
                                  "as much as a new record"),
        "novelty_low": Float(0.25, 0.0, 2.0,
                             doc="cosine distance between the windows that, with a level dip, marks a new song"),
        "dip_db": Float(20.0, 0.0, 120.0, doc="the level dip: the fade or gap between two records"),
        "max_self_similarity": Float(0.8, -1.0, 1.0,
                                     doc="the new material must resemble no earlier part of the song this much "
                                         "(cosine similarity)"),
        "gap_keep_s": Float(8.0, 0.0, 600.0, doc="a non-music gap shorter than this does not end the song"),
        "talkover_threshold": Float(0.5, 0.0, 1.0,   # 1 = the talk-over head is ignored
                                    doc="frames the talk-over head scores above this are speech over a music bed "
                                        "(adverts): a gap, never paid for; 1 = off"),
        "same_chroma": Float(0.5, -1.0, 2.0,         # above 1 = the recording-identity test is off
                             doc="a boundary whose two sides correlate this much in harmony (chroma), and in "
                                 "pulse (`same_tempo`), is a break inside one record: no new song; above 1 = off"),
        "same_tempo": Float(0.5, -1.0, 2.0,
                            doc="the same for pulse (onset autocorrelation); above 1 = off"),
        "identity_before_s": Float(20.0, 6.0, 120.0,
                                   doc="audio before a candidate boundary compared with the audio after it"),
        "identity_after_s": Float(10.0, 6.0, 30.0, doc="audio after a candidate boundary compared"),
        "restart_on_early_dip": Bool(True,
                                     doc="a level dip before a song has lasted `min_music_s` (a jingle run into "
                                         "a record) starts the song there"),
        "audio_codec": Choice("flac", ("flac", "wav"), doc="codec of the clip sent (wav = 16-bit PCM)"),
        "history_s": Float(45.0, 15.0, 600.0,
                           doc="audio kept per channel to cut clips from and to test boundaries; must cover "
                               "`identity_before_s`, the boundary test's windows, the HMM lag and "
                               "`kafka.chunk_s` (checked at load: 35.5 s with the defaults)"),
    },
    "recognition": {
        "provider": Choice("none", ("none", "acrcloud", "audd"),
                           doc="recognition provider; none = requests are made and counted, nothing is sent"),
        "currency": Str("USD", doc="currency of prices, money caps and the ledger"),
        "ledger": Str("ledger.jsonl",          # relative paths: inside the output dir (run) or cwd
                      doc="cost ledger (JSONL); relative = inside the output dir of `onair run`, else the "
                          "working directory"),
        "timeout_s": Float(10.0, 0.1, 300.0, doc="timeout of one provider call"),
        "max_retries": Int(4, 0, 20, doc="retries on 5xx, timeouts and 429 (Retry-After honoured)"),
        "backoff_s": Float(0.5, 0.0, 60.0, doc="first retry delay, doubled after each retry"),
        "rate_per_s": Float(5.0, 0.01, 1000.0, unit="calls/s", doc="calls per second to the provider, at most"),
        "channel_hour_requests": OptInt(30, 0, 10**9, unit="requests",
                                        doc="cap per channel per hour; null = none; a capped request is not "
                                            "sent, it is recorded as budget_skipped"),
        "channel_day_requests": OptInt(400, 0, 10**9, unit="requests", doc="cap per channel per day; null = none"),
        "channel_hour_money": Float(None, 0.0, 1e9, optional=True, unit="currency",
                                    doc="money cap per channel per hour; null = none"),
        "channel_day_money": Float(None, 0.0, 1e9, optional=True, unit="currency",
                                   doc="money cap per channel per day; null = none"),
        "global_day_requests": OptInt(None, 0, 10**9, unit="requests",
                                      doc="cap on all channels' requests per day; null = none"),
        "global_day_money": Float(50.0, 0.0, 1e9, optional=True, unit="currency",
                                  doc="cap on all channels' spend per day; null = none"),
        "monthly_budget": Float(500.0, 0.0, 1e12, unit="currency",   # exported for the burn-rate alerts
                                doc="exported as `onair_recognition_budget_monthly_<currency>` for the burn-rate "
                                    "alerts"),
        "acrcloud_url": Str("https://identify-eu-west-1.acrcloud.com/v1/identify",
                            doc="ACRCloud identify endpoint"),
        "acrcloud_access_key_env": Str("ACRCLOUD_ACCESS_KEY",
                                       doc="environment variable holding the ACRCloud access key"),
        "acrcloud_access_key_file": Str(None, optional=True,
                                        doc="file holding the ACRCloud access key; when set, read instead of the "
                                            "variable"),
        "acrcloud_access_secret_env": Str("ACRCLOUD_ACCESS_SECRET",
                                          doc="environment variable holding the ACRCloud access secret"),
        "acrcloud_access_secret_file": Str(None, optional=True,
                                           doc="file holding the ACRCloud access secret; when set, read instead "
                                               "of the variable"),
        "acrcloud_price": Float(0.0025, 0.0, 100.0, unit="currency", doc="price of one ACRCloud request"),
        "audd_url": Str("https://api.audd.io/", doc="AudD endpoint"),
        "audd_api_token_env": Str("AUDD_API_TOKEN", doc="environment variable holding the AudD API token"),
        "audd_api_token_file": Str(None, optional=True,
                                   doc="file holding the AudD API token; when set, read instead of the variable"),
        "audd_price": Float(0.005, 0.0, 100.0, unit="currency", doc="price of one AudD request"),
    },
    "identity": {
        "enabled": Bool(True, doc="match clips against the local fingerprint index before paying"),
        "backend": Choice("sqlite", ("sqlite", "postgres"),
                          doc="sqlite: one file per deployment (WAL; one writer, many readers); postgres: one "
                              "index shared by several machines"),
        "path": Str("fingerprints.sqlite",    # relative paths: inside the output dir (run) or cwd
                    doc="SQLite file; relative = inside the output dir of `onair run`, else the working directory"),
        "postgres_dsn_env": Str("ONAIR_INDEX_DSN",
                                doc="environment variable holding the PostgreSQL connection string (backend "
                                    "postgres)"),
        "postgres_dsn_file": Str(None, optional=True,
                                 doc="file holding the PostgreSQL connection string; when set, read instead of the "
                                     "variable"),
        "unknown_window_days": Float(7.0, 0.0, 3650.0, unit="days",
                                     doc="an item the provider did not know is not paid again for this long "
                                         "(known_unidentified); then asked once more"),
        "min_aligned": Int(25, 5, 10000, unit="hashes",
                           doc="a match needs this many landmark hashes at one time offset"),
        "min_coverage": Float(0.5, 0.0, 1.0,
                              doc="... spanning this share of the query (a clip straddling two recordings "
                                  "matches neither)"),
        "peaks_per_s": Int(22, 4, 64, doc="spectral peaks kept per second (changing it needs a new index)"),
        "min_clip_s": Float(3.0, 1.0, 30.0, doc="shorter clips are not looked up: sent as they are"),
        "check_every_s": Float(2.0, 0.5, 60.0,
                               doc="the engine checks what plays against the index this often while music is on"),
        "check_window_s": Float(6.0, 3.0, 30.0, doc="seconds of the channel's newest audio each check reads"),
        "misses_to_change": Int(3, 1, 20,
                                doc="checks in a row that no longer find the recording identified, inside the "
                                    "part the index holds, before a new song starts"),
    },
    "genre": {
        "min_music_s": Float(12.0, 1.0, 3600.0, doc="a song's first genre record once it has lasted this long (songs "
                                                             "as the requests see them)"),
        "update_s": Float(30.0, 1.0, 86400.0,
                          doc="then at most this often while it plays (and when the provider's genres "
                              "become known), and a final one when it closes"),
        "top_k": Int(3, 1, 100, unit="tags", doc="tags per record, best first"),
        "audioset_weight": Float(0.3, 0.0, 1.0,
                                 doc="YAMNet only: weight of its own AudioSet genre classes in the blend "
                                     "(0 = the head alone)"),
        "audioset_map": GenreMap(AUDIOSET_GENRES,
                                 doc="our genre -> YAMNet AudioSet classes (display names of "
                                     "`yamnet_class_map.csv`)"),
    },
    "source": {
        "audio_track": Track("first", doc="audio track: the first, the N-th audio track, by ISO 639 language, "
                                          "or by MPEG-TS PID (decimal or 0x hex)"),
        "live": AutoBool("auto", doc="auto: network URLs are live (reconnect), paths are files (end at EOF); "
                                     "true or false forces it"),
        "open_timeout_s": Float(10.0, 0.1, 600.0, doc="timeout to open a source"),
        "read_timeout_s": Float(5.0, 0.1, 600.0, doc="a read waiting longer fails (a live source reconnects)"),
        "reconnect_min_s": Float(1.0, 0.0, 600.0,
                                 doc="first reconnect delay of a live source, doubled after each failure"),
        "reconnect_max_s": Float(30.0, 0.0, 3600.0,
                                 doc="longest reconnect delay; must be >= `reconnect_min_s`"),
        "watchdog_s": Float(15.0, 0.5, 3600.0, doc="restart a live source that delivers no audio this long"),
        "max_gap_s": Float(5.0, 0.0, 3600.0,
                           doc="a forward PTS jump up to this long is a gap (kept in stream time); a larger or "
                               "backward one is a discontinuity"),
        "min_no_signal_s": Float(1.0, 0.1, 3600.0,
                                 doc="a gap in a source's audio this long (an outage, a reconnect) is written as "
                                     "a `no_signal` segment; shorter ones stay inside the segment around them"),
        "clock_resync_s": Float(5.0, 0.5, 3600.0,
                                doc="live and Kafka clocks: audio arriving this much later than the stream's "
                                    "anchor to UTC, for `clock_resync_hold_s`, re-anchors it"),
        "clock_resync_hold_s": Float(30.0, 0.0, 86400.0,
                                     doc="how long late arrival must last before the clock re-anchors"),
        "pace": Float(0.0, 0.0, 10000.0,
                      doc="`onair run` on files: read them at this many times real time (1 = as if live, "
                          "to test an overlay or replay a day; 0 = as fast as the machine allows)"),
    },
    "kafka": {
        "bootstrap_servers": Str("127.0.0.1:19092",
                                 doc="brokers, comma-separated; the default is `onair broker start`'s"),
        "api_version": Str("0.9", optional=True,       # null = negotiate (Kafka 1.0+ brokers)
                           doc="protocol version of the local Kafka 0.9 broker; null = negotiate (Kafka 1.0+, "
                               "3.x/4.x in production)"),
        "client_id": Str("onair", doc="client id the broker sees"),
        "security_protocol": Choice("PLAINTEXT", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
                                    doc="how to reach the brokers"),
        "sasl_mechanism": Choice("PLAIN", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                                 doc="SASL mechanism (with SASL_*)"),
        "sasl_username": Str(None, optional=True, doc="SASL user name"),
        "sasl_password_env": Str("ONAIR_KAFKA_PASSWORD", doc="environment variable holding the SASL password"),
        "sasl_password_file": Str(None, optional=True,
                                  doc="file holding the SASL password; when set, read instead of the variable"),
        "ssl_cafile": Str(None, optional=True, doc="CA bundle that verifies the brokers (SSL)"),
        "ssl_certfile": Str(None, optional=True, doc="client certificate (mutual TLS)"),
        "ssl_keyfile": Str(None, optional=True, doc="client key (mutual TLS)"),
        "topic_media": Str("onair.media", doc="media chunks from `onair ingest` (key = channel)"),
        "topic_segments": Str("onair.segments", doc="segment records"),
        "topic_dlq": Str("onair.media.dlq", doc="dead letters: media messages a worker could not read"),
        "topic_requests_dlq": Str("onair.requests.dlq",
                                  doc="dead letters: request records `onair recognize --kafka` could not send"),
        "topic_requests": Str("onair.recognition.requests", doc="recognition requests"),
        "topic_nowplaying": Str("onair.nowplaying", doc="now-playing records"),
        "topic_corrections": Str("onair.corrections",
                                 doc="airplay corrections: earlier plays of an item the provider has since "
                                     "identified"),
        "topic_genres": Str("onair.genres", doc="genre records"),
        "topic_state": Str("onair.state", doc="compacted changelog of per-channel state (failover)"),
        "state_every_s": Float(10.0, 0.0, 3600.0,   # 0 = every poll
                               doc="a channel's state goes to the changelog at most this often (and when its "
                                   "source ends); offsets are committed only up to what a state covers, so a "
                                   "failover replays at most this much; 0 = every poll"),
        "overlap": Bool(True, doc="embed one poll's frames while the next poll is read and decoded"),
        "partitions": Int(4, 1, 10000, doc="partitions of the topics onair creates: the most workers that can "
                                           "share the work"),
        "group_id": Str("onair-workers", doc="consumer group of the workers"),
        "chunk_bytes": Int(256 * 1024, 188 * 8, 64 * 1024 * 1024,
                           doc="media chunk size (MPEG-TS, whole packets), or `chunk_s`, whichever first"),
        "chunk_s": Float(2.0, 0.05, 600.0, doc="media per chunk at most (bounds live latency)"),
        "linger_ms": Int(5, 0, 60000, doc="producer wait for a batch to fill"),
        "batch_bytes": Int(1024 * 1024, 1024, 256 * 1024 * 1024, doc="producer batch size"),
        "max_message_bytes": Int(4 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024,
                                 doc="largest message produced (fetch sizes follow from it)"),
        "compression": Choice("none", ("none", "gzip"), doc="producer compression"),
        "buffer_bytes": Int(64 * 1024 * 1024, 1024 * 1024, 4 * 1024 * 1024 * 1024,
                            doc="producer buffer that rides out a broker outage before the source is held"),
        "max_block_s": Float(120.0, 1.0, 3600.0,
                             doc="how long a send waits for room in a full buffer before ingest holds the chunk "
                                 "and tries again"),
        "session_timeout_ms": Int(6000, 1000, 600000,
                                  doc="how fast a dead worker's channels move to the others"),
        "heartbeat_ms": Int(1000, 100, 60000, doc="consumer heartbeat interval"),
        "max_poll_records": Int(64, 1, 100000, unit="records", doc="records per poll, at most"),
        "poll_ms": Int(200, 1, 60000, doc="longest wait of one poll"),
    },
    "metrics": {
        "address": Str("127.0.0.1",             # 0.0.0.0 in containers, so Prometheus can scrape
                       doc="bind address of /metrics; 0.0.0.0 in containers, so Prometheus can scrape"),
        "port": Int(0, 0, 65535,                # 0 = no /metrics endpoint (each command takes --metrics-port)
                    doc="/metrics port of long-running commands; 0 = off (each command takes --metrics-port)"),
        "music_channels": StrList((),           # channels expected to carry music (alert when none for hours)
                                  doc="channels that should carry music: OnairNoMusicDetected fires when they "
                                      "do not"),
    },
    "overlay": {
        "host": Str("127.0.0.1",                # anything but a loopback address needs a token
                    doc="bind address; anything but loopback is refused unless a token is set"),
        "port": Int(8765, 0, 65535, doc="HTTP port; 0 = any free port (logged)"),   # 0 = any free port (logged)
        "token_env": Str("ONAIR_OVERLAY_TOKEN", doc="environment variable holding the overlay's access token"),
        "token_file": Str(None, optional=True,
                          doc="file holding the access token; when set, read instead of the variable. A token "
                              "set = every request needs it"),
        "hold_s": Float(10.0, 0.0, 3600.0, doc="a card, once shown, stays at least this long (wall clock)"),
        "clear_s": Float(3.0, 0.0, 3600.0, doc="the card goes this long after the music ends"),
        "stale_s": Float(300.0, 1.0, 86400.0, optional=True,
                         doc="... or after this long with no record of the channel while music is on; "
                             "null = never"),
        "heartbeat_s": Float(15.0, 0.5, 3600.0,
                             doc="Server-Sent Events keep-alive; a page that hears nothing for 3x this hides "
                                 "the card"),
        "idle_timeout_s": Float(30.0, 1.0, 3600.0,
                                doc="a client that sends no request, or reads no event, this long is "
                                    "disconnected"),
        "max_clients": Int(256, 1, 100000, doc="connections served at once; more get 503 at once"),
        "replay_records": Int(1000, 0, 10**9, unit="records",
                              doc="--kafka: records per partition read back at start to rebuild the cards"),
    },
    "runtime": {
        "queue_frames": Int(512, 1, 1_000_000, unit="frames",
                            doc="frames cut but not yet embedded; feeding waits beyond this (bounds memory)"),
        "log_level": Choice("INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), doc="log level of every command"),
    },
}

# What the runtime reads from the environment besides the secrets named by `*_env` keys, for the docs.
ENVIRONMENT: dict[str, str] = {
    "ONAIR_MODEL_DIR": "a folder laid out like `../shared/models` (`yamnet/yamnet.tflite`, "
                       "`yamnet/yamnet_class_map.csv`, `vggish/` a TF-Hub SavedModel folder); a model missing "
                       "there is loaded from its TF-Hub handle. `onair demo` sets it to `../shared/models` when unset",
    "ONAIR_CACHE": "cache folder for converted models (`models/`, e.g. VGGish int8) and the local Kafka "
                   "distribution; default `~/.cache/onair`",
    "TFHUB_CACHE_DIR": "TF-Hub's own download cache, for models loaded from a handle",
    "TF_CPP_MIN_LOG_LEVEL": "TensorFlow's C++ log level; the `onair` command sets 3 (errors only) unless it is set",
}


def defaults() -> dict:
    return {sec: {k: spec.default for k, spec in keys.items()} for sec, keys in SCHEMA.items()}


def validate(raw: Any, source: str = "config") -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections {sorted(SCHEMA)}, got {type(raw).__name__}")
    cfg = defaults()
    for sec, body in raw.items():
        if sec not in SCHEMA:
            raise ConfigError(f"config key '{sec}': unknown section (known: {', '.join(SCHEMA)})")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"config key '{sec}': expected a mapping, got {body!r}")
        for k, v in body.items():
            if k not in SCHEMA[sec]:
                raise ConfigError(f"config key '{sec}.{k}': unknown key (known: {', '.join(SCHEMA[sec])})")
            cfg[sec][k] = SCHEMA[sec][k].check(f"{sec}.{k}", v)
    if cfg["source"]["reconnect_max_s"] < cfg["source"]["reconnect_min_s"]:
        raise ConfigError("config key 'source.reconnect_max_s': must be >= source.reconnect_min_s")
    from operators.decisions.debounce import DebounceParams, history_needed_s
    d = cfg["debounce"]
    need = history_needed_s(DebounceParams.from_config(d), cfg["hmm"]["lag_frames"], cfg["kafka"]["chunk_s"])
    if d["history_s"] < need:
        raise ConfigError(f"config key 'debounce.history_s': must be >= {need:.1f} s (identity_before_s, the "
                          f"boundary test's windows, the HMM lag and kafka.chunk_s), so the audio before a song "
                          f"boundary is still held when it is tested")
    return cfg


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = copy.deepcopy(raw or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. embedding.batch_size=32")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"config key '{key}': expected SECTION.KEY")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        raw.setdefault(parts[0], {})
        if not isinstance(raw[parts[0]], dict):
            raw[parts[0]] = {}
        raw[parts[0]][parts[1]] = parsed
    return raw


class StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last one silently:
    a budget cap written twice would take whichever came last)."""


def _no_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    overrides = overrides or []
    cfg = validate(apply_overrides(raw, overrides), str(path))
    # heads.dir: given with --set, relative to the working directory; written in the config file,
    # relative to that file's folder (a config works from any working directory); not given,
    # the heads onair ships (configs/heads)
    if any(o.split("=", 1)[0].strip() == "heads.dir" for o in overrides):
        base = Path.cwd()
    elif isinstance(raw, dict) and isinstance(raw.get("heads"), dict) and "dir" in raw["heads"]:
        base = path.parent
    else:
        base = DEFAULT_CONFIG.parent
    cfg["heads"]["dir"] = str((base / cfg["heads"]["dir"]).resolve())
    return cfg
