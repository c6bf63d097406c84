"""The throughput benchmark through a real broker: live channels -> `onair ingest`
-> Kafka 0.9 (local, pipeline.kafka.broker) -> one `onair worker` process.

Ingest reads the same named pipes fed at real-time pace as direct mode
(benchmarks/livefeed.py) and runs in this process (with the feeder); the
worker is its own process, so its CPU is measured on its own. The backlog is
the consumer group's lag on the media topic (end offset minus committed
offset, in chunks), turned into seconds of media per channel; the worker keeps
up when that does not grow over the window. Committed offsets trail the
processed ones by up to `kafka.state_every_s` by design (a partition is
committed only as far as the channels' saved states cover), so the backlog is
read from the worker's own `onair_kafka_consumer_lag` (partition end minus its
consumer's position) on its /metrics port: what it has not processed yet.
The worker's CPU per channel is the figure to compare with the in-process one
(benchmarks/throughput.py): what the broker path adds is Kafka I/O plus the
state changelog. ONAIR_BENCH_WORKER_LOG=FILE keeps the worker's log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lag_chunks(cfg: dict, metrics_port: int) -> int | None:
    """Media chunks on the topic that the worker has not processed yet, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    lags = [s.value for fam in text_string_to_metric_families(text) if fam.name == "onair_kafka_consumer_lag"
            for s in fam.samples if s.labels.get("topic") == cfg["kafka"]["topic_media"]]
    return int(sum(lags)) if lags else None


def kafka_figure(work: Path, spec: dict, name: str, n: int, ts_files: list[Path], window_s: float = 60.0,
                 warmup_s: float = 15.0, extra_sets: tuple = ()) -> dict:
    """`extra_sets`: config overrides (`SECTION.KEY=VALUE`) for ingest and worker."""
    from benchmarks.livefeed import LiveFeed, Media
    from benchmarks.trial import cpu_seconds
    from pipeline import config
    from pipeline.kafka import broker
    from pipeline.kafka.ingest import Ingest

    media = [Media.scan(p) for p in ts_files]
    rng = np.random.default_rng(7)
    specs = [(f"k{i:04d}", media[i % len(media)], float(rng.uniform(0, media[i % len(media)].duration)))
             for i in range(n)]
    out = {"what": "kafka mode: live pipes -> onair ingest -> Kafka 0.9 -> one onair worker process",
           "config": name, "channels": n, "window_s": window_s}
    with tempfile.TemporaryDirectory(prefix="onair-kafka-tp-") as tmp:
        tmp = Path(tmp)
        b = broker.start(tmp / "kafka", partitions=4)
        worker = None
        worker_log = open(os.environ.get("ONAIR_BENCH_WORKER_LOG", os.devnull), "w")
        feed = None
        try:
            prefix = f"tp{os.getpid()}"
            sets = [f"kafka.bootstrap_servers={b.bootstrap}", f"kafka.topic_media={prefix}.media",
                    f"kafka.topic_segments={prefix}.segments", f"kafka.topic_dlq={prefix}.dlq",
                    f"kafka.topic_state={prefix}.state", f"kafka.topic_requests={prefix}.requests",
                    f"kafka.topic_nowplaying={prefix}.nowplaying", f"kafka.topic_genres={prefix}.genres",
                    f"kafka.group_id={prefix}.workers", f"embedding.backend={spec['backend']}",
                    f"embedding.precision={spec['precision']}", f"heads.dir={work / 'heads'}",
                    "source.open_timeout_s=60", "source.read_timeout_s=60", *extra_sets]
            cfg = config.load(None, sets)
            broker.create_topic(b, cfg["kafka"]["topic_state"], cfg["kafka"]["partitions"], compact=True)
            broker.create_topic(b, cfg["kafka"]["topic_media"], cfg["kafka"]["partitions"])
            port = broker.free_port()
            cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--exit-when-idle", "10", "--metrics-port", str(port)]
            for s in sets:
                cmd += ["--set", s]
            env = {**os.environ, "ONAIR_MODEL_DIR": str(work / "models")}
            worker = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=worker_log,
                                      text=True)
            time.sleep(5.0)   # model load and group join; what it misses waits in Kafka
            feed = LiveFeed(specs, tmp / "pipes", stagger_s=min(4.0, warmup_s / 3))
            ingest = Ingest([(ch, str(feed.paths[ch])) for ch, _, _ in specs], cfg)
            th = threading.Thread(target=ingest.run, name="ingest", daemon=True)
            th.start()
            feed.start_clock()
            time.sleep(warmup_s)
            lags, t_w0 = [], time.monotonic()
            cpu_w0, cpu_i0 = _proc_cpu_s(worker.pid), cpu_seconds()
            while time.monotonic() - t_w0 < window_s:
                time.sleep(2.0)
                lag = _lag_chunks(cfg, port)
                if lag is not None:
                    lags.append((time.monotonic() - t_w0, lag))
            wall = time.monotonic() - t_w0
            worker_cpu = 100 * (_proc_cpu_s(worker.pid) - cpu_w0) / wall
            ingest_cpu = 100 * (cpu_seconds() - cpu_i0) / wall
        finally:
            if feed is not None:
                ingest.stop.set()
                feed.close()
                th.join(timeout=60)
                feed.cleanup()
                ingest.producer.close(timeout=10)   # before the broker goes: no reconnect noise after it
            summary = {}
            if worker is not None:
                try:
                    stdout, _ = worker.communicate(timeout=120)
                    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
                    summary = json.loads(lines[-1]) if lines else {}
                except subprocess.TimeoutExpired:
                    worker.kill()
            worker_log.close()
            broker.stop(tmp / "kafka")
    chunk_s = cfg["kafka"]["chunk_s"]
    lag_s = np.array([lag * chunk_s / n for _, lag in lags], float)   # seconds of media per channel
    third = max(1, len(lag_s) // 3)
    growth = float(lag_s[-third:].mean() - lag_s[:third].mean()) if len(lag_s) >= 3 else float("inf")
    out.update(realtime=bool(growth <= 0.5 + 0.01 * wall and len(lag_s) and lag_s[-1] <= chunk_s + 4.0),
               backlog_growth_s=round(growth, 3),
               backlog_end_s_per_channel=round(float(lag_s[-1]), 2) if len(lag_s) else None,
               worker_cpu_percent=round(worker_cpu, 1),
               worker_cpu_ms_per_channel_s=round(10 * worker_cpu / n, 3),
               ingest_and_feeder_cpu_percent=round(ingest_cpu, 1),
               worker_summary={k: summary.get(k) for k in ("media_records", "segments", "audio_s", "busy_s",
                                                           "span_s", "state_records")})
    return out
