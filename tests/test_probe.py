"""A head keeps the embedding of a fixed probe; a runtime whose embeddings differ
(here: the same YAMNet file on TFLite's own kernels instead of XNNPACK) is told
so at load, in one log line and a metric, instead of scoring silently wrong."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from operators.models.embed import YamnetTFLite
from operators.models.probe import MIN_AGREEMENT, probe_frames
from pipeline import config
from pipeline.heads import head_path, load_genre_model, load_music_head, load_talkover_head
from pipeline.metrics import Metrics


@pytest.fixture(scope="module")
def yamnet_path(shared) -> Path:
    return shared / "models" / "yamnet" / "yamnet.tflite"


def _heads(cfg, embedder):
    genre = load_genre_model(cfg, embedder)
    return {"music": load_music_head(cfg, "yamnet", 1024, embedder),
            "talkover": load_talkover_head(cfg, "yamnet", 1024, embedder), "genre": genre.head}


def test_probe_is_fixed_and_audible():
    a, b = probe_frames(), probe_frames()
    assert a.shape == (3, 15600) and np.array_equal(a, b)
    assert (np.abs(a).max(axis=1) > 0.1).all()


def test_the_shipped_heads_match_this_runtime(yamnet_path, caplog):
    cfg = config.load()
    metrics = Metrics()
    with caplog.at_level(logging.WARNING, logger="onair.heads"):
        heads = _heads(cfg, YamnetTFLite(yamnet_path))
    metrics.heads_loaded(**heads)
    for name, head in heads.items():
        assert head.agreement > 0.999, name
        assert metrics.registry.get_sample_value("onair_head_embedding_agreement", {"head": name}) > 0.999
    assert "do not match" not in caplog.text


def test_other_kernels_are_caught_with_one_line_and_a_metric(yamnet_path, caplog):
    cfg = config.load()
    metrics = Metrics()
    with caplog.at_level(logging.WARNING, logger="onair.heads"):
        heads = _heads(cfg, YamnetTFLite(yamnet_path, kernels="builtin"))
    metrics.heads_loaded(**heads)
    warnings = [r for r in caplog.records if "do not match" in r.getMessage()]
    assert sorted(r.getMessage().split(":")[0] for r in warnings) == \
        sorted(str(head_path(cfg, "yamnet", kind)) for kind in ("genre", "music", "talkover"))
    assert all("onair train" in r.getMessage() for r in warnings)
    for name, head in heads.items():
        assert head.agreement < MIN_AGREEMENT, name
        assert metrics.registry.get_sample_value("onair_head_embedding_agreement", {"head": name}) < MIN_AGREEMENT


def test_a_head_without_a_probe_is_not_judged(yamnet_path, tmp_path, caplog):
    cfg = config.load()
    src = head_path(cfg, "yamnet", "music")
    doc = json.loads(src.read_text())
    del doc["meta"]["embedding_probe"]
    (tmp_path / "yamnet").mkdir()
    (tmp_path / "yamnet" / "music.json").write_text(json.dumps(doc))
    cfg["heads"]["dir"] = str(tmp_path)
    with caplog.at_level(logging.WARNING, logger="onair.heads"):
        head = load_music_head(cfg, "yamnet", 1024, YamnetTFLite(yamnet_path, kernels="builtin"))
    assert head.agreement is None and "do not match" not in caplog.text
