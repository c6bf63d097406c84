"""The VGGish network run on a batch of log-mel patches with the variables of a
loaded TF-Hub VGGish model, in one of three precisions.

The TF-Hub signature takes one waveform and frames it itself, so frames from
many channels cannot share a call. Here the same layers (tensorflow/models
research/audioset/vggish/vggish_slim.py: 3x3 SAME convolutions with ReLU, 2x2
max-pools, fc1 x2 with ReLU, linear fc2) run on [B, 96, 64] patches computed by
operators.audio.features. tests/test_embed.py proves the fp32 path equal to the
signature; tests/test_precision.py bounds the drift of the other two.

- `fp32`: TensorFlow (oneDNN) on the model's own variables, no copy.
- `bf16`: the same graph with weights and activations in bfloat16 (float32
  accumulation in oneDNN's AVX512-BF16/AMX kernels), float32 out. Only worth it
  where the CPU has those instructions; elsewhere bf16 is emulated and slower.
- `int8`: the graph converted to TFLite with dynamic-range quantization (int8
  weights, activations quantized per batch at run time, so no calibration data)
  and run by XNNPACK, which uses AVX512-VNNI/AVX-VNNI where present. About 4x
  the fp32 throughput on an AVX-512 machine: VGGish is ~1.7 GFLOP a frame and
  the convolutions are nearly all of it, so the arithmetic is what counts.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger("onair.vggish")

# slim scope names of the published model, in network order
LAYERS = ["conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2",
          "fc1/fc1_1", "fc1/fc1_2", "fc2"]
POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}
PRECISIONS = ("fp32", "bf16", "int8")
PATCH = (96, 64)


def find_layer_variables(variables) -> dict[str, tuple]:
    """Map each VGGish layer to its (weights, biases) among a model's variables."""
    by_name = {re.sub(r":\d+$", "", v.name): v for v in variables}
    found = {}
    for layer in LAYERS:
        w = [v for n, v in by_name.items() if n.endswith(f"{layer}/weights") or n.endswith(f"{layer}/kernel")]
        b = [v for n, v in by_name.items() if n.endswith(f"{layer}/biases") or n.endswith(f"{layer}/bias")]
        if len(w) != 1 or len(b) != 1:
            raise ValueError(f"VGGish layer '{layer}' not found among the model's variables "
                             f"({len(by_name)} variables, e.g. {sorted(by_name)[:3]})")
        found[layer] = (w[0], b[0])
    return found


def _forward(layers: dict, patches, dtype):
    """The VGGish layers on [B, 96, 64] patches; weights already in `dtype`."""
    import tensorflow as tf

    net = tf.cast(tf.expand_dims(patches, -1), dtype)
    for name in LAYERS:
        w, b = layers[name]
        if name.startswith("conv"):
            net = tf.nn.relu(tf.nn.conv2d(net, w, strides=1, padding="SAME") + b)
            if name in POOL_AFTER:
                net = tf.nn.max_pool2d(net, ksize=2, strides=2, padding="SAME")
        else:
            if len(net.shape) > 2:
                # static size: TFLite needs it; [B, 6, 4, 512] -> [B, 12288]
                net = tf.reshape(net, [-1, int(np.prod(net.shape[1:]))])
            net = tf.matmul(net, w) + b
            if name != "fc2":
                net = tf.nn.relu(net)
    return tf.cast(net, tf.float32)


def cpu_has_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX); Linux only, else False."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class VGGishNetwork:
    """Batched forward pass in fp32 (the loaded model's variables, no copy) or bf16."""

    def __init__(self, variables, precision: str = "fp32"):
        import tensorflow as tf

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"VGGishNetwork: precision {precision!r}, expected fp32 or bf16")
        self.precision = precision
        found = find_layer_variables(variables)
        if precision == "bf16":
            dtype = tf.bfloat16
            layers = {n: (tf.constant(tf.cast(w, dtype)), tf.constant(tf.cast(b, dtype))) for n, (w, b) in found.items()}
        else:
            dtype, layers = tf.float32, found
        self._layers = found

        @tf.function(input_signature=[tf.TensorSpec([None, *PATCH], tf.float32)], jit_compile=False)
        def forward(patches):
            return _forward(layers, patches, dtype)

        self._forward = forward

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(patches, np.float32)).numpy()


class VGGishInt8:
    """The network as a dynamic-range-quantized TFLite model run by XNNPACK. The
    batch dimension follows each call's batch: XNNPACK packs the weights once and
    a new shape costs a re-plan of well under a millisecond after its first use.

    Converting takes tens of seconds, so the model is kept in `cache_dir` under a
    hash of the weights and the TensorFlow version: a restarted worker loads it in
    well under a second."""

    FORMAT = "vggish-int8-dynamic-v1"

    def __init__(self, variables, threads: int = 0, cache_dir: Path | None = None):
        import tensorflow as tf

        found = find_layer_variables(variables)
        arrays = {n: (w.numpy(), b.numpy()) for n, (w, b) in found.items()}
        self.model_bytes = self._cached(arrays, cache_dir) if cache_dir else None
        if self.model_bytes is None:
            self.model_bytes = self._convert(arrays)
            if cache_dir:
                self._store(arrays, cache_dir)
        self.threads = threads or available_cores()
        self._it = tf.lite.Interpreter(model_content=self.model_bytes, num_threads=self.threads)
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]
        self._batch = None

    @staticmethod
    def _convert(arrays: dict) -> bytes:
        import tensorflow as tf

        consts = {n: (tf.constant(w), tf.constant(b)) for n, (w, b) in arrays.items()}

        @tf.function(input_signature=[tf.TensorSpec([None, *PATCH], tf.float32)])
        def forward(patches):
            return _forward(consts, patches, tf.float32)

        conv = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        log.info("VGGish int8: converting to TFLite with dynamic-range quantization")
        return conv.convert()

    @classmethod
    def _key(cls, arrays: dict) -> str:
        import tensorflow as tf

        h = hashlib.sha256(f"{cls.FORMAT}/{tf.__version__}".encode())
        for name in LAYERS:
            for a in arrays[name]:
                h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()[:24]

    def _cached(self, arrays: dict, cache_dir: Path) -> bytes | None:
        path = Path(cache_dir) / f"vggish-int8-{self._key(arrays)}.tflite"
        try:
            data = path.read_bytes()
        except OSError:
            return None
        log.info("VGGish int8: model from %s", path)
        return data

    def _store(self, arrays: dict, cache_dir: Path) -> None:
        path = Path(cache_dir) / f"vggish-int8-{self._key(arrays)}.tflite"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.part")
            tmp.write_bytes(self.model_bytes)
            tmp.replace(path)
        except OSError as e:   # a read-only home: convert again next time
            log.warning("VGGish int8: cannot cache the converted model in %s (%s)", cache_dir, e)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        patches = np.ascontiguousarray(patches, np.float32)
        if len(patches) != self._batch:
            self._it.resize_tensor_input(self._in, [len(patches), *PATCH])
            self._it.allocate_tensors()
            self._batch = len(patches)
        self._it.set_tensor(self._in, patches)
        self._it.invoke()
        return self._it.get_tensor(self._out).copy()


def make_network(variables, precision: str = "fp32", threads: int = 0, cache_dir: Path | None = None):
    """The batched network for `precision`; bf16 without native hardware support
    falls back to fp32 with a warning (emulated bf16 would be slower, not faster)."""
    if precision not in PRECISIONS:
        raise ValueError(f"VGGish precision {precision!r}, expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        return VGGishInt8(variables, threads, cache_dir)
    if precision == "bf16" and not cpu_has_bf16():
        log.warning("embedding.precision bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 would be "
                    "emulated and slower; running fp32")
        precision = "fp32"
    return VGGishNetwork(variables, precision)
