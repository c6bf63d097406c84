"""Genre head training, the streaming genre operator and `onair genre`."""
import csv
import json

import numpy as np

from operators.classify import fit_head
from operators.genre import POOLING, GenreModel, GenreTagger, pool
from pipeline.train import genre_cross_validation
from tests.conftest import write_manifest
from tests.test_run import onair


def test_tagger_emits_when_long_enough_updates_sparingly_and_closes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 1, (60, 8)), rng.normal(1, 1, (60, 8))])
    model = GenreModel(fit_head(x, ["a"] * 60 + ["b"] * 60))
    tagger = GenreTagger("ch", model, min_music_s=10, update_s=20, top_k=2)
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
    short = GenreTagger("ch", model, min_music_s=10)
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
