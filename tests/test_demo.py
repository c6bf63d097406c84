"""pipeline.demo's stream encoder and cache (the demo's run and scoring are exercised by `onair demo`)."""
import io

import av

from pipeline import demo


def clip(shared):
    return sorted((shared / "data" / "clips" / "music").glob("*.opus"))[0]


def test_encoded_stream_is_broadcast_like(shared, tmp_path):
    src = clip(shared)
    paths = demo.encode(src, [("aac", tmp_path / "x-aac.ts"), ("mp2", tmp_path / "x-mp2.ts")])
    for codec, ts in zip(("aac", "mp2"), paths):
        with av.open(str(ts)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, v.width, v.height) == ("h264", 64, 48)
            assert (a.codec_context.name, a.rate, a.layout.name) == (codec, 48000, "stereo")
            got = sum(f.samples for f in c.decode(a)) / 48000
        with av.open(str(src)) as c:
            want = c.duration / av.time_base
        assert abs(got - want) < 0.1
        assert not (tmp_path / f"x-{codec}.ts.part").exists()


def test_cache_is_keyed_by_content_codec_and_encoder_version(shared, tmp_path):
    src = clip(shared)
    a, b = demo.stream_for(src, "aac", tmp_path), demo.stream_for(src, "mp2", tmp_path)
    assert a.path != b.path and a.path.parent == tmp_path
    copy = tmp_path / "copy" / src.name
    copy.parent.mkdir()
    copy.write_bytes(src.read_bytes()[:-100])
    assert demo.stream_for(copy, "aac", tmp_path).path != a.path
    assert demo.cache_key(src, "aac", demo.ENCODER_VERSION + 1) != demo.cache_key(src, "aac")


def test_encode_all_encodes_in_processes_once_and_reports_progress(shared, tmp_path):
    streams = [demo.stream_for(clip(shared), codec, tmp_path) for codec in ("aac", "mp2")]
    out = io.StringIO()
    demo.encode_all(streams, out)
    assert all(s.path.exists() for s in streams)
    assert out.getvalue().startswith("done in ") and "(100%)" in out.getvalue()
    mtimes = [s.path.stat().st_mtime_ns for s in streams]
    out = io.StringIO()
    demo.encode_all(streams, out)                     # cached: nothing encoded, nothing printed
    assert out.getvalue() == "" and [s.path.stat().st_mtime_ns for s in streams] == mtimes
