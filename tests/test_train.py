"""`onair train` on a small manifest, then `onair run` with the head it wrote."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from operators.models.classify import Head
from tests.conftest import write_manifest
from tests.test_run import onair, segments


def test_train_writes_a_head_that_run_uses(shared, programme, tmp_path):
    rows = list(csv.DictReader(open(shared / "data" / "manifest.csv")))
    pick = [r for r in rows if r["label"] == "music" and r["path"].startswith("clips/")][:12] + \
           [r for r in rows if r["label"] == "speech"][::400][:12] + [r for r in rows if r["label"] == "noise"][:6]
    manifest = write_manifest(pick, tmp_path / "manifest.csv", shared)
    progs = tmp_path / "programmes"
    progs.mkdir()
    (progs / "p.labels.csv").write_text("start,end,label\n" + "".join(
        f"{s},{e},{'music' if lab == 'music' else 'speech'}\n" for s, e, lab in programme["truth"]))
    heads = tmp_path / "heads"
    r = onair("train", "--backend", "yamnet", "--manifest", str(manifest), "--programmes", str(progs),
              "--frames-per-file", "6", "--cache", str(tmp_path / "cache"), "--set", f"heads.dir={heads}")
    assert r.returncode == 0, r.stderr
    head = Head.load(heads / "yamnet" / "music.json")
    assert head.classes == ["non_music", "music"] and head.dim == 1024
    assert head.meta["hmm"]["fitted_on"] == ["p.labels.csv"]
    assert 0 < head.meta["hmm"]["p_leave_music"] < 0.1
    assert len(head.meta["embedding_probe"]) == 1024      # see tests/test_probe.py
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["files"] == len(pick)

    out = tmp_path / "out"
    r = onair("run", "--out", str(out), "--input", f"x={programme['ts']}", "--set", f"heads.dir={heads}")
    assert r.returncode == 0, r.stderr
    assert {s["label"] for s in segments(out, "x")} == {"music", "non_music"}
    assert "do not match" not in r.stderr      # trained and run on the same embeddings


def test_bed_programmes_put_music_under_the_voice_at_the_asked_level(shared, tmp_path):
    import random

    from pipeline.training.beds import BedComposer, active_rms, frame_labels, mix_bed
    rng = np.random.default_rng(0)
    voice = np.concatenate([rng.normal(0, 0.1, 16000), np.zeros(8000), rng.normal(0, 0.1, 16000)]).astype(np.float32)
    bed = rng.normal(0, 0.3, 50000).astype(np.float32)
    for gap in (9.0, 21.0):
        mixed = mix_bed(voice, bed, gap)
        under = mixed - voice
        assert len(mixed) == len(voice)
        assert 20 * np.log10(active_rms(voice) / np.sqrt(np.mean(under ** 2))) == pytest.approx(gap, abs=0.01)
    rows = list(csv.DictReader(open(shared / "data" / "manifest.csv")))
    pick = [r for r in rows if r["label"] == "music"][:4] + [r for r in rows if r["label"] == "speech"][:40]
    manifest = write_manifest(pick, tmp_path / "manifest.csv", shared)
    composer = BedComposer(manifest, root=Path("/"))
    audio, labels = composer.build(random.Random(1), 3.0)
    again, _ = BedComposer(manifest, root=Path("/")).build(random.Random(1), 3.0)
    assert np.array_equal(audio, again) and np.all(np.abs(audio) <= 1.0)
    assert labels[0][0] == 0.0 and all(a[1] == b[0] for a, b in zip(labels, labels[1:]))
    assert labels[-1][1] == pytest.approx(len(audio) / 16000) and labels[-1][1] >= 180
    assert {k for _, _, k in labels} <= {"speech", "bed", "music"}
    n = 1 + (len(audio) - 15600) // 15360
    per_frame = frame_labels(labels, n)
    for i, lab in enumerate(per_frame):      # a frame gets the stretch it lies in, none across a boundary
        s = i * 0.96
        inside = [k for a, b, k in labels if a <= s and s + 0.975 <= b]
        assert lab == (inside[0] if inside else "")
