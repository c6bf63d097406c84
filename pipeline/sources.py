"""Live and file sources: open with PyAV, pick the audio track, decode, and
hand 16 kHz mono chunks with stream time to a callback.

Files run as fast as the machine allows (or at `source.pace` times real
time) and end at EOF. Live sources (network URLs, or `source.live: true`)
reconnect with exponential backoff after EOF or an error, and a watchdog
restarts one that delivers no audio for `source.watchdog_s`; the outage stays
a gap in stream time.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import av

from operators.audio.decode import AudioNormalizer, Chunk, PacketDecoder, UnsupportedCodec
from pipeline.metrics import Metrics

log = logging.getLogger("onair.source")

LIVE_SCHEMES = {"udp", "rtp", "srt", "rtmp", "rtmps", "rtsp", "http", "https", "tcp", "hls"}


class SourceError(RuntimeError):
    """A failure of one input, with a short `reason` for metrics."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Stalled(SourceError):
    pass


class Unrecoverable(SourceError):
    """A failure that no reconnect can mend (a live source fails for good)."""


@dataclass
class SourceStats:
    reconnects: int = 0
    decode_errors: int = 0
    codec_changes: int = 0


def is_live(url: str, setting="auto") -> bool:
    if setting != "auto":
        return bool(setting)
    scheme = urlparse(url).scheme.lower()
    return scheme in LIVE_SCHEMES


def select_audio(container, selector: str):
    audio = list(container.streams.audio)
    if not audio:
        raise SourceError("no_audio", "no audio track in the stream")
    kind, _, value = selector.partition(":")
    if kind == "first":
        return audio[0]
    if kind == "index":
        i = int(value)
        if i >= len(audio):
            raise SourceError("no_audio", f"audio track index {i} requested, the stream has {len(audio)}")
        return audio[i]
    if kind == "lang":
        for s in audio:
            if (s.metadata.get("language") or "").lower() == value.lower():
                return s
        langs = [s.metadata.get("language") for s in audio]
        raise SourceError("no_audio", f"no audio track in language {value!r} (tracks: {langs})")
    pid = int(value, 0)
    for s in audio:
        if s.id == pid:
            return s
    raise SourceError("no_audio", f"no audio track with PID {pid} (0x{pid:x}); audio PIDs: {[s.id for s in audio]}")


def opened_line(channel: str, url: str, stream, selector: str) -> str:
    """The one log line of a source that opened: what was picked, as the demuxer announced it
    (a mid-stream change of codec or format is logged where it is detected)."""
    cc = stream.codec_context
    layout = getattr(getattr(cc, "layout", None), "name", None) or f"{getattr(cc, 'channels', '?')} channels"
    return (f"channel {channel}: {url} opened: {cc.name} {cc.sample_rate} Hz {layout}, track {selector} "
            f"(#{stream.index}, PID {stream.id})")


class Input:
    """One channel's input: open with PyAV, pick the audio track, pump packets.

    `run(sink)` blocks until the input ends (file), fails for good (file), or
    `stop` is set (live); live inputs reconnect with backoff. Subclasses say
    what a packet becomes: decoded audio (Source) or remuxed bytes (ingest).
    """

    def __init__(self, channel: str, url: str, cfg: dict, metrics=None, stop: threading.Event | None = None):
        self.channel = channel
        self.url = url
        self.cfg = cfg["source"]
        self.live = is_live(url, self.cfg["live"])
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.stats = SourceStats()
        self.audio_seen = False
        self._session_had_audio = False
        self.last_audio_wall = 0.0      # monotonic time of the newest audio
        self.creation_time = None       # the container's creation_time tag, when it has one

    # -- what subclasses provide
    def _prepare(self, container, stream) -> None:
        """Set up for a new session on `stream` (raise SourceError if it cannot be handled)."""

    def _streams(self, container, stream) -> list:
        return [stream]

    def _packet(self, packet, sink) -> bool:
        """Handle one packet; True when it gave audio."""
        raise NotImplementedError

    def _end_session(self, sink) -> bool:
        return False

    def _finish(self, sink) -> None:
        """After the last session."""

    # -- the loop
    def run(self, sink) -> None:
        delay = self.cfg["reconnect_min_s"]
        while not self.stop.is_set():
            self._session_had_audio = False
            try:
                self._session(sink)
                if not self.live or self.stop.is_set():   # a clean stop is not an end of stream
                    break
                err = SourceError("eof", "stream ended")
            except SourceError as e:
                err = e
            except av.error.FFmpegError as e:
                err = SourceError("read_error", _ffmpeg_message(e))
            if self.live and self.stop.is_set():      # the read was cut short by the stop itself
                break
            self._count("input_errors", reason=err.reason)
            self._set_up(False)
            if not self.live or isinstance(err, Unrecoverable):
                self._finish(sink)
                raise err
            if self._session_had_audio:
                delay = self.cfg["reconnect_min_s"]
            log.warning("channel %s: %s: %s; reconnecting in %.1f s", self.channel, self.url, err, delay)
            if self.stop.wait(delay):
                break
            delay = min(max(delay * 2, 0.1), self.cfg["reconnect_max_s"])
            self.stats.reconnects += 1
            self._count("reconnects")
        self._set_up(False)
        self._finish(sink)

    def _session(self, sink) -> None:
        timeout = (self.cfg["open_timeout_s"], self.cfg["read_timeout_s"])
        try:
            container = av.open(self.url, timeout=timeout, options={"fflags": "+discardcorrupt"})
        except FileNotFoundError:
            raise SourceError("not_found", "no such file") from None
        except av.error.ProtocolNotFoundError:
            # retrying cannot help: this FFmpeg build lacks the protocol (PyPI's PyAV has no libsrt)
            raise Unrecoverable("unsupported_protocol", f"protocol not supported by this PyAV/FFmpeg build: "
                                f"{urlparse(self.url).scheme}://") from None
        except av.error.FFmpegError as e:
            raise SourceError("open_failed", f"cannot open: {_ffmpeg_message(e)}") from None
        try:
            stream = select_audio(container, self.cfg["audio_track"])
            if stream.codec_context is None or stream.codec_context.name in ("", "none"):
                raise SourceError("unsupported_codec",
                                  f"unsupported audio codec: no decoder for track #{stream.index}")
            self.creation_time = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
            self._prepare(container, stream)
            log.info("%s", opened_line(self.channel, self.url, stream, self.cfg["audio_track"]))
            self._set_up(True)
            self._pump(container, stream, sink)
        finally:
            container.close()

    def _pump(self, container, stream, sink) -> None:
        watchdog = self.cfg["watchdog_s"]
        last_audio = time.monotonic()
        got_audio = False
        try:
            for packet in container.demux(*self._streams(container, stream)):
                if self.stop.is_set():
                    return
                if self._packet(packet, sink):
                    got_audio = self.audio_seen = self._session_had_audio = True
                    last_audio = self.last_audio_wall = time.monotonic()
                if self.live and time.monotonic() - last_audio > watchdog:
                    raise Stalled("stalled", f"no audio for {watchdog:.0f} s")
        except av.error.FFmpegError as e:
            if not self.live and not got_audio:
                raise SourceError("read_error", f"cannot read: {_ffmpeg_message(e)}") from None
            if self.live:
                msg = _ffmpeg_message(e)
                if "timed out" in msg.lower() or "Immediate exit" in msg or "Exit requested" in msg:
                    raise Stalled("stalled", f"no data for {self.cfg['read_timeout_s']:.0f} s") from None
                raise SourceError("read_error", msg) from None
            log.warning("channel %s: input ends with a read error after audio: %s", self.channel,
                        _ffmpeg_message(e))
        except IndexError:
            # PyAV's demux sizes its per-stream table when it starts; damaged packets can announce
            # new streams (a corrupt PID) and its flush at the end of input then reads past the
            # table. Every packet was read by then: the input ended.
            if self.live:          # counted by run(), which reconnects
                raise SourceError("demux_eof", "the demuxer failed at the end of input (damaged packets "
                                  "announced new streams)") from None
            self._count("input_errors", reason="demux_eof")
            log.warning("channel %s: the demuxer failed at the end of input (damaged packets announced new "
                        "streams); the audio read so far is kept", self.channel)
        got_audio = self._end_session(sink) or got_audio
        if not got_audio and not self.live:
            raise SourceError("no_audio_decoded", "no decodable audio in the input")

    def _count(self, what: str, n: float = 1, **labels) -> None:
        self.metrics.count(what, self.channel, n, **labels)

    def _set_up(self, up: bool) -> None:
        self.metrics.source_up.labels(self.channel).set(1 if up else 0)


class Source(Input):
    """Decoding input of direct mode: hands 16 kHz mono Chunks to `sink`."""

    def __init__(self, channel: str, url: str, cfg: dict, metrics=None, stop: threading.Event | None = None):
        super().__init__(channel, url, cfg, metrics, stop)
        self.normalizer = AudioNormalizer(max_gap_s=self.cfg["max_gap_s"])
        self.decoder = None
        self._pace_origin: tuple[float, float] | None = None    # (monotonic, stream time) of the first chunk

    def _prepare(self, container, stream) -> None:
        try:
            self.decoder = PacketDecoder(stream)
        except UnsupportedCodec as e:
            raise SourceError("unsupported_codec", str(e)) from None
        except (av.error.FFmpegError, ValueError) as e:
            raise SourceError("unsupported_codec", f"cannot decode audio track: {_ffmpeg_message(e)}") from None
        self._errors_seen = self.decoder.errors

    def _packet(self, packet, sink) -> bool:
        dec = self.decoder
        frames = dec.decode(packet)
        if dec.errors != self._errors_seen:
            n = dec.errors - self._errors_seen
            self._errors_seen = dec.errors
            self.stats.decode_errors += n
            self._count("decode_errors", n)
            if self.stats.decode_errors == n or self.stats.decode_errors % 100 == 0:
                log.warning("channel %s: %d corrupt audio packet(s) dropped (%s)", self.channel,
                            self.stats.decode_errors, getattr(dec, "last_error", ""))
        if dec.codec_changes != self.stats.codec_changes:
            self.stats.codec_changes = dec.codec_changes
            self._count("codec_changes")
            log.warning("channel %s: audio codec changed mid-stream to %s", self.channel, dec.codec)
        for frame in frames:
            if not self._session_had_audio and self.audio_seen:
                # a live outage is a gap in stream time as long as it lasted, not a splice
                self.normalizer.expect_gap(time.monotonic() - self.last_audio_wall)
                self._session_had_audio = True
            changes, bad = self.normalizer.format_changes, self.normalizer.bad_frames
            self._emit(self.normalizer.push(frame), sink)
            if self.normalizer.bad_frames != bad:
                self.stats.decode_errors += 1
                self._count("decode_errors")
                log.warning("channel %s: a damaged audio frame (%s, %s, %d Hz) was dropped", self.channel,
                            frame.format.name, frame.layout.name, frame.sample_rate)
            if self.normalizer.format_changes != changes:
                log.info("channel %s: audio format changed mid-stream to %s, %s, %d Hz (resampled to 16 kHz "
                         "mono as before)", self.channel, frame.format.name, frame.layout.name, frame.sample_rate)
        return bool(frames)

    def _end_session(self, sink) -> bool:
        frames = self.decoder.flush() if self.decoder else []
        for frame in frames:
            self._emit(self.normalizer.push(frame), sink)
        return bool(frames)

    def _finish(self, sink) -> None:
        self._emit(self.normalizer.flush(), sink)

    def _emit(self, chunks: list[Chunk], sink) -> None:
        for chunk in chunks:
            self._pace(chunk)
            sink(chunk)

    def _pace(self, chunk: Chunk) -> None:
        """A file read at `source.pace` times real time: several channels replayed from files then
        interleave as they would live (what one channel's answer teaches the index reaches the
        others in stream order), and an overlay can be tested against a recording."""
        pace = self.cfg["pace"]
        if pace <= 0 or self.live:
            return
        if self._pace_origin is None:
            self._pace_origin = (time.monotonic(), chunk.time)
        wall0, t0 = self._pace_origin
        ahead = wall0 + (chunk.time - t0) / pace - time.monotonic()
        if ahead > 0:
            self.stop.wait(ahead)


def run_inputs(targets: list[tuple[str, object]], stop: threading.Event, check=None) -> None:
    """Run one thread per input until all end; Ctrl-C sets `stop` and waits for them to close.
    `check()` is called while waiting; returning True stops the inputs (e.g. the model failed)."""
    threads = [threading.Thread(target=fn, name=f"input-{name}", daemon=True) for name, fn in targets]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
            if check is not None and check():
                stop.set()
    except KeyboardInterrupt:
        log.info("interrupted: closing channels")
        stop.set()
        for t in threads:
            t.join()


def _ffmpeg_message(e: Exception) -> str:
    s = getattr(e, "strerror", None) or str(e)
    return str(s).strip().splitlines()[0] if str(s).strip() else type(e).__name__
