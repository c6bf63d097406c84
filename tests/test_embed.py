"""Embedding backends through the real loading path (DESIGN.md §3)."""
import numpy as np
import pytest

from operators.audio.framing import FRAME_SAMPLES, HOP_SAMPLES
from pipeline import config
from pipeline.heads import HeadMissing, load_music_head
from pipeline.models import ModelNotFound, load_embedder
from tests import standin_vggish


@pytest.fixture(scope="module")
def vggish_dir(tmp_path_factory):
    """An ONAIR_MODEL_DIR holding only the VGGish stand-in SavedModel."""
    root = tmp_path_factory.mktemp("models")
    standin_vggish.build(str(root / "vggish"))
    return root


@pytest.fixture(scope="module")
def vggish(vggish_dir):
    import os
    old = os.environ.get("ONAIR_MODEL_DIR")
    os.environ["ONAIR_MODEL_DIR"] = str(vggish_dir)
    try:
        embedder = load_embedder(config.load(None, ["embedding.backend=vggish"]))
    finally:
        if old is None:
            os.environ.pop("ONAIR_MODEL_DIR")
        else:
            os.environ["ONAIR_MODEL_DIR"] = old
    yield embedder
    # the full-size network's half gigabyte goes back to the system before the suite's later tests
    # start worker processes and a browser beside this one
    import gc
    del embedder
    gc.collect()


def test_vggish_batched_path_equals_the_tfhub_signature(vggish):
    rng = np.random.default_rng(0)
    # 6 frames from 3 "channels" of different material, embedded in one batched call
    audio = [rng.normal(0, 0.1, 16000 * 3), np.sin(np.arange(16000 * 3) * 0.05) * 0.5,
             rng.uniform(-1, 1, 16000 * 3) * np.linspace(0, 1, 16000 * 3)]
    frames = np.stack([a[k * HOP_SAMPLES:k * HOP_SAMPLES + FRAME_SAMPLES] for a in audio for k in range(2)])
    batched = vggish.embed(frames.astype(np.float32)).embeddings
    signature = np.concatenate([vggish.embed_signature(f) for f in frames.astype(np.float32)])
    assert batched.shape == signature.shape == (6, 128)
    scale = np.abs(signature).max()
    np.testing.assert_allclose(batched, signature, atol=1e-4 * scale)
    # and the frames really differ, so equality is not trivial
    assert np.abs(batched[0] - batched[2]).max() > 1e-2 * scale


def test_vggish_signature_on_exactly_one_hop_gives_no_patch(vggish):
    # 15 360 samples make 95 STFT frames, not a 96-frame patch: the model gives nothing or raises,
    # which is why a frame is 15 600 samples
    import tensorflow as tf
    try:
        out = vggish.embed_signature(np.zeros(HOP_SAMPLES, np.float32))
        assert out.shape[0] == 0
    except tf.errors.InvalidArgumentError:
        pass
    assert vggish.embed_signature(np.zeros(FRAME_SAMPLES, np.float32)).shape == (1, 128)


def test_vggish_without_a_head_fails_with_how_to_train(vggish):
    cfg = config.load(None, ["embedding.backend=vggish"])
    with pytest.raises(HeadMissing, match="onair train --backend vggish"):
        load_music_head(cfg, vggish.name, vggish.dim)


def test_vggish_handle_is_a_local_savedmodel_too(vggish_dir, monkeypatch):
    monkeypatch.setenv("ONAIR_MODEL_DIR", str(vggish_dir.parent / "nowhere"))
    emb = load_embedder(config.load(None, ["embedding.backend=vggish",
                                           f"embedding.vggish_handle={vggish_dir / 'vggish'}"]))
    assert emb.embed(np.zeros((2, FRAME_SAMPLES), np.float32)).embeddings.shape == (2, 128)


def test_missing_model_names_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("ONAIR_MODEL_DIR", str(tmp_path))
    cfg = config.load(None, ["embedding.backend=vggish", f"embedding.vggish_handle={tmp_path / 'no-such-model'}"])
    with pytest.raises(ModelNotFound) as e:
        load_embedder(cfg)
    assert str(tmp_path / "vggish") in str(e.value) and "no-such-model" in str(e.value)


def test_yamnet_tflite_batch_equals_single_frames(shared):
    emb = load_embedder(config.load())
    rng = np.random.default_rng(1)
    frames = rng.normal(0, 0.1, (5, FRAME_SAMPLES)).astype(np.float32)
    batch = emb.embed(frames)
    assert batch.embeddings.shape == (5, 1024) and batch.class_scores.shape == (5, 521)
    for i in (0, 4):
        np.testing.assert_allclose(emb.embed(frames[i:i + 1]).embeddings[0], batch.embeddings[i], atol=1e-6)


def test_yamnet_inner_layers_are_the_band_means_of_layers_9_and_10(shared):
    """What the genre head reads besides the embedding: YAMNet's layer 9 and 10 maps
    ([6 time steps, 4 mel bands, 512]) averaged over time, bands kept apart, read from the
    interpreter's kept tensors (XNNPACK computes them; the embedding check shows they are live)."""
    import tensorflow as tf
    emb = load_embedder(config.load())
    frames = np.random.default_rng(2).normal(0, 0.1, (3, FRAME_SAMPLES)).astype(np.float32)
    res = emb.embed(frames)
    assert {k: v.shape for k, v in res.features.items()} == {"layer9_bands": (3, 2048), "layer10_bands": (3, 2048)}
    it = tf.lite.Interpreter(model_path=str(shared / "models" / "yamnet" / "yamnet.tflite"),
                             experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    by_op = {d["name"].split(";")[0]: d["index"] for d in it.get_tensor_details()}
    it.set_tensor(it.get_input_details()[0]["index"], frames[2:3])
    it.invoke()
    last = it.get_tensor(by_op["yamnet_frames/layer14/pointwise_conv/relu/Relu"])[0]
    np.testing.assert_allclose(last.mean(axis=(0, 1)), res.embeddings[2], atol=1e-5)
    for key, layer in (("layer9_bands", 9), ("layer10_bands", 10)):
        t = it.get_tensor(by_op[f"yamnet_frames/layer{layer}/pointwise_conv/relu/Relu"])[0]
        assert t.shape == (6, 4, 512)
        np.testing.assert_allclose(res.features[key][2], t.mean(axis=0).ravel(), atol=1e-5)
        assert res.features[key][2].std() > 0
    np.testing.assert_allclose(emb.embed(frames[:1]).features["layer10_bands"][0], res.features["layer10_bands"][0],
                               atol=1e-6)
