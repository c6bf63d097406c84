"""Foreground or background music: how a stretch of music is used on air.

Background is music under speech or other sound that dominates it (a bed under a presenter or an
advert, a score under dialogue: BMAT's sense, music well below the other sound); foreground is
music that is the programme. Each decided music frame brings the talk-over head's probability that
speech dominates it; a stretch is background when the mean of those is at least one half, with the
mean's distance from the other side as its confidence.
"""
from __future__ import annotations

BACKGROUND_AT = 0.5


class Usage:
    def __init__(self):
        self.sum, self.n = 0.0, 0

    def add(self, p_background: float) -> None:
        self.sum += float(p_background)
        self.n += 1

    def fields(self) -> dict:
        """`usage` and `usage_confidence` (both None before any music frame)."""
        if not self.n:
            return {"usage": None, "usage_confidence": None}
        p = self.sum / self.n
        background = p >= BACKGROUND_AT
        return {"usage": "background" if background else "foreground",
                "usage_confidence": round(p if background else 1.0 - p, 4)}

    def snapshot(self) -> list:
        return [self.sum, self.n]

    @classmethod
    def restored(cls, d) -> "Usage":
        u = cls()
        if d:
            u.sum, u.n = float(d[0]), int(d[1])
        return u
