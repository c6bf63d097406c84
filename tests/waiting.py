"""Waiting on conditions, not on time: a fixed sleep is too short on a loaded machine and too long
on an idle one. Deadlines are generous because meeting them early costs nothing."""
from __future__ import annotations

import time


def wait_for(pred, timeout: float, step: float = 0.2) -> bool:
    """True as soon as `pred()` is; False if it is not within `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def wait_until(pred, timeout_s: float, what, step: float = 0.2) -> None:
    """Return as soon as `pred()` is true; fail the test if it is not within `timeout_s`.

    For anything a test waits for (a broker, a worker, a page, a scrape) instead of a fixed sleep,
    which is too short on a loaded machine and too long on an idle one: deadlines are generous
    because meeting them early costs nothing. `what` names the condition in the failure, and may
    be a callable for a message with the state at the time (e.g. how many records were handled)."""
    if not wait_for(pred, timeout_s, step):
        raise AssertionError(f"waited {timeout_s:.0f} s for {what() if callable(what) else what}")
