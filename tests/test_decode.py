"""Decode operators on MPEG-TS made here: broadcast codecs, a mid-stream
sample-rate change, a codec change on the same PID, PTS resets and gaps."""
import av
import numpy as np
import pytest

from operators.audio.decode import AudioNormalizer, PacketDecoder
from tests.conftest import tone, write_ts


def decode_all(path, **norm_kw):
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        dec, norm = PacketDecoder(stream), AudioNormalizer(**norm_kw)
        chunks = []
        for p in c.demux(stream):
            for f in dec.decode(p):
                chunks += norm.push(f)
        chunks += norm.flush()
    return dec, norm, chunks


@pytest.mark.parametrize("codec", ["aac", "mp2", "ac3"])
def test_broadcast_codecs_decode_to_16k_mono_with_stream_time(tmp_path, codec):
    ts = write_ts(tmp_path / f"x-{codec}.ts", tone(4.0), codec)
    dec, norm, chunks = decode_all(ts)
    samples = np.concatenate([c.samples for c in chunks])
    assert dec.codec == codec and dec.errors == 0
    assert samples.dtype == np.float32 and abs(len(samples) / 16000 - 4.0) < 0.1
    assert chunks[0].time == 0.0 and chunks[0].reset
    # a 440 Hz tone stays a 440 Hz tone after downmix and resampling
    spec = np.abs(np.fft.rfft(samples[4000:20000]))
    assert abs(np.argmax(spec) * 16000 / 16000 - 440) < 3
    assert np.max(np.abs(samples)) <= 1.0


def test_sample_rate_and_layout_change_mid_stream(tmp_path):
    a = write_ts(tmp_path / "a.ts", tone(3.0, 48000), "aac", 48000, "stereo")
    b = write_ts(tmp_path / "b.ts", tone(3.0, 44100), "aac", 44100, "mono", pts_offset=3 * 44100)
    joined = tmp_path / "ab.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    _, norm, chunks = decode_all(joined)
    total = sum(len(c.samples) for c in chunks) / 16000
    assert norm.format_changes == 1
    assert abs(total - 6.0) < 0.2
    times = [c.time for c in chunks]
    assert times == sorted(times)


def test_codec_change_on_the_same_pid_is_followed(tmp_path):
    a = write_ts(tmp_path / "a.ts", tone(3.0), "aac")
    b = write_ts(tmp_path / "b.ts", tone(3.0), "mp2")
    joined = tmp_path / "ac.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    dec, norm, chunks = decode_all(joined)
    assert dec.codec == "mp2" and dec.codec_changes == 1
    assert abs(sum(len(c.samples) for c in chunks) / 16000 - 6.0) < 0.3
    # the PTS restart of the second file is a discontinuity: stream time goes on
    assert norm.discontinuities == 1
    assert any(c.reset and c.reason == "discontinuity" and abs(c.time - 3.0) < 0.1 for c in chunks)


def test_pts_gap_stays_a_gap_and_a_big_jump_is_a_discontinuity(tmp_path):
    a = write_ts(tmp_path / "a.ts", tone(2.0), "aac")
    gap = write_ts(tmp_path / "g.ts", tone(2.0), "aac", pts_offset=int(4.0 * 48000))
    jump = write_ts(tmp_path / "j.ts", tone(2.0), "aac", pts_offset=int(1000 * 48000))
    joined = tmp_path / "agj.ts"
    joined.write_bytes(a.read_bytes() + gap.read_bytes() + jump.read_bytes())
    _, norm, chunks = decode_all(joined, max_gap_s=5.0)
    resets = [(round(c.time, 1), c.reason) for c in chunks if c.reset]
    assert resets[0] == (0.0, "start")
    assert (round(resets[1][0]), resets[1][1]) == (4, "gap")         # 2 s of audio, then 2 s missing
    assert resets[2][1] == "discontinuity" and abs(resets[2][0] - 6.0) < 0.1
    assert norm.gaps == 1 and norm.discontinuities == 1


def test_corrupt_packets_are_dropped_and_counted(tmp_path):
    ts = write_ts(tmp_path / "x.ts", tone(4.0), "aac", video=False)
    data = bytearray(ts.read_bytes())
    rng = np.random.default_rng(0)
    for off in rng.integers(len(data) // 4, 3 * len(data) // 4, 40):
        data[off:off + 100] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.ts"
    bad.write_bytes(bytes(data))
    dec, _, chunks = decode_all(bad)
    assert sum(len(c.samples) for c in chunks) / 16000 > 2.0


def test_a_file_read_at_source_pace_is_not_read_faster_than_that(tmp_path):
    """`source.pace` 20: 4 s of audio take at least 0.2 s to read (a lower bound only: a busy
    machine may read it slower), and reach the sink whole; pace 0 reads as fast as it can."""
    import time

    from pipeline import config
    from pipeline.sources import Source
    path = write_ts(tmp_path / "a.ts", tone(4.0), video=False)
    for pace in (20.0, 0.0):
        cfg = config.defaults()
        cfg["source"]["pace"] = pace
        got = []
        t0 = time.monotonic()
        Source("a", str(path), cfg).run(lambda c: got.append(c.time + len(c.samples) / 16000))
        took = time.monotonic() - t0
        assert max(got) == pytest.approx(4.0, abs=0.1)
        if pace:
            assert took >= 3.9 / pace
