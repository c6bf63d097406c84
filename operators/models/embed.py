"""Embedding backends behind one interface: [B, 15600] frames -> [B, D].

`embed` takes frames from any mix of channels; each backend runs them in as
few model calls as its format allows. YAMNet also returns its own AudioSet
class scores (used later for genre blending) and two of its inner layers
(`features`, what the genre head reads besides the embedding).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from operators.audio.framing import FRAME_SAMPLES


@dataclass
class Embedded:
    embeddings: np.ndarray                 # [B, D] float32
    class_scores: np.ndarray | None = None  # [B, 521] for YAMNet
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [B, F], backend-specific

    def take(self, idx) -> "Embedded":
        """The rows `idx` of every field: one channel's frames out of a shared batch."""
        return Embedded(self.embeddings[idx], None if self.class_scores is None else self.class_scores[idx],
                        {k: v[idx] for k, v in self.features.items()})


class Embedder:
    name = "base"
    dim = 0
    precision = "fp32"
    feature_dims: dict[str, int] = {}   # the blocks of Embedded.features this backend fills

    def embed(self, frames: np.ndarray) -> Embedded:
        raise NotImplementedError


def _check(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or frames.shape[1] != FRAME_SAMPLES:
        raise ValueError(f"expected frames [B, {FRAME_SAMPLES}], got {frames.shape}")
    return frames


class YamnetTFLite(Embedder):
    """YAMNet as TFLite. Its input is fixed at [1, 15600] and XNNPACK cannot
    resize it, so a batch is a loop of invocations on one interpreter (the Python loop
    costs little next to the model: docs/figures.md)."""
    name = "yamnet"
    dim = 1024
    # the shipped file has dynamic-range int8 weights (float activations); the setting is VGGish's
    precision = "fp32"
    EMBEDDING_TENSOR = "yamnet_frames/global_average_pooling2d/Mean"
    # Layers 9 and 10 (of 14) carry more about genre than the embedding, which is tuned to
    # AudioSet's sound events (benchmarks/genre_eval.py measures both). Their maps are
    # [6 time steps, 4 mel bands, 512]; averaging over time only keeps the bands apart (bass
    # against treble), which a genre tells by.
    LAYER_TENSORS = {"layer9_bands": "yamnet_frames/layer9/pointwise_conv/relu/Relu",
                     "layer10_bands": "yamnet_frames/layer10/pointwise_conv/relu/Relu"}
    feature_dims = {"layer9_bands": 2048, "layer10_bands": 2048}

    def __init__(self, path: str, threads: int = 0, kernels: str = "default"):
        """kernels: "default" (XNNPACK, what the shipped heads were trained on) or "builtin"
        (TFLite's own kernels: other embeddings from the same file; see operators.models.probe)."""
        import tensorflow as tf

        if kernels not in ("default", "builtin"):
            raise ValueError(f"kernels {kernels!r}, expected default or builtin")
        extra = {} if kernels == "default" else {
            "experimental_op_resolver_type": tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        self._it = tf.lite.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                       num_threads=threads or None, **extra)
        self._it.allocate_tensors()
        inp = self._it.get_input_details()[0]
        if list(inp["shape"]) != [1, FRAME_SAMPLES]:
            raise ValueError(f"{path}: input shape {list(inp['shape'])}, expected [1, {FRAME_SAMPLES}]")
        self._in = inp["index"]
        tensors = {d["name"]: d["index"] for d in self._it.get_tensor_details()}
        if self.EMBEDDING_TENSOR not in tensors:
            raise ValueError(f"{path}: tensor {self.EMBEDDING_TENSOR} not found; not a YAMNet TFLite model?")
        self._emb = tensors[self.EMBEDDING_TENSOR]
        self._scores = next(o["index"] for o in self._it.get_output_details() if list(o["shape"]) == [1, 521])
        # converted graphs name a fused tensor after every op it holds ("a;b;c"): match the first
        self._layers = {}
        for key, op in self.LAYER_TENSORS.items():
            found = [i for n, i in tensors.items() if n.split(";")[0] == op]
            if not found:
                raise ValueError(f"{path}: tensor {op} not found; not a YAMNet TFLite model?")
            self._layers[key] = found[0]

    def embed(self, frames: np.ndarray) -> Embedded:
        frames = _check(frames)
        emb = np.empty((len(frames), self.dim), np.float32)
        scores = np.empty((len(frames), 521), np.float32)
        feats = {k: np.empty((len(frames), d), np.float32) for k, d in self.feature_dims.items()}
        for i, f in enumerate(frames):
            self._it.set_tensor(self._in, f[None])
            self._it.invoke()
            emb[i] = self._it.get_tensor(self._emb)[0]
            scores[i] = self._it.get_tensor(self._scores)[0]
            for k, t in self._layers.items():   # cheap: preserve_all_tensors keeps them
                feats[k][i] = self._it.get_tensor(t)[0].mean(axis=0).ravel()
        return Embedded(emb, scores, feats)


class YamnetHub(Embedder):
    """YAMNet from a TF-Hub handle (`google/yamnet`): waveform -> (scores, embeddings, log-mel)."""
    name = "yamnet"
    dim = 1024
    precision = "fp32"

    def __init__(self, handle: str):
        import tensorflow_hub as hub

        self._model = hub.load(handle)

    def embed(self, frames: np.ndarray) -> Embedded:
        frames = _check(frames)
        emb, scores = [], []
        for f in frames:
            s, e, _ = self._model(f)
            emb.append(e.numpy()[0]); scores.append(s.numpy()[0])
        return Embedded(np.stack(emb).astype(np.float32), np.stack(scores).astype(np.float32))


class VGGishHub(Embedder):
    """VGGish loaded with `tensorflow_hub.load(handle)`.

    `embed_signature` is the model's own signature (one waveform per call);
    `embed` runs the same network on a batch of patches with the model's own
    variables, which is what lets many channels share one call. `precision`
    (fp32 | bf16 | int8, operators.models.vggish) trades exactness for speed.
    """
    name = "vggish"
    dim = 128

    def __init__(self, handle: str, precision: str = "fp32", threads: int = 0, cache_dir=None):
        import tensorflow_hub as hub

        from operators.models.vggish import make_network

        self._model = hub.load(handle)
        self._net = make_network(_model_variables(self._model), precision, threads, cache_dir)
        self.precision = getattr(self._net, "precision", precision)

    def embed_signature(self, waveform: np.ndarray) -> np.ndarray:
        return self._model(np.asarray(waveform, np.float32)).numpy()

    def embed(self, frames: np.ndarray) -> Embedded:
        from operators.audio.features import log_mel_patches

        return Embedded(self._net(log_mel_patches(_check(frames))))


def _model_variables(model) -> list:
    """A SavedModel's variables: its `variables` attribute (Reusable SavedModel
    API) or, where it has none, every variable reachable from the object."""
    import tensorflow as tf

    found = getattr(model, "variables", None)
    if found:
        return list(found)
    return [t for t in tf.train.TrackableView(model).descendants() if isinstance(t, tf.Variable)]
