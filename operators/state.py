"""Arrays in JSON state snapshots as base64 of their little-endian bytes: a quarter of the
size of a JSON list of floats, and exact, so that a channel resumed from a snapshot decides
and tags exactly as one that never stopped."""
from __future__ import annotations

import base64

import numpy as np


def to_text(a, dtype: str = "<f4") -> str | None:
    return None if a is None else base64.b64encode(np.asarray(a, dtype).tobytes()).decode()


def from_text(v, dtype: str = "<f4") -> np.ndarray | None:
    """Inverse of to_text (a writable copy); JSON lists, as older snapshots kept, are read too."""
    if v is None:
        return None
    if isinstance(v, str):
        return np.frombuffer(base64.b64decode(v), dtype).copy()
    return np.asarray(v, dtype)
