"""Decoded audio frames -> 16 kHz mono float32 with stream time.

Stream time is seconds since the channel's first decoded sample, derived
from PTS (DESIGN.md §2). Small PTS jitter is absorbed; a forward jump up to
`max_gap_s` is a real gap in the source and stays a gap; a backward jump or a
larger forward jump is a discontinuity (PTS reset, wrap, splice): stream time
continues where it was, and the caller resets its framing state.
A change of sample format, layout or rate rebuilds the resampler (PyAV's
resampler refuses, or silently passes through, frames that differ from the
first one it saw).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

import av
import numpy as np
from av.filter import Graph

from operators.audio.framing import SAMPLE_RATE


@dataclass
class Chunk:
    time: float            # stream time of samples[0]
    samples: np.ndarray    # float32 mono at 16 kHz
    reset: bool = False    # framing must restart at `time`
    reason: str = ""       # "gap" | "discontinuity" | "" ; for logs and metrics


class Resampler:
    """Any audio frame -> float mono at 16 kHz: the filter graph of PyAV's AudioResampler
    (abuffer -> aformat -> abuffersink, bit-identical output) with one thread. PyAV's own
    leaves the graph's thread count to FFmpeg, which starts a pool of idle threads per
    graph: threads per channel, thousands of idle threads for hundreds of channels."""

    def __init__(self):
        self.graph = None
        self.passthrough = False

    def resample(self, frame) -> list:
        if self.graph is None:
            if frame is None:
                return []
            if (frame.format.name, frame.layout.name, frame.sample_rate) == ("flt", "mono", SAMPLE_RATE):
                self.passthrough = True
            self.graph = Graph()
            self.graph.threads = 1
            tb = {"time_base": str(frame.time_base)} if frame.time_base is not None else {}
            src = self.graph.add("abuffer", sample_rate=str(frame.sample_rate), sample_fmt=frame.format.name,
                                 channel_layout=frame.layout.name, **tb)
            fmt = self.graph.add("aformat", sample_rates=str(SAMPLE_RATE), sample_fmts="flt", channel_layouts="mono")
            sink = self.graph.add("abuffersink")
            src.link_to(fmt)
            fmt.link_to(sink)
            self.graph.configure()
        if self.passthrough:
            return [] if frame is None else [frame]
        self.graph.push(frame)
        out = []
        while True:
            try:
                out.append(self.graph.pull())
            except (EOFError, BlockingIOError):
                return out
            except av.error.FFmpegError as e:
                if e.errno != errno.EAGAIN:
                    raise
                return out


class AudioNormalizer:
    def __init__(self, max_gap_s: float = 5.0, jitter_s: float = 0.1):
        self.max_gap_s = max_gap_s
        self.jitter_s = jitter_s
        self._resampler = None
        self._key = None
        self._origin = None       # source PTS (s) at stream time 0
        self._in_next = 0.0       # stream time just after the last input frame
        self._out_anchor = 0.0    # stream time of the resampler's first output sample
        self._out_count = 0       # samples output since the anchor
        self.gaps = 0
        self.discontinuities = 0
        self.format_changes = 0
        self.bad_frames = 0       # decoded frames the resampler refused (dropped)
        self.samples_out = 0
        self._pending_gap = None

    def expect_gap(self, seconds: float) -> None:
        """The next frame follows an outage of `seconds` whatever its PTS says
        (a reconnected live source restarts its timestamps)."""
        self._pending_gap = max(0.0, float(seconds))

    @property
    def time(self) -> float:
        """Stream time of the newest sample seen (end of the audio so far)."""
        return self._in_next

    def push(self, frame: av.AudioFrame) -> list[Chunk]:
        out: list[Chunk] = []
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        pts = _pts_seconds(frame)
        duration = frame.samples / frame.sample_rate

        if self._origin is None:
            self._origin = pts if pts is not None else 0.0
            t, reason = 0.0, "start"
        else:
            t, reason = self._in_next, ""
            if self._pending_gap is not None:
                t, reason = self._in_next + self._pending_gap, "gap"
                self._origin = (pts if pts is not None else 0.0) - t
                self._pending_gap = None
                self.gaps += 1
            elif pts is not None:
                t_pts = pts - self._origin
                jump = t_pts - self._in_next
                if abs(jump) <= self.jitter_s:
                    pass
                elif 0 < jump <= self.max_gap_s:
                    t, reason = t_pts, "gap"
                    self.gaps += 1
                else:
                    self._origin = pts - self._in_next
                    reason = "discontinuity"
                    self.discontinuities += 1

        if key != self._key or reason:
            if self._key is not None and key != self._key:
                self.format_changes += 1
            out.extend(self._flush())
            self._resampler = Resampler()
            self._key = key
            self._out_anchor, self._out_count = t, 0
            first_reset = True
        else:
            first_reset = False

        try:
            resampled = self._resampler.resample(frame)
        except av.error.FFmpegError:
            # a damaged frame the resampling graph refuses (its parameters lie): dropped, and the next
            # frame starts a fresh graph, so the stream goes on
            self.bad_frames += 1
            self._resampler, self._key = None, None
            self._in_next = t + duration
            return out
        for rf in resampled:
            out.append(self._emit(rf, reset=first_reset and reason not in ("",), reason=reason))
            first_reset = False
        if first_reset and reason:
            # resampler held everything back; still tell the caller where the new run starts
            out.append(Chunk(t, np.zeros(0, np.float32), True, reason))
        self._in_next = t + duration
        return out

    def flush(self) -> list[Chunk]:
        return self._flush()

    def _flush(self) -> list[Chunk]:
        if self._resampler is None:
            return []
        try:
            chunks = [self._emit(rf) for rf in self._resampler.resample(None)]
        except av.error.FFmpegError:       # the graph's last samples are lost, not the stream
            self.bad_frames += 1
            chunks = []
        self._resampler = None
        return chunks

    def _emit(self, rf: av.AudioFrame, reset: bool = False, reason: str = "") -> Chunk:
        # packed float mono: the plane is the samples (to_ndarray's generic path costs more than the copy)
        a = np.frombuffer(rf.planes[0], np.float32, rf.samples).copy()
        t = self._out_anchor + self._out_count / SAMPLE_RATE
        self._out_count += len(a)
        self.samples_out += len(a)
        return Chunk(t, a, reset, reason)


def _pts_seconds(frame) -> float | None:
    """PTS in seconds, None without a PTS or a time base. frame.time is pts x time_base in C;
    the Fraction arithmetic of float(pts * time_base) was a tenth of the decode path's cost.
    Without a time base frame.time is NaN (none set) or 0.0 (a zero one)."""
    t = frame.time
    if t is None or t != t or (t == 0.0 and frame.pts != 0):
        return None
    return t


# Codecs a broadcast audio PID may switch to mid-stream without the container
# announcing it in a way PyAV sees (the stream keeps its index and PID).
BROADCAST_AUDIO_CODECS = ("aac", "aac_latm", "mp2", "mp3", "ac3", "eac3")


class PacketDecoder:
    """Decodes one audio stream's packets, surviving a codec change on the same PID.

    Corrupt packets are dropped and counted. After `switch_after` consecutive
    failures the failing packet is tried with the other broadcast codecs; the
    first that decodes it takes over.
    """

    def __init__(self, stream=None, switch_after: int = 3, codec: str | None = None):
        if codec is not None:
            # a decoder of its own, outliving the container that brought the first packet
            try:
                self._ctx = av.CodecContext.create(codec, "r")
            except (av.error.FFmpegError, ValueError):
                raise UnsupportedCodec(f"unsupported audio codec: {codec}") from None
        else:
            self._ctx = stream.codec_context
            if self._ctx is None:
                raise UnsupportedCodec(f"unsupported audio codec: no decoder for track #{stream.index}")
        self.codec = self._ctx.name
        self.switch_after = switch_after
        self.errors = 0
        self.codec_changes = 0
        self._consecutive = 0

    def decode(self, packet) -> list:
        if packet.size == 0:          # demuxer's end-of-stream packet
            return self.flush()
        try:
            frames = self._ctx.decode(packet)
            self._consecutive = 0
            return frames
        except (av.error.FFmpegError, ValueError) as e:
            self.errors += 1
            self._consecutive += 1
            self.last_error = str(e)
            if self._consecutive >= self.switch_after:
                return self._try_switch(packet)
            return []

    def flush(self) -> list:
        try:
            return self._ctx.decode(None)
        except (av.error.FFmpegError, ValueError):   # already flushed, or nothing to flush
            return []

    def _try_switch(self, packet) -> list:
        for name in BROADCAST_AUDIO_CODECS:
            if name == self.codec:
                continue
            try:
                ctx = av.CodecContext.create(name, "r")
                frames = ctx.decode(packet)
            except (av.error.FFmpegError, ValueError):
                continue
            if frames:
                self._ctx, self.codec = ctx, name
                self.codec_changes += 1
                self._consecutive = 0
                return frames
        return []


class UnsupportedCodec(RuntimeError):
    pass


class ChunkError(ValueError):
    """A media chunk that cannot be used at all (goes to the dead-letter topic)."""


# Chunks carry PAT/PMT first and the decoder is made from the codec name alone, so the
# stream-info probe (which decodes a little of every track, video included) is wasted:
# skipping it halves the cost of opening a 2 s chunk.
QUICK_OPEN = {"probesize": "32", "analyzeduration": "0"}


class ChunkDecoder:
    """Decodes one channel's self-contained MPEG-TS chunks in order with one
    persistent decoder and normalizer, so the audio is what decoding the whole
    stream at once gives, chunk edges included."""

    def __init__(self, select, max_gap_s: float = 5.0):
        self.select = select                 # container -> audio stream (raises ValueError-like errors)
        self.normalizer = AudioNormalizer(max_gap_s=max_gap_s)
        self.decoder: PacketDecoder | None = None

    def decode(self, data: bytes) -> list[Chunk]:
        # The run's first chunk is probed: a PMT's "MPEG audio" stream type does not say which
        # layer, and unprobed it opens as MP3 (float decoder) where a whole-stream open finds MP2
        # (fixed-point decoder), whose output differs by a bit or two. The decoder made here lives
        # on, so later chunks need only the quick open.
        container = self._open(data, QUICK_OPEN if self.decoder is not None else {})
        try:
            stream = self._select(container)
        except ChunkError:
            # the PMT did not name the codec (e.g. stream type 0x06 without a descriptor): probe it
            container = self._open(data, {})
            stream = self._select(container)
        out: list[Chunk] = []
        with container:
            if self.decoder is None:
                self.decoder = PacketDecoder(codec=stream.codec_context.name)
            packets = errors_before = 0
            errors_before = self.decoder.errors
            try:
                for p in container.demux(stream):
                    if p.size == 0:          # end of this chunk, not of the stream: keep decoder state
                        continue
                    packets += 1
                    for f in self.decoder.decode(p):
                        out += self.normalizer.push(f)
            except av.error.FFmpegError as e:
                if not packets:
                    raise ChunkError(f"unreadable chunk: {e}") from None
        # a chunk may carry only video (audio PES of that span went in a neighbour): not an error
        if packets and not out and self.decoder.errors - errors_before >= packets:
            raise ChunkError(f"none of {packets} audio packets decodes")
        return out

    @staticmethod
    def _open(data: bytes, options: dict):
        import io
        try:
            return av.open(io.BytesIO(data), format="mpegts", options=options)
        except (av.error.FFmpegError, ValueError) as e:
            raise ChunkError(f"not an MPEG-TS chunk: {e}") from None

    def _select(self, container):
        try:
            stream = self.select(container)
        except Exception as e:
            container.close()
            raise ChunkError(f"no usable audio track: {e}") from None
        if stream.codec_context is None or stream.codec_context.name in ("", "none"):
            container.close()
            raise ChunkError("unsupported audio codec")
        return stream

    def finish(self) -> list[Chunk]:
        out: list[Chunk] = []
        if self.decoder is not None:
            for f in self.decoder.flush():
                out += self.normalizer.push(f)
        return out + self.normalizer.flush()

    def snapshot(self) -> dict:
        n = self.normalizer
        return {"codec": self.decoder.codec if self.decoder else None, "origin": n._origin, "in_next": n._in_next,
                "gaps": n.gaps, "discontinuities": n.discontinuities, "format_changes": n.format_changes,
                "samples_out": n.samples_out}

    def restore(self, d: dict) -> None:
        n = self.normalizer
        n._origin, n._in_next = d["origin"], d["in_next"]
        n.gaps, n.discontinuities, n.format_changes, n.samples_out = (d["gaps"], d["discontinuities"],
                                                                      d["format_changes"], d["samples_out"])
        # the resampler restarts on the next frame, anchored where the stream left off
        n._key = None
        n._out_anchor, n._out_count = n._in_next, 0
        self.decoder = PacketDecoder(codec=d["codec"]) if d.get("codec") else None


def decode_whole(source, name: str) -> np.ndarray:
    """Everything in the first audio track of `source` (a path, or a file-like object PyAV opens)
    -> float32 mono at 16 kHz, through the decoder and normalizer live input uses. `name` is what
    an error says: a file with no audio raises ValueError naming it."""
    parts = []
    with av.open(source) as c:
        if not c.streams.audio:
            raise ValueError(f"{name}: no audio track")
        stream = c.streams.audio[0]
        dec, norm = PacketDecoder(stream), AudioNormalizer(max_gap_s=0.0)
        for packet in c.demux(stream):
            for frame in dec.decode(packet):
                parts.extend(ch.samples for ch in norm.push(frame))
        parts.extend(ch.samples for ch in norm.flush())
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)
