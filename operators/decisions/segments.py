"""Decided frames -> closed segments covering the stream.

A segment starts at the first frame of its label and ends where the next
segment's first frame starts (frames start 0.96 s apart and overlap by 15 ms,
so a frame start is the best estimate of a boundary between two frames);
the last one ends at the end of the audio.
"""
from __future__ import annotations

from operators.tagging.usage import Usage

LABELS = ("non_music", "music")
NO_SIGNAL = "no_signal"    # an outage of the source: neither label, and no frames to be confident about


class SegmentBuilder:
    def __init__(self, channel: str):
        self.channel = channel
        self._label = None
        self._start = 0.0
        self._conf_sum = 0.0
        self._count = 0
        self._usage = Usage()

    @property
    def open_segment(self) -> dict | None:
        if self._label is None:
            return None
        return {"channel": self.channel, "label": self._label, "start": self._start}

    def push(self, time: float, state: int, posterior: float, p_background: float | None = None) -> list[dict]:
        """`p_background`: for a music frame, the probability that speech dominates it (usage)."""
        label = LABELS[state]
        out = []
        if self._label is None:
            self._label, self._start = label, time
        elif label != self._label:
            out.append(self._close(time))
            self._label, self._start = label, time
        self._conf_sum += posterior
        self._count += 1
        if state == 1 and p_background is not None:
            self._usage.add(p_background)
        return out

    @property
    def usage(self) -> dict:
        """The open music segment's usage so far (None outside music)."""
        return self._usage.fields()

    def close(self, end_time: float) -> list[dict]:
        if self._label is None:
            return []
        seg = self._close(max(end_time, self._start))
        self._label = None
        return [seg]

    def gap(self, start: float, end: float) -> list[dict]:
        """The source was silent from `start` to `end`: the open segment closes at `start`, the
        outage is a segment of its own, and the next decided frame opens a new one."""
        out = self.close(start)
        out.append({"channel": self.channel, "label": NO_SIGNAL, "start": round(start, 3), "end": round(end, 3),
                    "confidence": 1.0})
        return out

    def _close(self, end: float) -> dict:
        seg = {"channel": self.channel, "label": self._label, "start": round(self._start, 3),
               "end": round(end, 3), "confidence": round(self._conf_sum / max(self._count, 1), 4)}
        if self._label == "music":
            seg.update(self._usage.fields())
        self._conf_sum, self._count, self._usage = 0.0, 0, Usage()
        return seg

    def snapshot(self) -> dict:
        return {"label": self._label, "start": self._start, "conf_sum": self._conf_sum, "count": self._count,
                "usage": self._usage.snapshot()}

    def restore(self, d: dict) -> None:
        self._label, self._start = d["label"], d["start"]
        self._conf_sum, self._count = d["conf_sum"], d["count"]
        self._usage = Usage.restored(d.get("usage"))
