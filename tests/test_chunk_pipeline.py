"""ChunkPipeline (pipeline/engine/batcher.py): many channels' ingest chunks decoded by one
thread and embedded together give what direct mode gives for each channel."""
from pipeline import config
from pipeline.engine.batcher import ChunkPipeline
from pipeline.engine.channel import ChannelDetector
from pipeline.heads import hmm_params, load_genre_model, load_music_head
from pipeline.kafka.ingest import RemuxInput
from pipeline.models import load_embedder
from tests.conftest import direct_segments


def ingest_chunks(ts, cfg) -> list[bytes]:
    chunks = []
    RemuxInput("p", str(ts), cfg, lambda data, disc: chunks.append(data)).run(None)
    return chunks


def test_chunk_pipeline_gives_the_direct_path_records(programme, tmp_path):
    cfg = config.load(None, ["kafka.chunk_s=1.0"])
    chunks = ingest_chunks(programme["ts"], cfg)
    assert len(chunks) > 20
    embedder = load_embedder(cfg)
    head = load_music_head(cfg, embedder.name, embedder.dim)
    genre_model = load_genre_model(cfg, embedder)
    out = {"segments": [], "requests": [], "genres": []}

    def make(channel):
        return ChannelDetector(channel, head, hmm_params(head, cfg), cfg["hmm"]["lag_frames"],
                               out["segments"].append, None, cfg["debounce"], out["requests"].append, genre_model,
                               cfg["genre"], out["genres"].append)

    pipe = ChunkPipeline(embedder, cfg, make).start()
    # three channels of the same programme, interleaved as a consumer would deliver them, so
    # batches mix channels; the third starts later in its stream (a channel joining mid-way)
    for i, data in enumerate(chunks):
        pipe.submit("a", data)
        pipe.submit("b", data)
        if i >= 10:
            pipe.submit("c", data)
    for ch in "abc":
        pipe.submit(ch, None)
    pipe.close()
    assert pipe.error is None and pipe.chunk_errors == 0

    def strip(recs, keys):
        return [{k: v for k, v in r.items() if k in keys} for r in recs]

    seg_keys = ("label", "start", "end", "confidence")
    want = strip(direct_segments(programme["ts"], tmp_path), seg_keys)
    for ch in "ab":
        assert strip([s for s in out["segments"] if s["channel"] == ch], seg_keys) == want
    req_keys = ("clip_start", "clip_end", "emitted_at", "song_start", "reason", "audio")
    want_req = strip(direct_segments(programme["ts"], tmp_path, what="requests"), req_keys)
    assert strip([r for r in out["requests"] if r["channel"] == "a"], req_keys) == want_req
    late = [s for s in out["segments"] if s["channel"] == "c"]
    assert late and late[0]["start"] == 0.0 and late[-1]["end"] < want[-1]["end"] - 9.0


def test_a_bad_chunk_is_skipped_and_the_channel_goes_on(programme):
    cfg = config.load(None, ["kafka.chunk_s=1.0"])
    chunks = ingest_chunks(programme["ts"], cfg)[:12]
    embedder = load_embedder(cfg)
    head = load_music_head(cfg, embedder.name, embedder.dim)
    segs = []
    pipe = ChunkPipeline(embedder, cfg, lambda ch: ChannelDetector(ch, head, hmm_params(head, cfg), 4,
                                                                    segs.append)).start()
    for i, data in enumerate(chunks):
        pipe.submit("a", b"not a transport stream" if i == 5 else data)
    pipe.submit("a", None)
    pipe.close()
    assert pipe.chunk_errors == 1 and pipe.error is None
    assert segs and segs[-1]["end"] > 10.0
