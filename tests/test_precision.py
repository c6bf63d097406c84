"""VGGish precisions (operators/models/vggish.py): bf16 and int8 stay close to fp32,
the int8 model is cached, bf16 falls back where the CPU cannot do it, and the
thread settings of the stream path."""
import logging

import numpy as np
import pytest

from operators.audio.framing import FRAME_SAMPLES
from pipeline import config
from pipeline.config import ConfigError
from tests import standin_vggish


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """VGGish's layers at a quarter of their width: precision, caching and loading do not depend on
    the size, and the int8 conversion of the full model takes a minute and 5 GB (tests/test_embed.py
    has the full one)."""
    root = tmp_path_factory.mktemp("vggish")
    return standin_vggish.build(str(root / "vggish"), width=0.25)


@pytest.fixture(scope="module")
def frames():
    """Broadcast-like material: tones, a chord with a beat, noise, speech-like bursts, near silence."""
    rng = np.random.default_rng(3)
    t = np.arange(FRAME_SAMPLES) / 16000
    out = [0.3 * np.sin(2 * np.pi * 440 * t),
           0.2 * (np.sin(2 * np.pi * 261 * t) + np.sin(2 * np.pi * 329 * t) + np.sin(2 * np.pi * 392 * t))
           * (1 + np.sign(np.sin(2 * np.pi * 2 * t))) / 2,
           rng.normal(0, 0.1, FRAME_SAMPLES),
           rng.normal(0, 0.2, FRAME_SAMPLES) * (np.sin(2 * np.pi * 4 * t) > 0.3),
           rng.normal(0, 1e-4, FRAME_SAMPLES)]
    return np.stack(out).astype(np.float32)


@pytest.fixture(scope="module")
def fp32(standin, frames):
    from operators.models.embed import VGGishHub
    return VGGishHub(standin).embed(frames).embeddings


@pytest.fixture(scope="module")
def int8(standin, frames, tmp_path_factory):
    """A $ONAIR_CACHE for the module, with the int8 model converted into its models/ once, and
    the embeddings of `frames` by the model just converted. A conversion takes tens of seconds
    and leaves gigabytes of TensorFlow graph in the process: four of them (one per int8 test)
    took half the suite's peak memory and three minutes. The tests load the cached model."""
    from operators.models.embed import VGGishHub
    root = tmp_path_factory.mktemp("cache")
    emb = VGGishHub(standin, "int8", cache_dir=root / "models")
    assert emb.precision == "int8"
    return {"cache": root, "embeddings": emb.embed(frames).embeddings}


def no_conversion(*a):
    raise AssertionError("converted again although cached")


def cosine(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_stays_close_to_fp32(standin, frames, fp32):
    from operators.models.embed import VGGishHub
    emb = VGGishHub(standin, "bf16").embed(frames).embeddings
    assert emb.shape == fp32.shape and emb.dtype == np.float32
    assert cosine(emb, fp32).min() > 0.999


def test_int8_stays_close_to_fp32(int8, fp32):
    emb = int8["embeddings"]          # by the model as converted, before any cache
    assert emb.shape == fp32.shape and emb.dtype == np.float32
    assert cosine(emb, fp32).min() > 0.999


def test_int8_model_is_converted_once_and_cached(standin, frames, int8, monkeypatch):
    from operators.models import vggish
    from operators.models.embed import VGGishHub
    cache = int8["cache"] / "models"
    assert len(list(cache.glob("vggish-int8-*.tflite"))) == 1     # the `int8` fixture's conversion
    monkeypatch.setattr(vggish.VGGishInt8, "_convert", staticmethod(no_conversion))
    again = VGGishHub(standin, "int8", cache_dir=cache)
    np.testing.assert_array_equal(again.embed(frames).embeddings, int8["embeddings"])


def test_int8_frames_do_not_depend_on_their_batch(standin, frames, int8, monkeypatch):
    # activations are quantized per frame, so a channel's embedding does not change with its neighbours
    from operators.models import vggish
    from operators.models.embed import VGGishHub
    monkeypatch.setattr(vggish.VGGishInt8, "_convert", staticmethod(no_conversion))
    emb = VGGishHub(standin, "int8", cache_dir=int8["cache"] / "models")
    together = emb.embed(frames).embeddings
    alone = np.concatenate([emb.embed(frames[i:i + 1]).embeddings for i in range(len(frames))])
    np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5 * np.abs(together).max())


def test_bf16_without_cpu_support_runs_fp32(standin, frames, fp32, monkeypatch, caplog):
    from operators.models import vggish
    from operators.models.embed import VGGishHub
    monkeypatch.setattr(vggish, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="onair.vggish"):
        emb = VGGishHub(standin, "bf16")
    assert emb.precision == "fp32" and "emulated" in caplog.text
    np.testing.assert_allclose(emb.embed(frames).embeddings, fp32, atol=1e-5 * np.abs(fp32).max())


def test_precision_comes_from_config_through_the_real_loading_path(standin, frames, fp32, int8, monkeypatch):
    from pathlib import Path

    from operators.models import vggish
    from pipeline.models import load_embedder
    monkeypatch.setenv("ONAIR_MODEL_DIR", str(Path(standin).parent))
    # the model converted into $ONAIR_CACHE/models by the `int8` fixture: found there, not converted again
    monkeypatch.setenv("ONAIR_CACHE", str(int8["cache"]))
    monkeypatch.setattr(vggish.VGGishInt8, "_convert", staticmethod(no_conversion))
    emb = load_embedder(config.load(None, ["embedding.backend=vggish", "embedding.precision=int8"]))
    assert emb.precision == "int8"
    assert cosine(emb.embed(frames).embeddings, fp32).min() > 0.999


def test_precision_key_is_validated():
    assert config.load()["embedding"]["precision"] == "fp32"
    with pytest.raises(ConfigError, match="embedding.precision"):
        config.load(None, ["embedding.precision=fp16"])


def test_yamnet_ignores_precision_with_a_warning(caplog):
    from pipeline.models import load_embedder
    with caplog.at_level(logging.WARNING, logger="onair.models"):
        emb = load_embedder(config.load(None, ["embedding.precision=int8"]))
    assert emb.name == "yamnet" and emb.precision == "fp32"
    assert "VGGish only" in caplog.text


def test_blas_is_limited_to_one_thread():
    from pipeline.models import limit_blas_threads
    assert limit_blas_threads(1) >= 1
