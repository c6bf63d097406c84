"""`onair train` on a small manifest, then `onair run` with the head it wrote."""
import csv
import json

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
