import numpy as np
import pytest

from operators.audio.framing import FRAME_SAMPLES, HOP_S, HOP_SAMPLES, FrameRing


def test_frames_match_direct_slicing_whatever_the_chunk_sizes():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=16000 * 10).astype(np.float32)
    ring = FrameRing()
    ring.reset(0.0)
    got = []
    pos = 0
    for size in rng.integers(1, 9000, 200):
        got += ring.push(audio[pos:pos + size])
        pos += size
        if pos >= len(audio):
            break
    expected_n = 1 + (len(audio) - FRAME_SAMPLES) // HOP_SAMPLES
    assert len(got) == expected_n
    for k, (t, frame) in enumerate(got):
        assert frame.shape == (FRAME_SAMPLES,)
        assert abs(t - k * HOP_S) < 1e-9
        np.testing.assert_array_equal(frame, audio[k * HOP_SAMPLES:k * HOP_SAMPLES + FRAME_SAMPLES])


def test_frames_are_copies_and_memory_stays_bounded():
    ring = FrameRing()
    ring.reset(0.0)
    frames = []
    for _ in range(500):  # 500 s of audio through a ring of 4 frames
        frames += ring.push(np.ones(16000, np.float32))
    assert ring.buffered < FRAME_SAMPLES
    assert len(ring._buf) == 4 * FRAME_SAMPLES
    frames[0][1][:] = 7
    assert frames[1][1][0] == 1.0


def test_reset_drops_the_partial_frame_and_restarts_time():
    ring = FrameRing()
    ring.reset(0.0)
    assert ring.push(np.zeros(10000, np.float32)) == []
    ring.reset(100.0)
    out = ring.push(np.zeros(FRAME_SAMPLES + HOP_SAMPLES, np.float32))
    assert [t for t, _ in out] == [100.0, 100.0 + HOP_S]


def test_block_levels_are_the_power_of_whole_tenths_of_a_second():
    from operators.audio.levels import block_levels_db
    x = np.concatenate([np.full(1600, 0.1, np.float32), np.zeros(1600, np.float32), np.full(100, 1.0, np.float32)])
    db = block_levels_db(np.stack([x, x]))
    assert db.shape == (2, 2)                                     # the 100-sample tail is left out
    assert db[0, 0] == pytest.approx(-20.0, abs=1e-3) and db[0, 1] == pytest.approx(-100.0)
