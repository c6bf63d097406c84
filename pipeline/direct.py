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
from pipeline.engine import Engine
from pipeline.heads import hmm_params, load_heads
from pipeline.metrics import Metrics
from pipeline.models import load_embedder
from pipeline.outputs import JsonlOutputs, Tee
from pipeline.params import EngineParams
from pipeline.sources import Source, SourceError, run_inputs

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
                 embedder=None, progress=None, observer=None):
        self.inputs = inputs
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
        from pipeline.recognition.stage import RecognitionStage, ledger_path, make_recognizer
        files = JsonlOutputs(self.out_dir)
        recognizer = make_recognizer(self.cfg, ledger_path(self.cfg, self.out_dir), self.metrics)
        stage = None
        if recognizer is not None:
            stage = RecognitionStage(recognizer, files.sinks["nowplaying"])
            stage.start()
        engine = Engine(self.embedder, self.heads, self.params, Tee(files, functools.partial(self._seen, stage)),
                        self.metrics, self.observer).start()
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

    def _source_thread(self, channel: str, url: str, engine: Engine) -> None:
        res = self.results[channel]
        run = self.runs[channel] = engine.open(channel)
        src = Source(channel, url, self.cfg, self.metrics, self.stop)
        progress = self.progress

        def on_chunk(chunk):
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
            engine.end(run, src.normalizer.time)


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
