"""The recognition stage at run time: provider and budget from config, the
cost ledger on disk, and the three ways requests reach it: inside `onair run`
(a thread beside the pipeline), `onair recognize --dir DIR` (follows
DIR/requests.jsonl as it grows) and `onair recognize --kafka` (a consumer
group over the requests topic, now-playing records to their topic).

Provider keys come from the environment variable or the file named in
config; they are handed to the adapter and never logged or written.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from operators.recognition.budget import Budget, Caps
from pipeline.config import ConfigError
from pipeline.follow import DailyTail
from pipeline.jsonin import BadLine, loads_record
from pipeline.outputs import DailyJsonl, day_dirs, dumps, read_jsonl
from pipeline.recognition.providers import PROVIDERS, BadRequest, Recognizer, ledger_problem
from pipeline.secrets import read_secret

log = logging.getLogger("onair.recognize")


def secret(cfg: dict, name: str) -> str:
    """A provider credential (pipeline.secrets)."""
    return read_secret(cfg, "recognition", name)


def make_provider(cfg: dict):
    r = cfg["recognition"]
    name = r["provider"]
    if name == "none":
        return None
    if name == "acrcloud":
        return PROVIDERS[name](r["acrcloud_url"], secret(cfg, "acrcloud_access_key"),
                               secret(cfg, "acrcloud_access_secret"), r["acrcloud_price"], r["timeout_s"])
    return PROVIDERS[name](r["audd_url"], secret(cfg, "audd_api_token"), r["audd_price"], r["timeout_s"])


def caps(cfg: dict) -> Caps:
    r = cfg["recognition"]
    return Caps(**{k: r[k] for k in Caps.__dataclass_fields__})


class Ledger:
    """Append-only JSONL of every recognition outcome; paid calls carry their cost. It rotates by
    the UTC day of each call: `recognition.ledger` = DIR/ledger.jsonl is written as
    DIR/YYYY-MM-DD/ledger.jsonl, and DIR/ledger.jsonl links to the newest day."""

    def __init__(self, path: Path):
        self.path = path
        self.files = DailyJsonl(path.parent, path.name.removesuffix(".jsonl"), kind="ledger")

    def entries(self, days: int = 2) -> list[dict]:
        """The last `days` days' entries, oldest first: what today's caps and the cache need
        (request ids carry their UTC, so an older request never comes again)."""
        # the newest days that have a ledger (an output folder also holds days of records only)
        paths = [p for p in map(self.files.path, day_dirs(self.path.parent)) if p.exists()][-days:]
        out = []
        for p in paths:
            for n, e in read_jsonl(p):
                why = ledger_problem(e)
                if why is None:
                    out.append(e)
                else:       # counted neither in the budget nor in the cache; the line stays as it is
                    log.warning("%s:%d: ledger line skipped: %s", p, n, why)
        return out

    def __call__(self, entry: dict) -> None:
        self.files.write(entry)


def make_recognizer(cfg: dict, ledger_path: Path, metrics=None, clock=time.time, index=None) -> Recognizer | None:
    """`index`: the fingerprint index (pipeline.identity) to open beside the ledger; None opens the
    configured one (`identity.path` relative to the ledger's folder), False runs without."""
    provider = make_provider(cfg)
    if provider is None:
        return None
    r = cfg["recognition"]
    ledger = Ledger(ledger_path)
    if index is None:
        from pipeline.identity.index import open_index
        index = open_index(cfg, ledger_path.parent, metrics, clock)
    rec = Recognizer(provider, Budget(caps(cfg), clock), ledger, r["currency"], r["max_retries"], r["backoff_s"],
                     r["rate_per_s"], metrics, clock, index or None)
    rec.replay(ledger.entries())
    log.info("recognition by %s at %.4f %s a request; ledger %s (%d earlier entries)", provider.name,
             provider.price, r["currency"], ledger_path, len(rec.cache))
    return rec


class RecognitionStage(threading.Thread):
    """Runs requests through the recognizer in the background of `onair run`."""

    def __init__(self, recognizer: Recognizer, write_nowplaying, write_correction=None):
        super().__init__(name="recognize", daemon=True)
        self.recognizer = recognizer
        self.write_nowplaying = write_nowplaying     # callable(record)
        self.write_correction = write_correction     # callable(record), or None
        self.items: queue.Queue = queue.Queue()

    def submit(self, req: dict) -> None:
        self.items.put(req)

    def close(self) -> None:
        self.items.put(None)
        self.join()

    def run(self) -> None:
        while True:
            req = self.items.get()
            if req is None:
                return
            try:
                np_rec = self.recognizer.handle(req)
            except Exception:  # one bad request must not stop the stage
                log.exception("recognition of %s failed", req.get("request_id"))
                continue
            if np_rec is not None:
                self.write_nowplaying(np_rec)
            for c in self.recognizer.take_corrections():
                if self.write_correction is not None:
                    self.write_correction(c)


def follow_dir(cfg: dict, out_dir: Path, metrics=None, stop: threading.Event | None = None,
               idle_exit_s: float | None = None) -> int:
    """`onair recognize --dir`: recognise DIR/requests.jsonl as it grows."""
    stop = stop or threading.Event()
    rec = make_recognizer(cfg, ledger_path(cfg, out_dir), metrics)
    if rec is None:
        raise ConfigError("config key 'recognition.provider': none is configured, nothing to send")
    sink = DailyJsonl(out_dir, "nowplaying")
    fixes = DailyJsonl(out_dir, "corrections")
    parked = DeadLetters(out_dir)
    # from the day before the newest: requests a stopped recognizer left over midnight are still
    # sent, and the ones it answered come from the cache (the ledger's last two days), unpaid
    days = day_dirs(out_dir)
    from_day = days[-2] if len(days) > 1 else None
    tail = DailyTail(out_dir, "requests", from_day=from_day)
    # now-playing records a stopped recognizer already wrote are not written again
    written = {e.get("request_id") for p in _day_files(out_dir, "nowplaying", days[-2:]) for _, e in read_jsonl(p)}
    last = time.monotonic()
    done = 0
    while not stop.is_set():
        lines = tail.read_numbered()
        for path, line_no, line in lines:
            try:
                np_rec = rec.handle(loads_record(line))
            except (BadLine, BadRequest) as e:
                parked.park(path, line_no, line, str(e), rec.metrics)
                continue
            done += 1
            if np_rec is not None and np_rec.get("request_id") not in written:
                sink.write(np_rec)
            for c in rec.take_corrections():
                fixes.write(c)
        if lines:
            last = time.monotonic()
        elif idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
            break
        else:
            stop.wait(0.2)
    return done


def _day_files(out_dir: Path, name: str, days: list[str]) -> list[Path]:
    return [p for p in (out_dir / d / f"{name}.jsonl" for d in days) if p.exists()]


class DeadLetters:
    """Request lines that cannot be sent, parked in DIR/YYYY-MM-DD/dead_letters.jsonl with where
    they came from and why: logged once (a restart does not park a line again) and counted."""

    def __init__(self, out_dir: Path):
        self.files = DailyJsonl(out_dir, "dead_letters")
        self.seen = {(e.get("file"), e.get("line"))
                     for p in _day_files(out_dir, "dead_letters", day_dirs(out_dir)[-2:]) for _, e in read_jsonl(p)}

    def park(self, path: Path, line_no: int, raw: str, why: str, metrics=None) -> None:
        if (str(path), line_no) in self.seen:
            return
        self.seen.add((str(path), line_no))
        log.warning("%s:%d: request skipped and parked in dead_letters.jsonl: %s", path, line_no, why)
        if metrics is not None:
            metrics.recognition_bad_requests.inc()
        self.files.write({"file": str(path), "line": line_no, "error": why, "record": raw})


def ledger_path(cfg: dict, out_dir: Path | None) -> Path:
    """`recognition.ledger`; a relative path lives in the run's output dir (or the working dir)."""
    p = Path(cfg["recognition"]["ledger"])
    return p if p.is_absolute() or out_dir is None else out_dir / p


def consume_kafka(cfg: dict, metrics=None, stop: threading.Event | None = None,
                  idle_exit_s: float | None = None) -> int:
    """`onair recognize --kafka`: a consumer group over the requests topic; offsets are committed
    after the now-playing records are produced, so a crash re-reads requests and the ledger-backed
    cache keeps them from being paid twice."""
    from pipeline.kafka.client import consume_records, consumer, producer
    stop = stop or threading.Event()
    k = cfg["kafka"]
    rec = make_recognizer(cfg, ledger_path(cfg, None), metrics)
    if rec is None:
        raise ConfigError("config key 'recognition.provider': none is configured, nothing to send")
    c = consumer(cfg, k["topic_requests"], group_id=f"{k['group_id']}.recognize")
    p = producer(cfg)

    def handle(_topic, req):
        np_rec = rec.handle(req)
        if np_rec is not None:
            p.send(k["topic_nowplaying"], key=np_rec["channel"].encode(), value=dumps(np_rec).encode())
        for c in rec.take_corrections():
            p.send(k["topic_corrections"], key=c["channel"].encode(), value=dumps(c).encode())

    def park(m, why):
        # the broker may predate record headers (0.11): why and where on a first line, as the media DLQ does
        header = dumps({"reason": "bad_request", "detail": why, "topic": m.topic, "partition": m.partition,
                        "offset": m.offset}).encode()
        p.send(k["topic_requests_dlq"], key=m.key, value=header + b"\n" + (m.value or b""))
        rec.metrics.recognition_bad_requests.inc()

    try:
        return consume_records(c, k["poll_ms"], stop, handle, idle_exit_s, before_commit=p.flush, log=log,
                               park=park)
    finally:
        c.close()
        p.close(timeout=10)
