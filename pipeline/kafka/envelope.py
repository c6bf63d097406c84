"""The media record envelope: Kafka 0.9 has no record headers, so per-chunk
metadata travels inside the value.

    value = b"OAM1" + JSON header (UTF-8, one line) + b"\\n" + payload

Header keys: `v` (1), `channel`, `session` (id of one ingest run of the
channel), `seq` (chunk number within the session, from 0), `wall` (source wall
clock, Unix seconds, when the chunk was cut), `kind` ("media" | "eos": the
source ended), `disc` (true when the source reconnected or jumped before this
chunk), `format` ("mpegts"), `audio_only` (bool). The payload of a media chunk
is a self-contained MPEG-TS file (PAT/PMT first, whole PES packets).
"""
from __future__ import annotations

import json

MAGIC = b"OAM1"


class EnvelopeError(ValueError):
    pass


def pack(header: dict, payload: bytes = b"") -> bytes:
    return MAGIC + json.dumps({"v": 1, **header}, separators=(",", ":")).encode() + b"\n" + payload


def unpack(value: bytes) -> tuple[dict, bytes]:
    if not value or not value.startswith(MAGIC):
        raise EnvelopeError("not an onair media envelope (bad magic)")
    end = value.find(b"\n", len(MAGIC))
    if end < 0:
        raise EnvelopeError("envelope header not terminated")
    try:
        header = json.loads(value[len(MAGIC):end])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EnvelopeError(f"envelope header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("v") != 1 or "channel" not in header or "kind" not in header:
        raise EnvelopeError("envelope header lacks v=1, channel or kind")
    return header, value[end + 1:]
