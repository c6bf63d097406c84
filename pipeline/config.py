"""Pipeline configuration: YAML validated against an explicit schema.

Every key has a type, a range or a set of choices and a default; an unknown
key or a bad value raises ConfigError naming the dotted key and what was
expected, so a broken config stops the process with one clear line.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "pipeline.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Int:
    default: int
    lo: int | None = None
    hi: int | None = None

    def check(self, key, v):
        if isinstance(v, bool) or not isinstance(v, int) or (self.lo is not None and v < self.lo) \
                or (self.hi is not None and v > self.hi):
            raise ConfigError(f"config key '{key}': expected an integer in [{self.lo}, {self.hi}], got {v!r}")
        return v


@dataclass(frozen=True)
class OptInt:
    """An integer in range, or null (no limit)."""
    default: int | None
    lo: int = 0
    hi: int = 10**9

    def check(self, key, v):
        if v is None:
            return None
        return Int(0, self.lo, self.hi).check(key, v)


@dataclass(frozen=True)
class Float:
    default: float | None
    lo: float | None = None
    hi: float | None = None
    optional: bool = False

    def check(self, key, v):
        if v is None and self.optional:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.lo is not None and v < self.lo) \
                or (self.hi is not None and v > self.hi):
            opt = " or null" if self.optional else ""
            raise ConfigError(f"config key '{key}': expected a number in [{self.lo}, {self.hi}]{opt}, got {v!r}")
        return float(v)


@dataclass(frozen=True)
class Choice:
    default: str
    choices: tuple

    def check(self, key, v):
        if v not in self.choices:
            raise ConfigError(f"config key '{key}': expected one of {', '.join(map(str, self.choices))}, got {v!r}")
        return v


@dataclass(frozen=True)
class Bool:
    default: bool

    def check(self, key, v):
        if isinstance(v, bool):
            return v
        raise ConfigError(f"config key '{key}': expected true or false, got {v!r}")


@dataclass(frozen=True)
class AutoBool:
    """`auto`, or a YAML boolean (true/false, yes/no)."""
    default: object = "auto"

    def check(self, key, v):
        if v == "auto" or isinstance(v, bool):
            return v
        raise ConfigError(f"config key '{key}': expected auto, true or false, got {v!r}")


@dataclass(frozen=True)
class Str:
    default: str | None
    optional: bool = False

    def check(self, key, v):
        if v is None and self.optional:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(f"config key '{key}': expected a non-empty string, got {v!r}")
        return v


@dataclass(frozen=True)
class Track:
    """Audio track selector: first | index:N | lang:CODE | pid:N (decimal or 0x hex)."""
    default: str = "first"

    def check(self, key, v):
        import re
        if not isinstance(v, str) or not re.fullmatch(r"first|index:\d+|lang:[A-Za-z]{2,3}|pid:(0x[0-9a-fA-F]+|\d+)", v):
            raise ConfigError(f"config key '{key}': expected first, index:N, lang:CODE or pid:N, got {v!r}")
        return v


@dataclass(frozen=True)
class StrList:
    default: tuple = ()

    def check(self, key, v):
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise ConfigError(f"config key '{key}': expected a list of names, got {v!r}")
        return v


@dataclass(frozen=True)
class GenreMap:
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

SCHEMA: dict[str, dict[str, Any]] = {
    "embedding": {
        "backend": Choice("yamnet", ("yamnet", "vggish")),
        "yamnet_handle": Str("https://tfhub.dev/google/yamnet/1"),
        "vggish_handle": Str("https://tfhub.dev/google/vggish/1"),
        "batch_size": Int(64, 1, 4096),
        "max_wait_ms": Float(20.0, 0.0, 10000.0),
        "threads": Int(0, 0, 256),
        "precision": Choice("fp32", ("fp32", "bf16", "int8")),   # VGGish only; see operators/models/vggish.py
    },
    "heads": {
        "dir": Str("heads"),   # relative to the config file's folder
    },
    "hmm": {
        "lag_frames": Int(5, 0, 60),
        "p_enter_music": Float(None, 1e-9, 0.5, optional=True),
        "p_leave_music": Float(None, 1e-9, 0.5, optional=True),
        "emission_weight": Float(None, 0.01, 10.0, optional=True),
    },
    "debounce": {
        "min_music_s": Float(12.0, 1.0, 120.0),
        "clip_s": Float(10.0, 3.0, 12.0),
        "lead_in_s": Float(1.5, 0.0, 30.0),
        "requery_after_s": Float(240.0, 30.0, 86400.0),
        "cooldown_s": Float(20.0, 0.0, 3600.0),
        "window_frames": Int(6, 2, 60),
        "novelty_high": Float(2.0, 0.0, 2.0),
        "novelty_low": Float(0.25, 0.0, 2.0),
        "dip_db": Float(20.0, 0.0, 120.0),
        "max_self_similarity": Float(0.8, -1.0, 1.0),
        "gap_keep_s": Float(8.0, 0.0, 600.0),
        "talkover_threshold": Float(0.5, 0.0, 1.0),   # 1 = the talk-over head is ignored
        "same_chroma": Float(0.5, -1.0, 2.0),         # above 1 = the recording-identity test is off
        "same_tempo": Float(0.5, -1.0, 2.0),
        "identity_before_s": Float(20.0, 6.0, 120.0),
        "identity_after_s": Float(10.0, 6.0, 30.0),
        "restart_on_early_dip": Bool(True),
        "audio_codec": Choice("flac", ("flac", "wav")),
        "history_s": Float(45.0, 15.0, 600.0),
    },
    "recognition": {
        "provider": Choice("none", ("none", "acrcloud", "audd")),
        "currency": Str("USD"),
        "ledger": Str("ledger.jsonl"),          # relative paths: inside the output dir (run) or cwd
        "timeout_s": Float(10.0, 0.1, 300.0),
        "max_retries": Int(4, 0, 20),
        "backoff_s": Float(0.5, 0.0, 60.0),
        "rate_per_s": Float(5.0, 0.01, 1000.0),
        "channel_hour_requests": OptInt(30, 0, 10**9),
        "channel_day_requests": OptInt(400, 0, 10**9),
        "channel_hour_money": Float(None, 0.0, 1e9, optional=True),
        "channel_day_money": Float(None, 0.0, 1e9, optional=True),
        "global_day_requests": OptInt(None, 0, 10**9),
        "global_day_money": Float(50.0, 0.0, 1e9, optional=True),
        "monthly_budget": Float(500.0, 0.0, 1e12),    # exported for the burn-rate alerts
        "acrcloud_url": Str("https://identify-eu-west-1.acrcloud.com/v1/identify"),
        "acrcloud_access_key_env": Str("ACRCLOUD_ACCESS_KEY"),
        "acrcloud_access_key_file": Str(None, optional=True),
        "acrcloud_access_secret_env": Str("ACRCLOUD_ACCESS_SECRET"),
        "acrcloud_access_secret_file": Str(None, optional=True),
        "acrcloud_price": Float(0.0025, 0.0, 100.0),
        "audd_url": Str("https://api.audd.io/"),
        "audd_api_token_env": Str("AUDD_API_TOKEN"),
        "audd_api_token_file": Str(None, optional=True),
        "audd_price": Float(0.005, 0.0, 100.0),
    },
    "genre": {
        "min_music_s": Float(12.0, 1.0, 3600.0),
        "update_s": Float(30.0, 1.0, 86400.0),
        "top_k": Int(3, 1, 100),
        "audioset_weight": Float(0.3, 0.0, 1.0),
        "audioset_map": GenreMap(AUDIOSET_GENRES),
    },
    "source": {
        "audio_track": Track("first"),
        "live": AutoBool("auto"),
        "open_timeout_s": Float(10.0, 0.1, 600.0),
        "read_timeout_s": Float(5.0, 0.1, 600.0),
        "reconnect_min_s": Float(1.0, 0.0, 600.0),
        "reconnect_max_s": Float(30.0, 0.0, 3600.0),
        "watchdog_s": Float(15.0, 0.5, 3600.0),
        "max_gap_s": Float(5.0, 0.0, 3600.0),
    },
    "kafka": {
        "bootstrap_servers": Str("127.0.0.1:19092"),
        "api_version": Str("0.9", optional=True),       # null = negotiate (Kafka 1.0+ brokers)
        "client_id": Str("onair"),
        "security_protocol": Choice("PLAINTEXT", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
        "sasl_mechanism": Choice("PLAIN", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
        "sasl_username": Str(None, optional=True),
        "sasl_password_env": Str("ONAIR_KAFKA_PASSWORD"),
        "sasl_password_file": Str(None, optional=True),
        "ssl_cafile": Str(None, optional=True),
        "ssl_certfile": Str(None, optional=True),
        "ssl_keyfile": Str(None, optional=True),
        "topic_media": Str("onair.media"),
        "topic_segments": Str("onair.segments"),
        "topic_dlq": Str("onair.media.dlq"),
        "topic_requests": Str("onair.recognition.requests"),
        "topic_nowplaying": Str("onair.nowplaying"),
        "topic_genres": Str("onair.genres"),
        "topic_state": Str("onair.state"),
        "state_every_s": Float(10.0, 0.0, 3600.0),   # 0 = every poll
        "overlap": Bool(True),
        "partitions": Int(4, 1, 10000),
        "group_id": Str("onair-workers"),
        "chunk_bytes": Int(256 * 1024, 188 * 8, 64 * 1024 * 1024),
        "chunk_s": Float(2.0, 0.05, 600.0),
        "linger_ms": Int(5, 0, 60000),
        "batch_bytes": Int(1024 * 1024, 1024, 256 * 1024 * 1024),
        "max_message_bytes": Int(4 * 1024 * 1024, 64 * 1024, 256 * 1024 * 1024),
        "compression": Choice("none", ("none", "gzip")),
        "buffer_bytes": Int(64 * 1024 * 1024, 1024 * 1024, 4 * 1024 * 1024 * 1024),
        "max_block_s": Float(120.0, 1.0, 3600.0),
        "session_timeout_ms": Int(6000, 1000, 600000),
        "heartbeat_ms": Int(1000, 100, 60000),
        "max_poll_records": Int(64, 1, 100000),
        "poll_ms": Int(200, 1, 60000),
    },
    "metrics": {
        "address": Str("127.0.0.1"),             # 0.0.0.0 in containers, so Prometheus can scrape
        "port": Int(0, 0, 65535),                # 0 = no /metrics endpoint (each command takes --metrics-port)
        "music_channels": StrList(()),           # channels expected to carry music (alert when none for hours)
    },
    "overlay": {
        "host": Str("127.0.0.1"),                # anything but a loopback address needs a token
        "port": Int(8765, 0, 65535),             # 0 = any free port (logged)
        "token_env": Str("ONAIR_OVERLAY_TOKEN"),
        "token_file": Str(None, optional=True),
        "hold_s": Float(10.0, 0.0, 3600.0),
        "clear_s": Float(3.0, 0.0, 3600.0),
        "stale_s": Float(300.0, 1.0, 86400.0, optional=True),
        "heartbeat_s": Float(15.0, 0.5, 3600.0),
        "replay_records": Int(1000, 0, 10**9),
    },
    "runtime": {
        "queue_frames": Int(512, 1, 1_000_000),
        "log_level": Choice("INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    },
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


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    cfg = validate(apply_overrides(raw, overrides or []), str(path))
    # relative to the config file, so a config works from any working directory
    cfg["heads"]["dir"] = str((path.parent / cfg["heads"]["dir"]).resolve())
    return cfg
