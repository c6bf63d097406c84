"""Spend caps per channel per hour and per day, and for all channels per day,
in requests and in money. Windows are calendar hours and days (UTC) of the
clock given, so a capped channel resumes at the next window."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass


@dataclass
class Caps:
    channel_hour_requests: int | None = None
    channel_day_requests: int | None = None
    channel_hour_money: float | None = None
    channel_day_money: float | None = None
    global_day_requests: int | None = None
    global_day_money: float | None = None


class Budget:
    def __init__(self, caps: Caps, clock=time.time):
        self.caps = caps
        self.clock = clock
        self._spent: dict[tuple, list] = {}   # (scope, window) -> [requests, money]

    def _windows(self, channel: str, now: float) -> dict[str, tuple]:
        hour, day = int(now // 3600), int(now // 86400)
        return {"channel_hour": ("ch", channel, "h", hour), "channel_day": ("ch", channel, "d", day),
                "global_day": ("all", "d", day)}

    def check(self, channel: str, cost: float) -> str | None:
        """None if a request of `cost` may be paid now, else the name of the cap it would exceed."""
        now = self.clock()
        for scope, key in self._windows(channel, now).items():
            n, money = self._spent.get(key, (0, 0.0))
            cap_n = getattr(self.caps, f"{scope}_requests")
            cap_m = getattr(self.caps, f"{scope}_money")
            if cap_n is not None and n + 1 > cap_n:
                return f"{scope}_requests"
            if cap_m is not None and money + cost > cap_m + 1e-12:
                return f"{scope}_money"
        return None

    def charge(self, channel: str, cost: float, at: float | None = None, count: int = 1) -> None:
        now = self.clock() if at is None else at
        for key in self._windows(channel, now).values():
            spent = self._spent.setdefault(key, [0, 0.0])
            spent[0] += count
            spent[1] += cost
        self._prune(now)

    def refund(self, channel: str, cost: float) -> None:
        """Give back a reservation that was not paid (the call failed)."""
        self.charge(channel, -cost, count=-1)

    def _prune(self, now: float) -> None:
        hour, day = int(now // 3600), int(now // 86400)
        for key in [k for k in self._spent if (k[-2] == "h" and k[-1] < hour) or (k[-2] == "d" and k[-1] < day)]:
            del self._spent[key]

    def snapshot(self) -> dict:
        return {"caps": asdict(self.caps), "spent": [[list(k), v] for k, v in self._spent.items()]}

    def restore(self, d: dict) -> None:
        self._spent = {tuple(k): list(v) for k, v in d["spent"]}
