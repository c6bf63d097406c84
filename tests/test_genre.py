"""Genre head training, the streaming genre operator and `onair genre`."""
import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from operators.models.classify import fit_head
from operators.tagging.genre import POOLING, GenreModel, GenreParams, GenreTagger, pool
from pipeline.training.train import genre_cross_validation
from tests.conftest import write_manifest
from tests.test_run import onair


def test_tagger_emits_when_long_enough_updates_sparingly_and_closes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (60, 8)), rng.normal(1, 1, (60, 8))])
    model = GenreModel(fit_head(x, ["a"] * 60 + ["b"] * 60))
    tagger = GenreTagger("ch", model, GenreParams(min_music_s=10, update_s=20, top_k=2))
    out = []
    t = 0.0
    for i in range(60):                               # 57.6 s of music like "b"
        out += tagger.push(t, True, rng.normal(1, 1, 8))
        t += 0.96
    out += tagger.push(t, False, np.zeros(8))          # the segment closes
    out += tagger.push(t + 0.96, False, np.zeros(8))
    assert [r["segment_end"] for r in out][:-1] == [None] * (len(out) - 1) and out[-1]["segment_end"] == round(t, 3)
    assert len(out) == 4                               # at 10 s, 30 s, 50 s, and the final one
    for r in out:
        assert r["segment_start"] == 0.0 and r["tags"][0]["genre"] == "b"
        scores = [x["score"] for x in r["tags"]]
        assert scores == sorted(scores, reverse=True) and sum(scores) <= 1.0 + 1e-6 and len(scores) == 2
    short = GenreTagger("ch", model, GenreParams(min_music_s=10))
    assert sum((short.push(i * 0.96, True, np.ones(8)) for i in range(5)), []) == []
    assert short.push(5.0, False, np.ones(8)) == []    # a 5 s jingle gets no genre record


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


def test_run_writes_genre_records_for_music_segments(programme, tmp_path):
    out = tmp_path / "out"
    assert onair("run", "--out", str(out), "--input", f"p={programme['ts']}").returncode == 0
    recs = [json.loads(x) for x in (out / "genres.jsonl").read_text().splitlines()]
    finals = [r for r in recs if r["segment_end"] is not None]
    segs = [json.loads(x) for x in (out / "segments.jsonl").read_text().splitlines()]
    music = [(s["start"], s["end"]) for s in segs if s["label"] == "music" and s["end"] - s["start"] >= 12]
    assert [(r["segment_start"], r["segment_end"]) for r in finals] == music
    assert all(set(r) >= {"channel", "segment_start", "segment_end", "tags"} for r in recs)


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
