"""`onair` command line: one subcommand per process of the pipeline (see `onair --help`)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from pipeline import config as config_mod
from pipeline import native_stderr

log = logging.getLogger("onair")

# TensorFlow's start-up chatter is not ours to show; keep warnings and errors. What its C++ code
# prints to fd 2 regardless is filtered by pipeline.native_stderr where the model is loaded.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", module=r"tensorflow\.lite\..*")
# tf.lite warns that experimental_preserve_all_tensors costs memory: YamnetTFLite needs the embedding tensor
warnings.filterwarnings("ignore", message=r".*experimental_preserve_all_tensors.*", category=UserWarning)

# the commands that load an embedding model, and so TensorFlow
MODEL_COMMANDS = {"run", "genre", "train", "worker", "demo"}


def version() -> str:
    """The installed package's version; "dev" when onair runs from a checkout that is not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("onair")
    except PackageNotFoundError:
        return "dev"


def load_embedder(cfg: dict):
    """The configured embedder, with TensorFlow's and TFLite's C++ chatter filtered out."""
    from pipeline.models import load_embedder as load
    with native_stderr.filtered():
        return load(cfg)


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("tensorflow", "absl", "h5py", "libav"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # kafka-python narrates every connection at INFO; its warnings and errors still show
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus /metrics on this port (default: metrics.port; 0 = off)")


def _metrics(cfg: dict):
    """This process's metrics, served on metrics.address:metrics.port when a port is set."""
    from pipeline.metrics import Metrics
    m = Metrics(currency=cfg["recognition"]["currency"]).configure(cfg)
    port = cfg["metrics"]["port"]
    if port:
        m.serve(cfg["metrics"]["address"], port)
        log.info("metrics on http://%s:%d/metrics", cfg["metrics"]["address"], port)
    return m


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="pipeline YAML (default: configs/pipeline.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set embedding.batch_size=32 (repeatable)")


def _utc_time(text: str) -> float:
    """An ISO 8601 time as Unix seconds; checked while parsing, before any model loads."""
    from operators.utc import parse_iso
    try:
        return parse_iso(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _command(sub, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose own --help starts with the line `onair --help` lists for it."""
    return sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="onair", description="Music-on-air detection for live broadcast streams.",
                                 epilog="Every subcommand has its own --help. Config keys: docs/configuration.md "
                                        "(onair config --doc).")
    ap.add_argument("--version", action="version", version=f"onair {version()}",
                    help="print the installed version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = _command(sub, "genre", "tag whole files with genres (one JSON line per file)")
    g.add_argument("files", nargs="+", metavar="FILE", help="audio or video files any PyAV build opens")
    _config_args(g)

    r = _command(sub, "run", "direct mode: read sources, write segments (no Kafka)")
    r.add_argument("--input", action="append", required=True, metavar="CHANNEL=URL",
                   help="a channel id and any URL or path PyAV opens (repeatable)")
    r.add_argument("--out", required=True,
                   help="output directory: DIR/YYYY-MM-DD/{segments,requests,genres,nowplaying}.jsonl by UTC day, "
                        "appended (DIR/<kind>.jsonl links to the newest day)")
    r.add_argument("--start-time", metavar="ISO", type=_utc_time,
                   help="UTC of the start of every file input, e.g. 2026-12-06T14:05:00Z (default: the file's "
                        "creation_time tag, else the run's start); live sources use their receive clock")
    r.add_argument("--metrics-out", help="write the final Prometheus exposition (text format) here")
    _metrics_args(r)
    _config_args(r)

    t = _command(sub, "train", "fit a head (music and talk-over, or genre) on embeddings, for an embedding backend")
    t.add_argument("--backend", choices=["yamnet", "vggish"], help="default: the config's embedding.backend")
    t.add_argument("--head", choices=["music", "genre"], default="music",
                   help="music: music/non-music from label; genre: genres from the manifest's genre column")
    t.add_argument("--manifest", required=True, help="CSV with path,label[,source] (paths relative to it)")
    t.add_argument("--music-dir", action="append", default=[], help="folder whose audio files are all music")
    t.add_argument("--programmes", help="folder of *.labels.csv to fit the HMM transitions")
    t.add_argument("--out", help="head file (default: <heads.dir>/<backend>/music.json)")
    t.add_argument("--cache", default=".cache/embeddings", help="embedding cache folder")
    t.add_argument("--frames-per-file", type=int, default=48, help="at most this many frames per file")
    t.add_argument("--compose", type=int, default=0, metavar="N",
                   help="also train on N 15-minute programmes composed from the manifest's clips")
    t.add_argument("--beds", type=int, default=0, metavar="N",
                   help="also train on N 10-minute programmes of music beds 9-21 dB under speech (music)")
    t.add_argument("--composer", default=None,
                   help="broadcast_sim.py that composes them (default: ../shared/tools/broadcast_sim.py)")
    _config_args(t)

    i = _command(sub, "ingest", "read live sources and produce container bytes to the media topic")
    i.add_argument("--input", action="append", required=True, metavar="CHANNEL=URL",
                   help="a channel id and any URL or path PyAV opens (repeatable)")
    i.add_argument("--audio-only", action="store_true", help="remux only the selected audio track")
    i.add_argument("--rate", type=float, default=None,
                   help="pace file inputs at RATE x real time (default: as fast as Kafka takes them)")
    _metrics_args(i)
    _config_args(i)

    w = _command(sub, "worker", "consume the media topic in a consumer group and produce segments")
    w.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without records (batch jobs, tests)")
    _metrics_args(w)
    _config_args(w)

    rc = _command(sub, "recognize", "send recognition requests to the configured provider")
    src = rc.add_mutually_exclusive_group(required=True)
    src.add_argument("--dir", help="follow DIR/requests.jsonl (direct mode output), write DIR/nowplaying.jsonl")
    src.add_argument("--kafka", action="store_true", help="consume the requests topic, produce now-playing")
    rc.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                    help="exit after this long without requests (batch jobs, tests)")
    _metrics_args(rc)
    _config_args(rc)

    pr = _command(sub, "prune", "drop the recognition clips of old days from an output dir, keeping every record")
    pr.add_argument("--dir", required=True, help="the output dir of onair run or onair archive")
    pr.add_argument("--keep-clips-days", type=int, default=7, metavar="N",
                    help="keep the clips of the last N UTC days (default: %(default)s, at least 2)")

    fp = _command(sub, "fingerprints", "list, export, prune or compact the local fingerprint index (identity.*)")
    fp.add_argument("action", choices=["stats", "list", "export", "prune", "compact"],
                    help="stats: counts per kind and storage; list: one JSON line per recording or unknown item; "
                         "export: every item as JSON lines; prune: drop stale unknown items (and unused "
                         "recordings); compact: merge the SQLite index into one segment, dropping what was pruned")
    fp.add_argument("--dir", default=None,
                    help="the output dir of onair run: a relative identity.path is inside it (default: the "
                         "working directory)")
    fp.add_argument("--hashes", action="store_true", help="export: with each item's landmarks (base64)")
    fp.add_argument("--unknown-days", type=float, default=None, metavar="DAYS",
                    help="prune: unknown items older than this (default: identity.unknown_window_days)")
    fp.add_argument("--unused-days", type=float, default=None, metavar="DAYS",
                    help="prune: also recordings not heard for this long (default: keep them)")
    _config_args(fp)

    ar = _command(sub, "archive", "write the record topics of Kafka mode into dated files, as `onair run` "
                                  "writes them (for `onair report`)")
    ar.add_argument("--kafka", action="store_true", required=True,
                    help="consume the segment, request, genre and now-playing topics (a consumer group)")
    ar.add_argument("--out", required=True, help="output directory: DIR/YYYY-MM-DD/<kind>.jsonl by UTC day")
    ar.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS",
                    help="exit after this long without records (batch jobs, tests)")
    _metrics_args(ar)
    _config_args(ar)

    ov = _command(sub, "overlay", "serve the now-playing card (HTML for OBS/CasparCG, JSON, Server-Sent Events)")
    src = ov.add_mutually_exclusive_group(required=True)
    src.add_argument("--dir", help="follow DIR/nowplaying.jsonl, genres.jsonl and segments.jsonl as they grow")
    src.add_argument("--kafka", action="store_true",
                     help="follow the now-playing, genre and segment topics (no consumer group)")
    ov.add_argument("--port", type=int, default=None, help="HTTP port (default: overlay.port)")
    _metrics_args(ov)
    _config_args(ov)

    b = _command(sub, "broker", "a local Kafka 0.9 broker for the demo and tests")
    b.add_argument("action", choices=["start", "stop", "status"],
                   help="start (in the background), stop, or status (exit 3 when not running)")
    b.add_argument("--dir", default=".cache/broker", help="data folder (topics survive a restart)")
    b.add_argument("--port", type=int, default=19092, help="Kafka port on 127.0.0.1 (default: %(default)s)")
    b.add_argument("--zk-port", type=int, default=12181, help="ZooKeeper port on 127.0.0.1 (default: %(default)s)")
    _config_args(b)

    c = _command(sub, "config", "print the config a command would run with, or the reference of every key")
    c.add_argument("--doc", action="store_true",
                   help="print the reference of every key (default, unit, range, meaning) as Markdown: "
                        "docs/configuration.md")
    _config_args(c)

    rp = _command(sub, "report", "write the daily airplay report of a run's output dir (cue sheets, figures, "
                                 "one HTML page)")
    _report_args(rp)

    d = _command(sub, "demo", "run on the shared dev programmes, encoded as MPEG-TS, and score them")
    d.add_argument("--shared", default=None, help="the shared folder (default: ../shared beside the repo)")
    d.add_argument("--out", default="out/demo", help="output directory (default: %(default)s)")
    d.add_argument("--codecs", default="aac,mp2",
                   help="comma-separated broadcast audio codecs to encode each programme with: aac, mp2, ac3 "
                        "(default: %(default)s)")
    _config_args(d)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        cfg = config_mod.load(args.config, args.set)
    except config_mod.ConfigError as e:
        log.error("%s", e)
        return 2
    logging.getLogger().setLevel(cfg["runtime"]["log_level"])
    if args.command == "run" and Path(args.out).exists() and not Path(args.out).is_dir():
        # said before the model loads, not as a traceback after it
        log.error("--out %s is a file; onair run writes its records into a folder", args.out)
        return 2
    if args.command in MODEL_COMMANDS:
        native_stderr.import_tensorflow()
    if getattr(args, "metrics_port", None) is not None:
        cfg["metrics"]["port"] = args.metrics_port
    try:
        return COMMANDS[args.command](args, cfg)
    except (config_mod.ConfigError, ValueError) as e:
        log.error("%s", e)
        return 2
    except RuntimeError as e:
        from pipeline.heads import HeadMissing
        from pipeline.models import ModelNotFound
        if isinstance(e, (HeadMissing, ModelNotFound)):
            log.error("%s", e)
            return 2
        raise


def cmd_run(args, cfg) -> int:
    from pipeline.direct import DirectRun, install_signal_handlers, parse_inputs
    inputs = parse_inputs(args.input)
    from pipeline.progress import for_files
    run = DirectRun(inputs, args.out, cfg, _metrics(cfg), embedder=load_embedder(cfg),
                    progress=for_files(inputs, cfg["source"]["live"]), start_time=args.start_time)
    install_signal_handlers(run.stop)
    results = run.run()
    for r in results.values():
        state = "ok" if r.ok else f"FAILED ({r.reason})"
        log.info("channel %s: %s, %.1f s of audio, %d segments %s", r.channel, state, r.audio_s, r.segments,
                 json.dumps(r.extra))
    log.info("done: %s; outputs in %s", json.dumps(run.summary), args.out)
    if args.metrics_out:
        run.metrics.write_textfile(args.metrics_out)
    return 0 if any(r.ok for r in results.values()) else 1


def cmd_genre(args, cfg) -> int:
    from pipeline.training.audiofile import frames_of, read_audio
    from pipeline.heads import HeadMissing, load_genre_model
    embedder = load_embedder(cfg)
    model = load_genre_model(cfg, embedder)
    if model is None:
        raise HeadMissing(f"no genre head for backend '{embedder.name}'; train one with onair train --head genre "
                          f"--backend {embedder.name} --manifest ../shared/data/manifest.csv")
    failed = 0
    for path in args.files:
        try:
            res = embedder.embed(frames_of(read_audio(path)))
        except Exception as e:  # one unreadable file is reported, the others are still tagged
            log.error("%s: cannot tag: %s", path, str(e).splitlines()[0] if str(e) else type(e).__name__)
            failed += 1
            continue
        scores = None if res.class_scores is None else res.class_scores.mean(0)
        p = model.probs(model.frame_inputs(res.embeddings, res.features).mean(0), scores)
        print(json.dumps({"path": path, "tags": model.tags(p, cfg["genre"]["top_k"])}), flush=True)
    return 1 if failed == len(args.files) else 0


def cmd_train(args, cfg) -> int:
    from pipeline.heads import head_path
    from pipeline.training.train import main_report, train_music_head
    if args.backend:
        cfg["embedding"]["backend"] = args.backend
    embedder = load_embedder(cfg)
    out = Path(args.out) if args.out else head_path(cfg, embedder.name, args.head)
    if args.head == "genre":
        from pipeline.heads import genre_model_for
        from pipeline.training.train import train_genre_head
        meta = train_genre_head(embedder, Path(args.manifest), out, Path(args.cache),
                                genre_model_for(cfg, embedder))
        v = meta["validation"]
        print(json.dumps({"backend": meta["backend"], "accuracy": v["accuracy"],
                          "accuracy_head_only": v["accuracy_head_only"], "classes": v["classes"]}))
        return 0
    meta = train_music_head(embedder, Path(args.manifest), [Path(d) for d in args.music_dir],
                            Path(args.programmes) if args.programmes else None, out, Path(args.cache),
                            cap=args.frames_per_file, composer=_composer(args), compose=args.compose, beds=args.beds,
                            lag=cfg["hmm"]["lag_frames"])
    print(main_report(meta))
    return 0


def cmd_ingest(args, cfg) -> int:
    from pipeline.kafka.ingest import Ingest
    from pipeline.direct import install_signal_handlers, parse_inputs
    ing = Ingest(parse_inputs(args.input), cfg, audio_only=args.audio_only, rate=args.rate, metrics=_metrics(cfg))
    install_signal_handlers(ing.stop)
    results = ing.run()
    for ch, r in results.items():
        log.info("channel %s: %s, %d chunks, %.1f MB", ch, "ok" if r["ok"] else f"FAILED ({r['reason']})",
                 r["chunks"], r["bytes"] / 1e6)
    return 0 if any(r["ok"] for r in results.values()) else 1


def cmd_worker(args, cfg) -> int:
    from pipeline.direct import install_signal_handlers
    from pipeline.kafka.worker import Worker
    w = Worker(cfg, embedder=load_embedder(cfg), metrics=_metrics(cfg))
    install_signal_handlers(w.stop)
    w.run(idle_exit_s=args.exit_when_idle)
    print(json.dumps(w.summary()), flush=True)
    return 0


def cmd_recognize(args, cfg) -> int:
    from pipeline.recognition.stage import consume_kafka, follow_dir
    from pipeline.direct import install_signal_handlers
    import threading
    stop = threading.Event()
    install_signal_handlers(stop)
    metrics = _metrics(cfg)
    if args.kafka:
        n = consume_kafka(cfg, metrics, stop, args.exit_when_idle)
    else:
        n = follow_dir(cfg, Path(args.dir), metrics, stop, args.exit_when_idle)
    log.info("recognize done: %d requests handled", n)
    return 0


def cmd_prune(args, cfg) -> int:
    from pipeline.prune import prune_clips
    done = prune_clips(args.dir, args.keep_clips_days)
    print(json.dumps(done))
    return 0


def cmd_fingerprints(args, cfg) -> int:
    from pipeline.identity import admin
    from pipeline.identity.store import IndexError_
    try:
        store = admin.open_store(cfg, Path(args.dir) if args.dir else None)
        if args.action == "stats":
            print(json.dumps({**store.stats(), "storage": store.storage()}))
        elif args.action == "compact":
            if not hasattr(store, "compact"):
                log.error("compact: only the SQLite index is compacted (PostgreSQL keeps one row per landmark)")
                return 2
            print(json.dumps(store.compact(full=True)))
        elif args.action == "list":
            for row in admin.listing(store):
                print(json.dumps(row, ensure_ascii=False))
        elif args.action == "export":
            n = admin.export(store, sys.stdout, args.hashes)
            log.info("exported %d items", n)
        else:
            days = args.unknown_days if args.unknown_days is not None else cfg["identity"]["unknown_window_days"]
            print(json.dumps(admin.prune(store, days, args.unused_days)))
    except IndexError_ as e:
        log.error("%s", e)
        return 2
    return 0


def cmd_archive(args, cfg) -> int:
    import threading

    from pipeline.direct import install_signal_handlers
    from pipeline.kafka.archive import archive_kafka
    stop = threading.Event()
    install_signal_handlers(stop)
    archive_kafka(cfg, Path(args.out), stop, args.exit_when_idle, _metrics(cfg))
    return 0


def cmd_overlay(args, cfg) -> int:
    import signal
    import threading

    from pipeline.overlay.server import serve
    if args.port is not None:
        cfg["overlay"]["port"] = config_mod.SCHEMA["overlay"]["port"].check("overlay.port", args.port)
    stop = threading.Event()
    # not pipeline.direct's helper: it would load the decoder and models into a process that serves HTML
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return serve(cfg, _metrics(cfg), stop, Path(args.dir) if args.dir else None)


def cmd_broker(args, cfg) -> int:
    from pipeline.kafka import broker
    if args.action == "start":
        b = broker.start(args.dir, args.port, args.zk_port, partitions=cfg["kafka"]["partitions"],
                         max_message_bytes=cfg["kafka"]["max_message_bytes"] * 2)
        broker.create_topic(b, cfg["kafka"]["topic_state"], cfg["kafka"]["partitions"], compact=True)
        print(f"Kafka 0.9.0.1 on {b.bootstrap} (pids {b.kafka_pid}, {b.zk_pid}); data in {b.dir}")
        return 0
    if args.action == "stop":
        print("stopped" if broker.stop(args.dir) else "not running")
        return 0
    b = broker.status(args.dir)
    print(f"running on {b.bootstrap} (pids {b.kafka_pid}, {b.zk_pid})" if b else "not running")
    return 0 if b else 3


def _composer(args) -> Path | None:
    if not args.compose:
        return None
    path = Path(args.composer) if args.composer else Path(__file__).resolve().parent.parent.parent / "shared" / \
        "tools" / "broadcast_sim.py"
    if not path.is_file():
        raise ValueError(f"--compose needs the programme composer: {path} not found (give --composer PATH)")
    return path


def cmd_config(args, cfg) -> int:
    if args.doc:
        from pipeline.configdoc import render
        sys.stdout.write(render())
    else:
        import yaml
        sys.stdout.write(yaml.safe_dump(cfg, sort_keys=False, width=100))
    return 0


def cmd_demo(args, cfg) -> int:
    from pipeline.demo import run_demo
    return run_demo(args, cfg)


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, help="the output dir of onair run (its YYYY-MM-DD day folders)")
    p.add_argument("--day", help="the UTC day YYYY-MM-DD (default: the newest day folder with records)")
    p.add_argument("--channel", help="only this channel (default: every channel with records that day)")
    p.add_argument("--tz", metavar="ZONE", help="show times in this zone, e.g. Europe/Paris (default: UTC); "
                                                "the day and the stored times stay UTC")
    p.add_argument("--out", help="report folder (default: DIR/reports); the day's files go to OUT/YYYY-MM-DD/")
    p.set_defaults(config=None, set=[])      # the report reads no config


def cmd_report(args, cfg) -> int:
    from pipeline.report import write_report
    try:
        paths = write_report(args.dir, args.day, args.channel, args.tz, args.out)
    except OSError as e:
        log.error("cannot write the report: %s", e)
        return 1
    for path in paths:
        print(path)
    return 0


COMMANDS = {"run": cmd_run, "train": cmd_train, "demo": cmd_demo, "ingest": cmd_ingest, "worker": cmd_worker,
            "broker": cmd_broker, "recognize": cmd_recognize, "overlay": cmd_overlay,
            "genre": cmd_genre, "config": cmd_config, "report": cmd_report,
            "archive": cmd_archive, "prune": cmd_prune, "fingerprints": cmd_fingerprints}


if __name__ == "__main__":
    sys.exit(main())
