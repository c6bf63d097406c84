import numpy as np

from operators.decisions.hmm import FixedLagHMM, fit_transitions
from operators.decisions.segments import SegmentBuilder

A = np.array([[0.99, 0.01], [0.01, 0.99]])


def run(probs, lag=4):
    hmm = FixedLagHMM(A, [0.5, 0.5], lag)
    decided, delays = [], []
    for i, p in enumerate(probs):
        for d in hmm.push(p, i * 0.96):
            decided.append(d)
            delays.append(i - d.index)
    decided += hmm.flush()
    return decided, delays


def test_every_frame_is_decided_once_in_order_with_bounded_delay():
    probs = np.random.default_rng(1).uniform(size=200)
    decided, delays = run(probs, lag=4)
    assert [d.index for d in decided] == list(range(200))
    assert max(delays) == 4 and min(delays) == 4


def test_smoothing_removes_isolated_blips_but_keeps_real_changes():
    probs = [0.9] * 30 + [0.2] + [0.9] * 30 + [0.05] * 30
    states = [d.state for d in run(probs)[0]]
    assert states[30] == 1, "a one-frame dip inside music is smoothed away"
    assert states[:61] == [1] * 61
    assert states[65:] == [0] * 26


def test_zero_lag_is_filtering():
    decided, delays = run([0.9, 0.1, 0.9], lag=0)
    assert delays == [0, 0, 0]


def test_fit_transitions_counts_changes():
    A_fit = fit_transitions([[0] * 50 + [1] * 50], pseudo=0.0)
    assert abs(A_fit[0, 1] - 1 / 50) < 1e-9 and abs(A_fit[1, 0]) < 1e-9


def test_state_survives_a_round_trip():
    probs = np.random.default_rng(2).uniform(size=40)
    a = FixedLagHMM(A, [0.5, 0.5], 4)
    b = FixedLagHMM(A, [0.5, 0.5], 4)
    out_a, out_b = [], []
    for i, p in enumerate(probs):
        out_a += a.push(p, i)
        if i == 20:
            b.restore(a.snapshot())
        if i > 20:
            out_b += b.push(p, i)
    assert [(d.index, d.state) for d in out_a if d.index >= 17] == [(d.index, d.state) for d in out_b]


def test_segments_cover_the_stream_in_order():
    sb = SegmentBuilder("ch")
    segs = []
    for i, s in enumerate([1, 1, 0, 0, 0, 1]):
        segs += sb.push(i * 0.96, s, 0.9)
    segs += sb.close(6.5)
    assert [s["label"] for s in segs] == ["music", "non_music", "music"]
    assert segs[0]["start"] == 0.0 and segs[-1]["end"] == 6.5
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"]
    assert set(segs[0]) >= {"channel", "label", "start", "end", "confidence"}


def test_a_music_segment_says_whether_it_is_foreground_or_a_bed_under_speech():
    import json
    b = SegmentBuilder("ch")
    out = []
    for i in range(10):                              # a song: speech does not dominate it
        out += b.push(i * 0.96, 1, 0.9, 0.05)
    for i in range(10, 15):
        out += b.push(i * 0.96, 0, 0.9, 0.8)         # talk: not music, its p_background is no usage
    assert b.usage == {"usage": None, "usage_confidence": None}
    for i in range(15, 40):                          # a bed under an advert's voice
        out += b.push(i * 0.96, 1, 0.8, 0.7 if i % 5 else 0.3)
        if i == 20:
            restored = SegmentBuilder("ch")
            restored.restore(json.loads(json.dumps(b.snapshot())))
            b = restored
    out += b.close(40 * 0.96)
    song, talk, bed = out
    assert (song["usage"], song["usage_confidence"]) == ("foreground", 0.95)
    assert "usage" not in talk
    assert bed["usage"] == "background" and bed["usage_confidence"] == round((20 * 0.7 + 5 * 0.3) / 25, 4)
