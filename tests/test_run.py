"""`onair run` end to end on MPEG-TS made here, with good and bad inputs side by side."""
import struct
import subprocess
import sys

import numpy as np
import pytest

from pipeline.training.evaluate import music_f1
from tests.conftest import REPO, run_records, tone, write_ts


def onair(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def segments(out_dir, channel):
    return [s for s in run_records(out_dir / "segments.jsonl") if s["channel"] == channel]


def check_cover(segs, duration):
    assert segs[0]["start"] == 0.0
    for a, b in zip(segs, segs[1:]):
        assert a["end"] == b["start"] and a["label"] != b["label"]
    assert abs(segs[-1]["end"] - duration) < 0.1
    for s in segs:
        assert set(s) >= {"channel", "label", "start", "end", "confidence"} and s["label"] in ("music", "non_music")


def unknown_codec_wav(path):
    data = np.zeros(32000, np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 0x3412, 1, 16000, 32000, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 20 + len(fmt) + len(data)) + b"WAVEfmt " + struct.pack("<I", len(fmt))
                     + fmt + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_good_and_bad_inputs_side_by_side(programme, tmp_path):
    garbage = tmp_path / "garbage.ts"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 500_000, dtype=np.uint8).tobytes())
    data = programme["ts"].read_bytes()
    truncated = tmp_path / "truncated.ts"
    truncated.write_bytes(data[: len(data) * 2 // 5 + 77])      # cut mid-packet
    video_only = write_ts(tmp_path / "video.ts", tone(1.0), video=True)
    _strip_audio(video_only, tmp_path / "noaudio.ts")
    out = tmp_path / "out"
    r = onair("run", "--out", str(out), "--input", f"good={programme['ts']}", "--input", f"garbage={garbage}",
              "--input", f"trunc={truncated}", "--input", f"noaudio={tmp_path / 'noaudio.ts'}",
              "--input", f"missing={tmp_path / 'nope.ts'}", "--input", f"codec={unknown_codec_wav(tmp_path / 'u.wav')}",
              "--metrics-out", str(tmp_path / "metrics.prom"))
    assert r.returncode == 0, r.stderr
    err = r.stderr
    # one clear line per failed input, naming the channel
    for ch, words in [("garbage", "failed"), ("noaudio", "no audio track"), ("missing", "no such file"),
                      ("codec", "unsupported audio codec")]:
        lines = [ln for ln in err.splitlines() if f"channel {ch}: input" in ln and "failed" in ln]
        assert len(lines) == 1 and words in lines[0], (ch, err)
    duration = len(programme["audio"]) / 48000
    good = segments(out, "good")
    check_cover(good, duration)
    truth = [(s, e, lab) for s, e, lab in programme["truth"]]
    assert music_f1(truth, good) > 0.9, good
    trunc = segments(out, "trunc")
    check_cover(trunc, trunc[-1]["end"])
    assert 0.3 * duration < trunc[-1]["end"] < 0.45 * duration
    for ch in ("garbage", "noaudio", "missing", "codec"):
        assert segments(out, ch) == []
    for name in ("segments", "requests", "genres"):
        assert (out / f"{name}.jsonl").exists()
    metrics = (tmp_path / "metrics.prom").read_text()
    decoded = [ln for ln in metrics.splitlines() if ln.startswith('onair_audio_decoded_seconds_total{channel="good"}')]
    assert abs(float(decoded[0].split()[-1]) - duration) < 0.2
    assert 'onair_input_errors_total{channel="missing",reason="not_found"} 1.0' in metrics


def test_exit_status_is_non_zero_only_when_every_input_failed(shared, tmp_path):
    r = onair("run", "--out", str(tmp_path / "o"), "--input", f"a={tmp_path / 'x.ts'}",
              "--input", f"b={tmp_path / 'y.ts'}")
    assert r.returncode == 1
    assert "channel a: input" in r.stderr and "channel b: input" in r.stderr


def test_channels_are_independent_of_each_other(programme, programme_run, tmp_path):
    """The same stream alone and beside another channel gives the same segments."""
    assert programme_run["returncode"] == 0, programme_run["stderr"]
    alone, together = programme_run["out"], tmp_path / "together"          # alone: `onair run --input p=...`
    other = write_ts(tmp_path / "tone.ts", tone(40.0), "mp2")
    start = segments(alone, "p")[0]["start_utc"]         # the same UTC: the same ids too
    r = onair("run", "--out", str(together), "--input", f"p={programme['ts']}", "--input", f"y={other}",
              "--set", "embedding.batch_size=7", "--start-time", start)
    assert r.returncode == 0, r.stderr
    no_clock = lambda segs: [{k: v for k, v in s.items() if k != "clock"} for s in segs]  # noqa: E731
    assert no_clock(segments(alone, "p")) == no_clock(segments(together, "p"))
    assert segments(together, "y")


def test_audio_track_selection_by_pid_and_index(programme, tmp_path):
    r = onair("run", "--out", str(tmp_path / "o"), "--input", f"x={programme['ts']}",
              "--set", "source.audio_track=pid:0x999")
    assert r.returncode == 1 and "no audio track with PID 2457" in r.stderr
    r = onair("run", "--out", str(tmp_path / "o2"), "--input", f"x={programme['ts']}",
              "--set", "source.audio_track=index:0")
    assert r.returncode == 0


# the golden records (tests/test_golden.py) run MP2 and AC-3 channels in the default suite
@pytest.mark.slow
@pytest.mark.parametrize("codec", ["mp2", "ac3"])
def test_other_broadcast_codecs_run(programme, tmp_path, codec):
    ts = write_ts(tmp_path / f"p-{codec}.ts", programme["audio"], codec)
    r = onair("run", "--out", str(tmp_path / "o"), "--input", f"x={ts}")
    assert r.returncode == 0, r.stderr
    assert music_f1(programme["truth"], segments(tmp_path / "o", "x")) > 0.9


def _strip_audio(src, dst):
    import av
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mpegts") as o:
        v = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is None:
                continue
            p.stream = v
            o.mux(p)


def test_a_run_across_utc_midnight_is_read_whole(tmp_path):
    """The tests read what a run wrote from every day folder: a run crossing 00:00 UTC writes two,
    and the top-level file links to the newest only."""
    for day, start in (("2026-12-06", 0.0), ("2026-12-07", 24.96)):
        (tmp_path / day).mkdir()
        (tmp_path / day / "segments.jsonl").write_text(f'{{"channel": "c", "start": {start}}}\n')
    (tmp_path / "segments.jsonl").symlink_to("2026-12-07/segments.jsonl")
    assert [s["start"] for s in segments(tmp_path, "c")] == [0.0, 24.96]
