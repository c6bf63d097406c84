"""Records read from outside: one JSON object per line, bounded in size and depth.

Files and topics that onair follows can be written by other tools, or damaged. A line that is
too long, too deeply nested (Python's parser raises RecursionError, which a follower thread
would die of), not JSON or not an object is refused with a reason; the caller names the file
and line (or topic and offset), counts it and goes on.
"""
from __future__ import annotations

import json

MAX_LINE_BYTES = 16 << 20      # a request carries a 10-12 s clip: about 0.5 MB of base64 FLAC
MAX_DEPTH = 32                 # onair's own records nest 3 deep


class BadLine(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason       # a metric label: too_long | too_deep | not_json | not_object


def loads_record(raw: str | bytes) -> dict:
    """The JSON object of one line, or BadLine."""
    if len(raw) > MAX_LINE_BYTES:
        raise BadLine("too_long", f"line of {len(raw)} bytes, more than {MAX_LINE_BYTES}")
    try:
        d = json.loads(raw)
    except RecursionError:
        raise BadLine("too_deep", f"JSON nested more than {MAX_DEPTH} deep") from None
    except (ValueError, TypeError) as e:
        raise BadLine("not_json", f"not JSON ({e})") from None
    if not isinstance(d, dict):
        raise BadLine("not_object", f"not a JSON object but {type(d).__name__}")
    if _depth(d) > MAX_DEPTH:
        raise BadLine("too_deep", f"JSON nested more than {MAX_DEPTH} deep")
    return d


def _depth(obj) -> int:
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        if isinstance(o, dict):
            todo += [(v, d + 1) for v in o.values() if isinstance(v, (dict, list))]
        elif isinstance(o, list):
            todo += [(v, d + 1) for v in o if isinstance(v, (dict, list))]
    return deepest
