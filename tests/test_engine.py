"""The engine (pipeline/engine): many channels fed at once, batched into one embedder, give
each channel the records it gets alone; a new run of a channel starts a clean timeline; a
barrier returns once everything fed is decided."""
import pytest

from operators.audio.decode import ChunkDecoder, ChunkError
from pipeline import config
from pipeline.engine import Engine
from pipeline.heads import hmm_params, load_heads
from pipeline.kafka.ingest import RemuxInput
from pipeline.metrics import Metrics
from pipeline.models import load_embedder
from pipeline.outputs import MemoryOutputs
from pipeline.params import DecodeParams, EngineParams
from pipeline.sources import select_audio
from pipeline.clock import StreamClock
from tests.conftest import GIVEN_START, direct_segments


def ingest_chunks(ts, cfg) -> list[bytes]:
    chunks = []
    RemuxInput("p", str(ts), cfg, lambda data, disc: chunks.append(data)).run(None)
    return chunks


@pytest.fixture(scope="module")
def engine_parts(shared):
    cfg = config.load(None, ["kafka.chunk_s=1.0", "embedding.batch_size=16"])
    with pytest.MonkeyPatch.context() as mp:     # the per-test model_dir fixture comes after this one
        mp.setenv("ONAIR_MODEL_DIR", str(shared / "models"))
        embedder = load_embedder(cfg)
        heads = load_heads(cfg, embedder)
    return cfg, embedder, heads, EngineParams.from_config(cfg, hmm_params(heads.music, cfg))


def decoder(cfg):
    d = DecodeParams.from_config(cfg)
    return ChunkDecoder(lambda c: select_audio(c, d.audio_track), d.max_gap_s)


def strip(recs, keys):
    return [{k: v for k, v in r.items() if k in keys} for r in recs]


def test_channels_batched_together_get_what_each_gets_alone(programme, tmp_path, engine_parts):
    cfg, embedder, heads, params = engine_parts
    chunks = ingest_chunks(programme["ts"], cfg)
    assert len(chunks) > 20
    out = MemoryOutputs()
    engine = Engine(embedder, heads, params, out, Metrics()).start()
    runs = {ch: (engine.open(ch, StreamClock.fixed("given", GIVEN_START)), decoder(cfg)) for ch in "abc"}
    # three channels of the same programme, interleaved as a consumer would deliver them, so
    # batches mix channels; the third starts later in its stream (a channel joining mid-way)
    for i, data in enumerate(chunks):
        for ch in "abc" if i >= 10 else "ab":
            run, dec = runs[ch]
            for c in dec.decode(data):
                engine.feed(run, c)
    for run, dec in runs.values():
        for c in dec.finish():
            engine.feed(run, c)
        engine.end(run, dec.normalizer.time)
    engine.barrier()
    n = len(out.records["segments"])
    engine.close()
    assert len(out.records["segments"]) == n          # the barrier had everything out

    seg_keys = ("label", "start", "end", "confidence", "id")
    want = strip(direct_segments(programme["ts"], tmp_path), seg_keys)
    for ch in "ab":
        got = strip([s for s in out.records["segments"] if s["channel"] == ch], seg_keys)
        assert got == [{**s, "id": s["id"].replace("x/", f"{ch}/")} for s in want]
    req_keys = ("clip_start", "clip_end", "emitted_at", "song_start", "reason", "audio")
    want_req = strip(direct_segments(programme["ts"], tmp_path, what="requests"), req_keys)
    assert strip([r for r in out.records["requests"] if r["channel"] == "a"], req_keys) == want_req
    late = [s for s in out.records["segments"] if s["channel"] == "c"]
    assert late and late[0]["start"] == 0.0 and late[-1]["end"] < want[-1]["end"] - 9.0


def test_a_new_run_of_a_channel_starts_a_new_timeline(programme, engine_parts):
    cfg, embedder, heads, params = engine_parts
    chunks = ingest_chunks(programme["ts"], cfg)[:15]
    out = MemoryOutputs()
    engine = Engine(embedder, heads, params, out, Metrics()).start()
    for _ in range(2):               # the same source twice: its end, then a new run, queued back to back
        run, dec = engine.open("p"), decoder(cfg)
        for data in chunks:
            for c in dec.decode(data):
                engine.feed(run, c)
        engine.end(run, dec.normalizer.time)
    engine.close()
    segs = out.records["segments"]
    stream = strip(segs, ("channel", "label", "start", "end", "confidence"))
    first = stream[:len(stream) // 2]
    assert stream == first + first and first[0]["start"] == 0.0
    # the same stream time twice, two runs: the ids (from UTC) must still differ
    assert len({s["id"] for s in segs}) == len(segs)


def test_a_bad_chunk_is_skipped_and_the_channel_goes_on(programme, engine_parts):
    cfg, embedder, heads, params = engine_parts
    chunks = ingest_chunks(programme["ts"], cfg)[:12]
    out = MemoryOutputs()
    engine = Engine(embedder, heads, params, out, Metrics()).start()
    run, dec = engine.open("a"), decoder(cfg)
    errors = 0
    for i, data in enumerate(chunks):
        try:
            for c in dec.decode(b"not a transport stream" if i == 5 else data):
                engine.feed(run, c)
        except ChunkError:
            errors += 1
    engine.end(run, dec.normalizer.time)
    engine.close()
    assert errors == 1 and out.records["segments"][-1]["end"] > 10.0


def test_a_failing_model_stops_the_engine_with_its_error(engine_parts):
    import numpy as np

    from operators.audio.decode import Chunk
    cfg, embedder, heads, params = engine_parts

    class Broken:
        name, dim, feature_dims = embedder.name, embedder.dim, {}

        def embed(self, frames):
            raise RuntimeError("model exploded")

    engine = Engine(Broken(), heads, params, MemoryOutputs(), Metrics()).start()
    run = engine.open("a")
    with pytest.raises(Exception, match="model exploded"):
        for _ in range(200):        # more than the queue holds: feeding must not block for ever
            engine.feed(run, Chunk(0.0, np.zeros(16000, np.float32)))
        engine.barrier()
