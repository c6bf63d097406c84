"""Run a command and report the peak memory of its whole process tree and its wall time.

    python .ci/peak_rss.py -- CMD [ARG...]

The figure is the peak of the *sum* of the resident set sizes of CMD and all its descendants
(the worker subprocesses, Kafka's JVMs, Chromium, Prometheus a test starts), sampled from /proc
every `--every` seconds (default 0.5). GNU time's "maximum resident set size" is the largest
single process, which is not what a machine running the suite must hold. A process that lives
shorter than one sampling interval can be missed; descendants that a test double-forks away
from the tree (daemons reparented to init) are not counted.

Prints `peak RSS of the test run: X.X GB` and `wall time: N s` at the end and exits
with CMD's exit status (128 + signal number if a signal ended it).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process in /proc now."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:          # it ended between listdir and open
            continue
        # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = children_of(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss(root: int) -> tuple[int, list[tuple[int, int]]]:
    sizes = [(rss_bytes(p), p) for p in tree(root)]
    return sum(s for s, _ in sizes), sizes


def label(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(a.decode(errors="replace") for a in f.read().split(b"\0") if a)[:90]
    except OSError:
        return f"pid {pid} (gone)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=float, default=0.5, help="sampling interval, seconds")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given")

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    peak, done = 0, threading.Event()
    at_peak: list[tuple[int, str]] = []      # the largest processes when the peak was sampled

    def sample():
        nonlocal peak, at_peak
        while not done.is_set():
            total, sizes = tree_rss(proc.pid)
            if total > peak:
                peak = total
                at_peak = [(s, label(p)) for s, p in sorted(sizes, reverse=True)[:4] if s]
            done.wait(args.every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # an interrupt reaches the whole foreground process group; wait for CMD to handle it
    signal.signal(signal.SIGINT, lambda *_: None)
    rc = proc.wait()
    done.set()
    sampler.join()
    wall = time.monotonic() - t0
    print(f"peak RSS of the test run: {peak / 1e9:.1f} GB", flush=True)
    for size, what in at_peak:
        print(f"  at the peak: {size / 1e9:.2f} GB  {what}", flush=True)
    print(f"wall time: {wall:.0f} s", flush=True)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
