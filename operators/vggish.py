"""The VGGish network run on a batch of log-mel patches with the variables of a
loaded TF-Hub VGGish model.

The TF-Hub signature takes one waveform and frames it itself, so frames from
many channels cannot share a call. Here the same layers (tensorflow/models
research/audioset/vggish/vggish_slim.py: 3x3 SAME convolutions with ReLU, 2x2
max-pools, fc1 x2 with ReLU, linear fc2) run on [B, 96, 64] patches computed by
operators.features. tests/test_embed.py proves the two paths equal.
"""
from __future__ import annotations

import re

import numpy as np

# slim scope names of the published model, in network order
LAYERS = ["conv1", "conv2", "conv3/conv3_1", "conv3/conv3_2", "conv4/conv4_1", "conv4/conv4_2",
          "fc1/fc1_1", "fc1/fc1_2", "fc2"]
POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}


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


class VGGishNetwork:
    """Batched forward pass sharing the loaded model's variables (no copy)."""

    def __init__(self, variables):
        import tensorflow as tf

        self._layers = find_layer_variables(variables)
        layers = self._layers

        @tf.function(input_signature=[tf.TensorSpec([None, 96, 64], tf.float32)], jit_compile=False)
        def forward(patches):
            net = tf.expand_dims(patches, -1)
            for name in LAYERS:
                w, b = layers[name]
                if name.startswith("conv"):
                    net = tf.nn.relu(tf.nn.conv2d(net, w, strides=1, padding="SAME") + b)
                    if name in POOL_AFTER:
                        net = tf.nn.max_pool2d(net, ksize=2, strides=2, padding="SAME")
                else:
                    if len(net.shape) > 2:
                        net = tf.reshape(net, [tf.shape(net)[0], -1])
                    net = tf.matmul(net, w) + b
                    if name != "fc2":
                        net = tf.nn.relu(net)
            return net

        self._forward = forward

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(patches, np.float32)).numpy()
