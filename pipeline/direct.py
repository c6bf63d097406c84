"""Direct mode: `onair run` reads its sources itself (no Kafka).

One thread per source decodes and cuts frames; one embedding thread batches
frames from all channels; each channel's detector turns embeddings into
segments written to DIR/segments.jsonl. A failing input is logged once,
counted, and leaves the other channels running.
"""
from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.engine.batcher import STOP, EmbedBatcher, EndItem, FrameItem
from pipeline.engine.channel import ChannelDetector
from pipeline.heads import hmm_params, load_heads
from pipeline.metrics import Metrics
from pipeline.models import load_embedder
from pipeline.outputs import JsonlSink
from pipeline.sources import Source, SourceError, run_inputs

log = logging.getLogger("onair.run")

OUTPUTS = ("segments", "requests", "genres", "nowplaying")


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
                 embedder=None):
        self.inputs = inputs
        self.out_dir = Path(out_dir)
        self.cfg = cfg
        self.metrics = metrics or Metrics(currency=cfg["recognition"]["currency"]).configure(cfg)
        self.stop = threading.Event()
        self.embedder = embedder or load_embedder(cfg)
        self.head, self.talkover, self.genre_model = load_heads(cfg, self.embedder, self.metrics)
        self.results = {ch: ChannelResult(ch, url) for ch, url in inputs}
        self.on_request = None       # the recognition stage, when one runs in this process

    def run(self) -> dict[str, ChannelResult]:
        sinks = {name: JsonlSink(self.out_dir / f"{name}.jsonl") for name in OUTPUTS}
        hmm = hmm_params(self.head, self.cfg)
        from pipeline.recognition.stage import RecognitionStage, ledger_path, make_recognizer
        recognizer = make_recognizer(self.cfg, ledger_path(self.cfg, self.out_dir), self.metrics)
        stage = None
        if recognizer is not None:
            stage = RecognitionStage(recognizer, sinks["nowplaying"])
            stage.start()
            self.on_request = stage.submit

        def segment_sink(seg):
            self.results[seg["channel"]].segments += 1
            sinks["segments"].write(seg)

        def request_sink(req):
            self.results[req["channel"]].requests += 1
            sinks["requests"].write(req)
            if self.on_request is not None:
                self.on_request(req)

        detectors = {ch: ChannelDetector(ch, self.head, hmm, self.cfg["hmm"]["lag_frames"], segment_sink,
                                         self.metrics, self.cfg["debounce"], request_sink, self.genre_model,
                                         self.cfg["genre"], sinks["genres"].write, self.talkover)
                     for ch, _ in self.inputs}
        items: queue.Queue = queue.Queue(maxsize=self.cfg["runtime"]["queue_frames"])
        emb = self.cfg["embedding"]
        batcher = EmbedBatcher(self.embedder, items, emb["batch_size"], emb["max_wait_ms"] / 1000.0,
                               on_frames=lambda ch, *a: detectors[ch].on_embedded(*a),
                               on_end=lambda ch, end: detectors[ch].finish(end), metrics=self.metrics)
        batcher.start()
        t0 = time.monotonic()
        run_inputs([(ch, functools.partial(self._source_thread, ch, url, detectors[ch], items, batcher))
                    for ch, url in self.inputs], self.stop, check=lambda: batcher.error is not None)
        items.put(STOP)
        batcher.join()
        if stage is not None:
            stage.close()
        for s in sinks.values():
            s.close()
        if batcher.error is not None:
            raise batcher.error
        wall = time.monotonic() - t0
        self.summary = {"wall_s": round(wall, 2), "frames": batcher.frames_done,
                        "embed_s": round(batcher.embed_seconds, 2)}
        return self.results

    def _source_thread(self, channel: str, url: str, det: ChannelDetector, items: queue.Queue,
                       batcher: EmbedBatcher) -> None:
        res = self.results[channel]
        src = Source(channel, url, self.cfg, self.metrics, self.stop)

        def on_chunk(chunk):
            for t, frame in det.frames_for(chunk):
                self._put(items, FrameItem(channel, t, frame, det.newest_time), batcher)

        try:
            src.run(on_chunk)
        except SourceError as e:
            res.ok, res.reason = False, e.reason
            log.error("channel %s: input %s failed: %s", channel, url, e)
        except Exception as e:  # a bug or an unexpected library error must not take other channels down
            res.ok, res.reason = False, "internal_error"
            log.exception("channel %s: input %s failed: %s", channel, url, e)
        res.audio_s = src.normalizer.samples_out / 16000
        res.extra = {"decode_errors": src.stats.decode_errors, "reconnects": src.stats.reconnects,
                     "discontinuities": src.normalizer.discontinuities, "gaps": src.normalizer.gaps,
                     "format_changes": src.normalizer.format_changes, "codec_changes": src.stats.codec_changes}
        self._put(items, EndItem(channel, max(det.newest_time, src.normalizer.time)), batcher)

    def _put(self, items: queue.Queue, item, batcher: EmbedBatcher) -> None:
        # bounded queue: a file source waits for the model instead of filling memory
        while True:
            try:
                items.put(item, timeout=0.5)
                return
            except queue.Full:
                if batcher.error is not None or not batcher.is_alive():
                    return


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()
    signal.signal(signal.SIGTERM, handler)
