"""`onair archive --kafka --out DIR`: the record topics into the files of direct mode.

Kafka mode keeps its records on topics; a programme director's report and an auditor want
them as files. The archiver is a consumer group (`<group_id>.archive`) over the segment,
request, genre and now-playing topics that writes each record into DIR/YYYY-MM-DD/<kind>.jsonl
by its UTC day (pipeline.outputs.DailyJsonlOutputs), so `onair report --dir DIR` works on a
Kafka deployment as on `onair run`. Offsets are committed after the records are written
(at least once): a crash writes some records again, with the same ids, and the report drops
copies by id. Point `recognition.ledger` of `onair recognize --kafka` at DIR/ledger.jsonl
for the spend. A record that is not a JSON object is skipped with one line naming its topic,
partition and offset.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from pipeline.outputs import DailyJsonlOutputs

log = logging.getLogger("onair.archive")


def archive_kafka(cfg: dict, out_dir: str | Path, stop: threading.Event | None = None,
                  idle_exit_s: float | None = None, metrics=None) -> int:
    """Archive until `stop` (or `idle_exit_s` without records); returns the records written."""
    from pipeline.kafka.client import consume_records, consumer
    stop = stop or threading.Event()
    k = cfg["kafka"]
    kinds = {k["topic_segments"]: "segments", k["topic_requests"]: "requests", k["topic_genres"]: "genres",
             k["topic_nowplaying"]: "nowplaying"}
    files = DailyJsonlOutputs(out_dir)
    c = consumer(cfg, *kinds, group_id=f"{k['group_id']}.archive")
    try:
        done = consume_records(c, k["poll_ms"], stop, lambda topic, rec: files.write(kinds[topic], rec),
                               idle_exit_s, log=log)
    finally:
        c.close()
        files.close()
    log.info("archive: %d records written to %s", done, out_dir)
    return done
