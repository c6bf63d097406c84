"""Direct mode: `onair run` reads its sources itself (no Kafka).

One thread per source demuxes and decodes it and feeds the engine; the engine
batches all channels' frames into the embedder and writes DIR/<kind>.jsonl. A
failing input is logged once, counted, and leaves the other channels running.
With a provider configured, requests also go to a recognition thread that
writes DIR/nowplaying.jsonl and the ledger.
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from operators.audio.constants import SAMPLE_RATE
from pipeline.clock import StreamClock, parse_iso
from pipeline.engine import Engine
from pipeline.heads import hmm_params, load_heads
from pipeline.metrics import Metrics
from pipeline.models import load_embedder
from pipeline.outputs import DailyJsonlOutputs, Tee
from pipeline.params import EngineParams
from pipeline.sources import Source, SourceError, is_live, run_inputs

log = logging.getLogger("onair.run")


@dataclass
class ChannelResult:
    channel: str
    url: str
    ok: bool = True
    reason: str = ""
    audio_s: float = 0.0
    segments: int = 0
    requests: int = 0
    extra: dict = field(default_factory=dict)


def parse_inputs(items: list[str]) -> list[tuple[str, str]]:
    out, seen = [], set()
    for item in items:
        ch, sep, url = item.partition("=")
        if not sep or not ch or not url:
            raise ValueError(f"--input {item!r}: expected CHANNEL=URL")
        if ch in seen:
            raise ValueError(f"--input {item!r}: channel {ch!r} given twice")
        seen.add(ch)
        out.append((ch, url))
    return out


class DirectRun:
    def __init__(self, inputs: list[tuple[str, str]], out_dir: str | Path, cfg: dict, metrics: Metrics | None = None,
                 embedder=None, progress=None, observer=None, start_time: float | None = None):
        self.inputs = inputs
        self.start_time = start_time   # --start-time: UTC of stream time 0 of every file input
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.metrics = metrics or Metrics(currency=cfg["recognition"]["currency"]).configure(cfg)
        self.stop = threading.Event()
        self.embedder = embedder or load_embedder(cfg)
        # heads are loaded (and checked) here, so a missing one stops the command before any input opens
        self.heads = load_heads(cfg, self.embedder, self.metrics)
        self.params = EngineParams.from_config(cfg, hmm_params(self.heads.music, cfg))
        self.results = {ch: ChannelResult(ch, url) for ch, url in inputs}
        self.progress = progress       # pipeline.progress.Progress, or None
        self.runs: dict = {}           # channel -> its current run (ChannelDetector)
        self.observer = observer       # see Engine

    def run(self) -> dict[str, ChannelResult]:
        from pipeline.identity.index import open_shared_index
        from pipeline.recognition.stage import RecognitionStage, ledger_path, make_recognizer
        files = DailyJsonlOutputs(self.out_dir)
        ledger = ledger_path(self.cfg, self.out_dir)
        # one index for the recognizer (answers, learns) and the channels (check, index plays)
        index = open_shared_index(self.cfg, self.out_dir, self.metrics)
        recognizer = make_recognizer(self.cfg, ledger, self.metrics, index=index if index is not None else False)
        stage = None
        if recognizer is not None:
            stage = RecognitionStage(recognizer, functools.partial(files.write, "nowplaying"),
                                     functools.partial(files.write, "corrections"))
            stage.start()
        self.run_start = time.time()
        engine = Engine(self.embedder, self.heads, self.params, Tee(files, functools.partial(self._seen, stage)),
                        self.metrics, self.observer)
        engine.index = index
        engine.start()
        if self.progress is not None:
            self.progress.start()
        t0 = time.monotonic()
        try:
            run_inputs([(ch, functools.partial(self._source_thread, ch, url, engine)) for ch, url in self.inputs],
                       self.stop, check=lambda: engine.error is not None)
            engine.close()
        finally:
            if stage is not None:
                stage.close()
            files.close()
            if self.progress is not None:
                self.progress.close()
        self.summary = {"wall_s": round(time.monotonic() - t0, 2), "frames": engine.frames_done,
                        "embed_s": round(engine.embed_seconds, 2)}
        return self.results

    def _seen(self, stage, kind: str, record: dict) -> None:
        res = self.results[record["channel"]]
        if kind == "segments":
            res.segments += 1
            if self.progress is not None:
                run = self.runs[record["channel"]]
                self.progress.note(record["channel"], run.newest_time, run.music_s, run.decided_s)
        elif kind == "requests":
            res.requests += 1
            if stage is not None:
                stage.submit(record)

    def _clock(self, channel: str, src: Source) -> StreamClock:
        """A file's UTC: --start-time, else its container's creation_time, else the run's start."""
        if self.start_time is not None:
            return StreamClock.fixed("given", self.start_time)
        if src.creation_time:
            try:
                return StreamClock.fixed("container", parse_iso(src.creation_time))
            except ValueError:
                log.warning("channel %s: creation_time %r is not a time; the run's start is used", channel,
                            src.creation_time)
        return StreamClock.fixed("run_start", self.run_start)

    def _source_thread(self, channel: str, url: str, engine: Engine) -> None:
        res = self.results[channel]
        src = Source(channel, url, self.cfg, self.metrics, self.stop)
        s = self.cfg["source"]
        live = is_live(url, s["live"])
        if live and self.start_time is not None:
            log.warning("channel %s: --start-time applies to files; a live source runs on its receive clock",
                        channel)
        clock = StreamClock("live", resync_s=s["clock_resync_s"], resync_hold_s=s["clock_resync_hold_s"]) \
            if live else None
        run = self.runs[channel] = engine.open(channel, clock)
        progress = self.progress
        first = [True]

        def on_chunk(chunk):
            if live:
                run.clock.observe(chunk.time + len(chunk.samples) / SAMPLE_RATE, time.time())
            elif first[0]:
                # the container is open by now, its tags read; nothing of the run is decided yet
                run.clock = self._clock(channel, src)
                log.info("channel %s: stream time 0 is %s (clock: %s)", channel, run.clock.iso(0.0),
                         run.clock.kind)
            first[0] = False
            engine.feed(run, chunk)
            if progress is not None:
                progress.note(channel, run.newest_time, run.music_s, run.decided_s)

        try:
            src.run(on_chunk)
        except SourceError as e:
            res.ok, res.reason = False, e.reason
            log.error("channel %s: input %s failed: %s", channel, url, e)
        except Exception as e:  # a bug or an unexpected library error must not take other channels down
            if engine.error is not None:
                return
            res.ok, res.reason = False, "internal_error"
            log.exception("channel %s: input %s failed: %s", channel, url, e)
        res.audio_s = src.normalizer.samples_out / SAMPLE_RATE
        res.extra = {"decode_errors": src.stats.decode_errors, "reconnects": src.stats.reconnects,
                     "discontinuities": src.normalizer.discontinuities, "gaps": src.normalizer.gaps,
                     "format_changes": src.normalizer.format_changes, "codec_changes": src.stats.codec_changes}
        if engine.error is None:
            end = src.normalizer.time
            if live and src.audio_seen:
                # stopped during an outage: the silence up to the stop is no signal, not nothing
                down = time.monotonic() - src.last_audio_wall
                if down >= run.min_no_signal_s:
                    end += down
                    run.outage(end)
            engine.end(run, end)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and Ctrl-C (SIGINT) both stop cleanly: `stop` is set, sources close, open segments
    and genre records are closed at the stop time and written. A second Ctrl-C interrupts at once."""
    def handler(signum, _frame):
        log.info("%s: stopping (open segments are closed and written)", signal.Signals(signum).name)
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
