"""UTC for stream time: where a run's real time comes from, and how records write it.

Every record carries UTC (ISO 8601, milliseconds, `Z`) beside its stream-time fields,
and says which clock gave it (`clock`):

- `given`: `onair run --start-time ISO`, the UTC of stream time 0 of every file input;
- `container`: a file's `creation_time` tag;
- `run_start`: neither, the wall clock when the run started;
- `live`: a live source, the receive clock anchored to the stream;
- `ingest`: Kafka mode, the ingest envelope's wall clock.

A fixed clock (the first three) is an offset: UTC = offset + stream time. A tracking
clock (live, ingest) observes, per delivery, the wall clock at which the newest sample
arrived. The earliest arrival relative to stream time is the truest (a delivery only
ever comes late: network, buffers, HLS segments arriving in bursts), so the offset
follows a new minimum at once, rises towards later arrivals only at a drift rate (a
sender's sample clock runs a few ppm apart from ours), and jumps to a later arrival
that has lasted `resync_hold_s` beyond `resync_s` (a splice the stream's timestamps
do not show). Each change of offset is an anchor at the stream time it takes effect;
UTC of a stream time uses the anchor in force then, so a replayed stretch (Kafka
failover) gets exactly the UTC, and the ids, it got the first time.
"""
from __future__ import annotations

import bisect
import threading
import time

from operators.utc import day_of, iso, parse_iso

__all__ = ["CLOCKS", "StreamClock", "day_of", "iso", "parse_iso"]

CLOCKS = ("live", "ingest", "given", "container", "run_start")
FIXED = ("given", "container", "run_start")

class StreamClock:
    """Stream time -> Unix seconds for one run of one channel. `observe` is called by the
    thread that feeds audio, `utc` by the one that decides: anchors are guarded by a lock."""

    def __init__(self, kind: str, offset: float | None = None, resync_s: float = 5.0,
                 resync_hold_s: float = 30.0, drift_ppm: float = 100.0, keep: int = 1000):
        if kind not in CLOCKS:
            raise ValueError(f"unknown clock {kind!r}")
        self.kind = kind
        self.resync_s, self.resync_hold_s, self.drift = resync_s, resync_hold_s, drift_ppm * 1e-6
        self.keep = keep
        self._times: list[float] = []        # stream time each anchor takes effect
        self._offsets: list[float] = []      # UTC - stream time from then on
        self._offset = offset
        self._last_wall = None
        self._late_since = None
        self.resyncs = 0
        self._lock = threading.Lock()
        if offset is not None:
            self._times, self._offsets = [0.0], [float(offset)]

    @classmethod
    def fixed(cls, kind: str, utc_of_zero: float) -> "StreamClock":
        return cls(kind, offset=utc_of_zero)

    def observe(self, stream_end: float, wall: float) -> None:
        """The newest sample, at `stream_end`, arrived (was cut, for ingest) at `wall`."""
        if self.kind in FIXED:
            return
        obs = wall - stream_end
        o = self._offset
        if o is None:
            new = obs
        elif obs < o:
            new = obs
            self._late_since = None
        else:
            step = self.drift * max(0.0, wall - (self._last_wall or wall))
            new = o + min(obs - o, step)
            if obs - o > self.resync_s:
                if self._late_since is None:
                    self._late_since = wall
                elif wall - self._late_since >= self.resync_hold_s:
                    new, self._late_since = obs, None
                    self.resyncs += 1
            else:
                self._late_since = None
        self._last_wall = wall
        self._offset = new
        if not self._offsets or abs(new - self._offsets[-1]) >= 0.005:
            with self._lock:
                self._times.append(stream_end)
                self._offsets.append(new)
                if len(self._times) > self.keep:
                    del self._times[:len(self._times) - self.keep]
                    del self._offsets[:len(self._offsets) - self.keep]

    def utc(self, t: float) -> float:
        """Unix seconds of stream time `t`; before any anchor, the wall clock now."""
        with self._lock:
            if not self._offsets:
                return time.time()
            i = bisect.bisect_right(self._times, t) - 1
            return t + self._offsets[max(i, 0)]

    def iso(self, t: float) -> str:
        return iso(self.utc(t))

    def snapshot(self) -> dict:
        with self._lock:
            return {"kind": self.kind, "times": list(self._times), "offsets": list(self._offsets),
                    "offset": self._offset, "last_wall": self._last_wall, "late_since": self._late_since,
                    "resyncs": self.resyncs}

    def restore(self, d: dict) -> None:
        with self._lock:
            self.kind = d["kind"]
            self._times, self._offsets = list(d["times"]), list(d["offsets"])
            self._offset, self._last_wall = d["offset"], d["last_wall"]
            self._late_since, self.resyncs = d.get("late_since"), d.get("resyncs", 0)
