"""Kafka mode vs direct mode on the dev programmes, through a real broker.

  python benchmarks/kafka_vs_direct.py [--copies 2] [--codec aac] [--config yamnet-fp32|vggish-int8|...]

Starts a local Kafka 0.9 broker (onair broker), ingests each dev programme
(MPEG-TS, --copies channels of each) as fast as Kafka takes it, then
1. one `onair worker` drains the topic: chunks/s, audio seconds per second
   (= channels it sustains in real time);
2. the same with `kafka.overlap=false` (a poll's frames embedded before the next
   poll is decoded), and the ratio;
3. two workers in one consumer group drain another copy of it: the same;
4. prints the music F1 of the Kafka path next to the direct path's (`onair run`)
   for each programme, and whether their segments are identical.
Each figure is one JSON line. `--config` takes a configuration of throughput.py:
the VGGish ones use its stand-in model and throwaway head (random weights, the
real compute), so their F1 says nothing; their drain rates and identity do.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
os.environ.setdefault("ONAIR_MODEL_DIR", str(SHARED / "models"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline import broker, config  # noqa: E402
from pipeline.demo import encoded  # noqa: E402
from pipeline.training.evaluate import music_f1, read_labels  # noqa: E402
from pipeline.kafka.ingest import Ingest  # noqa: E402
from pipeline.direct import DirectRun  # noqa: E402
from benchmarks.throughput import CONFIGS, prepared  # noqa: E402
from tests.kafka_helpers import kafka_cfg, segments_by_channel  # noqa: E402


def workers(sets: list[str], n: int) -> list[dict]:
    cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--exit-when-idle", "6"]
    for s in sets:
        cmd += ["--set", s]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def drain_figures(label: str, summaries: list[dict], chunks: int) -> dict:
    start = min(s["first_record_at"] for s in summaries if s["first_record_at"])
    end = max(s["last_record_at"] for s in summaries if s["last_record_at"])
    audio = sum(s["audio_s"] for s in summaries)
    wall = end - start
    return {"what": label, "workers": len(summaries), "media_records": sum(s["media_records"] for s in summaries),
            "chunks": chunks, "wall_s": round(wall, 2), "chunks_per_s": round(chunks / wall, 1),
            "audio_s_per_s": round(audio / wall, 1), "realtime_channels": int(audio / wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2, help="channels per dev programme")
    ap.add_argument("--codec", default="aac")
    ap.add_argument("--config", default="yamnet-fp32", choices=[n for n, c in CONFIGS.items() if not c.get("naive")],
                    help="a configuration of throughput.py")
    args = ap.parse_args()
    spec = CONFIGS[args.config]
    model_sets, direct_cfg = [], config.load()
    if spec["backend"] != "yamnet":
        work = prepared()
        model_sets = [f"embedding.backend={spec['backend']}", f"embedding.precision={spec['precision']}",
                      f"heads.dir={work / 'heads'}"]
        os.environ["ONAIR_MODEL_DIR"] = str(work / "models")     # for this run and the workers it starts
        direct_cfg = config.load(None, model_sets)
    progs = sorted((SHARED / "data" / "streams").glob("*.opus"))
    media = {p.stem: ts for p, ts in zip(progs, encoded([(p, args.codec) for p in progs]))}
    inputs = [(f"{stem}-{i}", str(ts)) for stem, ts in media.items() for i in range(args.copies)]
    with tempfile.TemporaryDirectory() as tmp:
        b = broker.start(Path(tmp) / "kafka", partitions=4)
        try:
            figures = {}
            for label, n, extra in (("1 worker", 1, []), ("1 worker, no overlap", 1, ["kafka.overlap=false"]),
                                    ("2 workers", 2, [])):
                cfg, sets = kafka_cfg(b, "kafka.chunk_s=2.0", *model_sets, *extra)
                broker.create_topic(b, cfg["kafka"]["topic_state"], 4, compact=True)
                res = Ingest(inputs, cfg).run()
                chunks = sum(r["chunks"] for r in res.values())
                figures[label] = {"config": args.config, **drain_figures(label, workers(sets, n), chunks)}
                print(json.dumps(figures[label]), flush=True)
                if label == "1 worker":
                    kafka_segs, dupes = segments_by_channel(cfg)
            print(json.dumps({"what": "1 worker: overlap / no overlap", "chunks_per_s_ratio":
                              round(figures["1 worker"]["chunks_per_s"]
                                    / figures["1 worker, no overlap"]["chunks_per_s"], 2)}))
            print(json.dumps({"what": "2 workers / 1 worker", "chunks_per_s_ratio":
                              round(figures["2 workers"]["chunks_per_s"] / figures["1 worker"]["chunks_per_s"], 2)}))
            direct = Path(tmp) / "direct"
            DirectRun([(stem, str(ts)) for stem, ts in media.items()], direct, direct_cfg).run()
            direct_segs = {}
            for line in (direct / "segments.jsonl").read_text().splitlines():
                s = json.loads(line)
                direct_segs.setdefault(s["channel"], []).append(s)
            for p in progs:
                rows = read_labels(p.with_name(p.stem + ".labels.csv"))
                k = kafka_segs[f"{p.stem}-0"]
                d = direct_segs[p.stem]
                same = [(s["label"], s["start"], s["end"]) for s in k] == [(s["label"], s["start"], s["end"])
                                                                          for s in d]
                print(json.dumps({"programme": p.stem, "codec": args.codec, "f1_kafka": round(music_f1(rows, k), 4),
                                  "f1_direct": round(music_f1(rows, d), 4), "identical_segments": same,
                                  "duplicate_records": dupes}))
        finally:
            broker.stop(Path(tmp) / "kafka")


if __name__ == "__main__":
    main()
