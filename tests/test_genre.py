"""Genre head training, the streaming genre operator and `onair genre`."""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from operators.models.classify import fit_head
from operators.tagging.genre import POOLING, GenreModel, GenreParams, SongGenres, pool
from operators.tagging.provider_genres import provider_tags, to_taxonomy
from pipeline.training.train import genre_cross_validation
from tests.conftest import run_records, write_manifest
from tests.test_run import onair


def _two_genres(seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(-1, 1, (60, 8)), rng.normal(1, 1, (60, 8))])
    return rng, GenreModel(fit_head(x, ["a"] * 60 + ["b"] * 60))


def _play(tagger, frames, rng):
    """frames: (time, music, genre centre, the debouncer's song start once it has seen the frame)."""
    out = []
    for t, music, centre, song in frames:
        out += tagger.push(t, music, rng.normal(centre, 1, 8), None, song)
    return out


def test_one_genre_record_per_song_with_the_debouncers_boundaries_found_late():
    rng, model = _two_genres()
    tagger = SongGenres("ch", model, GenreParams(min_music_s=10, update_s=20, top_k=2), delay_s=8.0)
    hop = 0.96
    frames = []
    for i in range(125):                      # song "a" for 60 s, then song "b" for 60 s
        t = i * hop
        # the boundary at 60 s is found 5 s late, as the debouncer's change test does
        song = 0.0 if t < 65.0 else 60.0
        frames.append((t, True, -1 if t < 60.0 else 1, song))
    out = _play(tagger, frames, rng)
    out += tagger.push(125 * hop, False, None, None, None)      # a long gap: the run ended
    songs = {}
    for r in out:
        songs.setdefault(r["song_start"], []).append(r)
    assert sorted(songs) == [0.0, 60.0]
    first, second = songs[0.0], songs[60.0]
    assert [r["status"] for r in first] == ["open"] * (len(first) - 1) + ["closed"]
    assert first[-1]["song_end"] == 60.0 and first[0]["song_end"] is None
    assert second[-1]["song_end"] == round(125 * hop, 3) and second[-1]["status"] == "closed"
    # opened at 10 s, then every 20 s of music: 10, 30, 50, closed at 60
    assert len(first) == 4 and len(second) == 4
    assert all(r["tags"][0]["genre"] == "a" and r["tags"][0]["source"] == "model" for r in first)
    assert all(r["tags"][0]["genre"] == "b" for r in second)
    # the 5 s of "b" decided before the boundary was known count for the second song only
    assert first[-1]["tags"][0]["score"] > 0.9
    for r in out:
        scores = [x["score"] for x in r["tags"]]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6 and len(scores) == 2
        assert r["segment_start"] == r["song_start"] and r["segment_end"] == r["song_end"]


def test_a_jingle_gets_no_genre_record_and_talk_is_no_evidence():
    rng, model = _two_genres()
    tagger = SongGenres("ch", model, GenreParams(min_music_s=10))
    assert _play(tagger, [(i * 0.96, True, 1, 0.0) for i in range(10)], rng) == []
    assert tagger.push(5.0, False, None, None, None) == []       # a 5 s jingle, then the run ended
    # music flagged as talk over a bed: the song stays open (a gap) but the bed is not its genre;
    # it is what the song's usage is made of: a third foreground, two thirds under speech
    out = []
    for i in range(90):
        talk = i >= 30
        out += tagger.push(20 + i * 0.96, True, rng.normal(1 if talk else -1, 1, 8), None, 20.0, talk=talk,
                           p_background=0.9 if talk else 0.1)
    out += tagger.close(20 + 90 * 0.96)
    assert out and all(r["tags"][0]["genre"] == "a" for r in out)
    assert out[0]["usage"] == "foreground" and out[-1]["usage"] == "background"
    assert out[-1]["usage_confidence"] == pytest.approx((60 * 0.9 + 30 * 0.1) / 90, abs=1e-3)


def test_provider_genres_update_the_song_at_once_and_unknown_names_are_kept():
    rng, model = _two_genres()
    tagger = SongGenres("ch", model, GenreParams(min_music_s=10, update_s=600))
    out = _play(tagger, [(i * 0.96, True, 1, 0.0) for i in range(30)], rng)
    assert len(out) == 1 and out[0]["provider_tags"] == []
    answer = {"provider": "acrcloud", "genres": ["Hard Rock", "R&B/Soul", 7, "Hard Rock"]}
    tags = provider_tags(answer, ["a", "rock"])
    assert tags == [{"genre": "rock", "given": "Hard Rock", "source": "acrcloud"},
                    {"genre": None, "given": "R&B/Soul", "source": "acrcloud"}]
    upd = tagger.identified(tags)
    assert len(upd) == 1 and upd[0]["provider_tags"] == tags and upd[0]["status"] == "open"
    assert tagger.identified(tags) == []                       # nothing new: no record
    closed = tagger.close(30 * 0.96)
    assert closed[0]["status"] == "closed" and closed[0]["provider_tags"] == tags
    assert to_taxonomy("Hip-Hop/Rap") == "hiphop" and to_taxonomy("Music") is None
    assert provider_tags({"provider": "audd", "genres": "Pop"}) == []


def test_a_song_restored_from_a_snapshot_goes_on_as_if_never_stopped():
    rng, model = _two_genres()
    params = GenreParams(min_music_s=10, update_s=20)
    frames = [(i * 0.96, True, -1 if i < 125 else 1, 0.0 if i < 135 else 120.0) for i in range(250)]
    rngs = [np.random.default_rng(5), np.random.default_rng(5)]
    whole = _play(SongGenres("ch", model, params), frames, rngs[0])
    a = SongGenres("ch", model, params)
    out = _play(a, frames[:130], rngs[1])
    b = SongGenres("ch", model, params)
    b.restore(json.loads(json.dumps(a.snapshot())))
    out += _play(b, frames[130:], rngs[1])
    assert out == whole


def test_a_head_trained_on_pooled_embeddings_scores_the_direction_of_the_mean():
    """A song-long mean embedding has a smaller norm than a 3 s excerpt's (its frames disagree
    more); a head trained on pooled (unit) means must give the same tags whatever that norm."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(-1, 1, (60, 8)), rng.normal(1, 1, (60, 8))]) + rng.normal(0, 3, 8)
    head = fit_head(pool(x), ["a"] * 60 + ["b"] * 60)
    head.meta["aggregation"] = POOLING
    model = GenreModel(head)
    e = x[70]
    assert np.allclose(model.probs(e), model.probs(0.4 * e)) and np.allclose(model.probs(e), model.probs(pool(e)))
    plain = GenreModel(fit_head(x, ["a"] * 60 + ["b"] * 60))       # a head from before pooling
    assert not np.allclose(plain.probs(e), plain.probs(0.4 * e))


def test_cross_validation_never_splits_a_group():
    rng = np.random.default_rng(1)
    groups = [f"g{i}" for i in range(60) for _ in range(4)]          # 4 copies of each excerpt
    y = [["a", "b", "c"][rng.integers(3)] for i in range(60) for _ in range(4)]
    y = [y[4 * (i // 4)] for i in range(240)]
    base = rng.normal(size=(60, 32))
    X = np.repeat(base, 4, axis=0)                                  # labels are noise: nothing to learn
    v = genre_cross_validation(X, None, y, groups, ["a", "b", "c"], 1e-4, lambda h: GenreModel(h))
    assert v["accuracy"] < 0.6, "a file split would let copies of an excerpt leak into training"
    assert np.array(v["confusion"]).sum() == 240


def test_genre_command_and_training_on_a_small_manifest(shared, tmp_path):
    rows = [r for r in csv.DictReader(open(shared / "data" / "manifest.csv")) if r["path"].startswith("genre/")]
    pick = [r for g in ("classical", "metal", "reggae") for r in [x for x in rows if x["genre"] == g][:14]]
    manifest = write_manifest(pick, tmp_path / "m.csv", shared)
    heads = tmp_path / "heads"
    r = onair("train", "--head", "genre", "--backend", "yamnet", "--manifest", str(manifest),
              "--cache", str(tmp_path / "cache"), "--set", f"heads.dir={heads}")
    assert r.returncode == 0, r.stderr
    doc = json.loads((heads / "yamnet" / "genre.json").read_text())
    assert doc["classes"] == ["classical", "metal", "reggae"] and doc["meta"]["validation"]["files"] == 42
    assert doc["meta"]["aggregation"] == POOLING
    assert len(doc["meta"]["embedding_probe"]) == 1024     # see tests/test_probe.py
    assert doc["meta"]["inputs"] == ["layer9_bands", "layer10_bands", "embedding"] and len(doc["mean"]) == 5120
    # and the committed 10-genre head tags real files
    files = [str(shared / "data" / "genre" / g / sorted((shared / "data" / "genre" / g).iterdir())[0].name)
             for g in ("metal", "classical")]
    r = onair("genre", *files, str(tmp_path / "missing.wav"))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["path"] for x in lines] == files and "missing.wav: cannot tag" in r.stderr
    for line in lines:
        assert len(line["tags"]) == 3 and sum(t["score"] for t in line["tags"]) <= 1.0 + 1e-6
    assert onair("genre", str(tmp_path / "missing.wav")).returncode == 1


def test_run_writes_one_genre_record_stream_per_song_the_requests_ask_about(programme, tmp_path):
    out = tmp_path / "out"
    assert onair("run", "--out", str(out), "--input", f"p={programme['ts']}").returncode == 0
    recs = run_records(out / "genres.jsonl")
    finals = [r for r in recs if r["status"] == "closed"]
    segs = run_records(out / "segments.jsonl")
    music = [(s["start"], s["end"]) for s in segs if s["label"] == "music" and s["end"] - s["start"] >= 12]
    # two songs apart by talk: each song is its music segment here, the last one to the end of input
    assert [(r["song_start"], r["song_end"]) for r in finals] == music
    requests = run_records(out / "requests.jsonl")
    plays = {r["request_id"].rsplit(":", 1)[0] for r in requests}
    assert {r["play_id"] for r in recs} == plays          # the same songs as the requests, by id
    # the programme's songs are plain music, its talk is not music: foreground, on every kind
    assert all(s["usage"] == "foreground" and 0.5 <= s["usage_confidence"] <= 1 for s in segs if s["label"] == "music")
    assert all("usage" not in s for s in segs if s["label"] != "music")
    assert requests and all(r["usage"] == "foreground" for r in requests)
    for r in recs:
        assert set(r) >= {"channel", "play_id", "song_start", "song_start_utc", "song_end", "song_end_utc",
                          "status", "tags", "provider_tags", "segment_start", "segment_end", "usage"}
        assert r["usage"] == "foreground"
        assert r["play_id"] == f"p:{r['song_start_utc']}" and (r["song_end"] is None) == (r["status"] == "open")


def test_pooling_scales_each_block_to_unit_length_apart():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 100, 6), rng.normal(0, 0.01, 4)])   # one block dwarfs the other
    p = pool(x, [6, 4])
    assert np.allclose([np.linalg.norm(p[:6]), np.linalg.norm(p[6:])], 1.0)
    assert np.allclose(p[6:], x[6:] / np.linalg.norm(x[6:]))               # the small block keeps its say
    assert np.allclose(pool(x), x / np.linalg.norm(x))                     # one block: as before


def _inner_layer_head(rng):
    """A genre head over two blocks (a 4-d inner-layer block, then an 8-d embedding), as training writes it."""
    x = np.concatenate([rng.normal(-1, 1, (60, 12)), rng.normal(1, 1, (60, 12))])
    head = fit_head(pool(x, [4, 8]), ["a"] * 60 + ["b"] * 60)
    head.meta.update(inputs=["bands", "embedding"], input_dims=[4, 8], aggregation=POOLING)
    return head


def test_a_head_reads_its_blocks_in_its_order_and_names_a_missing_one():
    model = GenreModel(_inner_layer_head(np.random.default_rng(4)))
    emb, bands = np.full((2, 8), 2.0), np.full((2, 4), 3.0)
    x = model.frame_inputs(emb, {"bands": bands, "other": np.zeros((2, 5))})
    assert x.shape == (2, 12) and (x[:, :4] == 3).all() and (x[:, 4:] == 2).all()
    with pytest.raises(KeyError, match="bands"):
        model.frame_inputs(emb, {})
    # a head from before inner layers reads the embedding alone
    assert GenreModel(fit_head(np.random.default_rng(5).normal(size=(20, 8)), ["a", "b"] * 10)) \
        .frame_inputs(emb, {"bands": bands}) is emb


def test_the_shipped_head_needs_yamnets_inner_layers_and_is_off_without_them(shared, caplog):
    """The committed YAMNet genre head reads layers 9 and 10 of the TFLite model; an embedder with
    the same 1024-d embedding but no inner layers (YAMNet from TF-Hub) gets genre tags off, in one
    line, instead of a head scoring the wrong inputs."""
    from operators.models.embed import Embedder
    from pipeline import config
    from pipeline.heads import load_genre_model
    from pipeline.models import load_embedder

    cfg = config.load()
    model = load_genre_model(cfg, load_embedder(cfg))
    assert model.inputs == ["layer9_bands", "layer10_bands", "embedding"] and model.input_dims == [2048, 2048, 1024]

    class EmbeddingOnly(Embedder):
        name, dim = "yamnet", 1024
    with caplog.at_level("WARNING"):
        assert load_genre_model(cfg, EmbeddingOnly()) is None
    lines = [r.getMessage() for r in caplog.records if "genre tags are off" in r.getMessage()]
    assert len(lines) == 1 and "layer9_bands" in lines[0] and "onair train --head genre" in lines[0]


def test_a_channel_resumed_from_a_snapshot_tags_as_one_that_never_stopped():
    """The genre inputs of the frames inside the HMM window and the segment's sums go into the
    channel's snapshot (JSON, as on the Kafka changelog); older snapshots without them still load."""
    from pipeline import config
    from pipeline.clock import StreamClock
    from pipeline.engine.channel import ChannelDetector
    from pipeline.heads import Heads, hmm_params
    from pipeline.metrics import Metrics
    from pipeline.params import ChannelParams

    rng = np.random.default_rng(6)
    cfg = config.load()
    music = fit_head(np.concatenate([rng.normal(-2, 1, (50, 8)), rng.normal(2, 1, (50, 8))]),
                     ["non_music"] * 50 + ["music"] * 50)
    genre = GenreModel(_inner_layer_head(rng))
    n = 60
    emb = rng.normal(2, 1, (n, 8)).astype(np.float32)        # music all along
    bands = rng.normal(1, 1, (n, 4)).astype(np.float32)
    frames = [np.zeros(15600, np.float32)] * n

    params = replace(ChannelParams.from_config(cfg, hmm_params(music, cfg)),
                     genre=GenreParams(min_music_s=10, update_s=15))

    def detector(out):
        det = ChannelDetector("c", Heads(music, None, genre), params, Metrics(),
                              StreamClock.fixed("given", 1_800_000_000.0))
        det.out = out
        return det

    def genres(det, records):
        det.out += [r for kind, r in records if kind == "genres"]

    def feed(det, a, b):
        for i in range(a, b):
            genres(det, det.on_embedded([i * 0.96], emb[i:i + 1], [i * 0.96 + 0.975], frames[i:i + 1], None,
                                        {"bands": bands[i:i + 1]}))

    straight = []
    det = detector(straight)
    feed(det, 0, n)
    genres(det, det.finish(n * 0.96))
    assert len(straight) >= 3 and straight[-1]["segment_end"] is not None
    resumed = []
    first = detector(resumed)
    feed(first, 0, 25)
    snap = json.loads(json.dumps(first.snapshot()))
    assert all(isinstance(p[4], str) for p in snap["pending"]) and isinstance(snap["genre"]["sum"], str)
    second = detector(resumed)
    second.restore(snap)
    feed(second, 25, n)
    genres(second, second.finish(n * 0.96))
    assert resumed == straight
    # a snapshot written before genre inputs (four fields per frame, sums as a list of another
    # size): it loads, and the open segment is tagged from the frames after it
    old = json.loads(json.dumps(snap))
    old["pending"] = [p[:4] for p in old["pending"]]
    old["genre"]["sum"] = [0.5] * 8
    after = []
    third = detector(after)
    third.restore(old)
    feed(third, 25, n)
    genres(third, third.finish(n * 0.96))
    assert [r["segment_start"] for r in after] == [r["segment_start"] for r in straight[-len(after):]]
    assert after[-1]["tags"][0]["genre"] == straight[-1]["tags"][0]["genre"]


def test_a_song_the_index_identifies_carries_the_providers_genres(programme, tmp_path, monkeypatch, shared):
    """The programme aired twice into one folder, with a provider that knows its songs: on the second
    airing the index identifies each song, and its genre record says what the provider said."""
    from pipeline import config
    from pipeline.direct import DirectRun
    from pipeline.metrics import Metrics
    from pipeline.models import load_embedder
    from tests.provider_servers import ProviderServer
    monkeypatch.setenv("ONAIR_MODEL_DIR", str(shared / "models"))
    server = ProviderServer("acrcloud", "secret", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_KEY", "key")
    monkeypatch.setenv("ACRCLOUD_ACCESS_SECRET", "secret")
    cfg = config.load(None, ["recognition.provider=acrcloud", f"recognition.acrcloud_url={server.url}",
                             "recognition.rate_per_s=1000"])
    embedder = load_embedder(cfg)
    out = tmp_path / "out"
    try:
        for _ in range(2):
            DirectRun([("ch", str(programme["ts"]))], out, cfg, Metrics(), embedder).run()
    finally:
        server.close()
    recs = run_records(out / "genres.jsonl")
    closed = [r for r in recs if r["status"] == "closed"]
    assert len(closed) == 4                                   # two songs, twice
    want = [{"genre": "hiphop", "given": "Hip Hop", "source": "acrcloud"},
            {"genre": None, "given": "R&B", "source": "acrcloud"}]
    assert [r["provider_tags"] for r in closed[2:]] == [want, want]
    assert all(r["tags"] and r["tags"][0]["source"] == "model" for r in closed)
