"""A VGGish stand-in: the published architecture and TF-Hub signature
(1-D float32 waveform at 16 kHz -> [N, 128]) with random weights, saved as a
SavedModel so the real `tensorflow_hub.load` path can be exercised here where
the real weights cannot be downloaded.

Its front end frames the waveform into non-overlapping 0.96 s examples and
computes log-mel patches with TensorFlow ops, as the TF-Hub model does
in-graph; variables carry the slim scope names of vggish_slim.py.

`width` scales every layer but the 128-wide output: 1 is the published model
(72 M weights, 290 MB); 1/4 is the same layers and shapes with 1/16 of the
weights, for tests whose point is not the size, e.g. the int8 conversion,
which takes about a minute and 5 GB of memory at full width.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

CONV = [("conv1", 1, 64), ("conv2", 64, 128), ("conv3/conv3_1", 128, 256), ("conv3/conv3_2", 256, 256),
        ("conv4/conv4_1", 256, 512), ("conv4/conv4_2", 512, 512)]
FC = [("fc1/fc1_1", 12288, 4096), ("fc1/fc1_2", 4096, 4096), ("fc2", 4096, 128)]
POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}


class VGGishStandIn(tf.Module):
    def __init__(self, seed: int = 0, width: float = 1.0):
        super().__init__(name=None)
        rng = np.random.default_rng(seed)
        self.layers = []
        for name, cin, cout in CONV:
            cin, cout = (cin if name == "conv1" else int(cin * width)), int(cout * width)  # 1 channel in
            self.layers.append(self._var(name, rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)), cout, rng))
        for name, cin, cout in FC:
            cin, cout = int(cin * width), (cout if name == "fc2" else int(cout * width))  # 128 out
            self.layers.append(self._var(name, rng.normal(0, np.sqrt(2 / cin), (cin, cout)), cout, rng))

    @staticmethod
    def _var(name, w, cout, rng):
        return (name, tf.Variable(w.astype(np.float32), name=f"vggish/{name}/weights"),
                tf.Variable(rng.normal(0, 0.01, cout).astype(np.float32), name=f"vggish/{name}/biases"))

    def _log_mel(self, waveform):
        stft = tf.signal.stft(waveform, frame_length=400, frame_step=160, fft_length=512,
                              window_fn=tf.signal.hann_window, pad_end=False)
        mel = tf.signal.linear_to_mel_weight_matrix(64, 257, 16000, 125.0, 7500.0)
        return tf.math.log(tf.matmul(tf.abs(stft), mel) + 0.01)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform):
        feats = self._log_mel(waveform)                                  # [T, 64]
        n = tf.shape(feats)[0] // 96
        net = tf.reshape(feats[:n * 96], [n, 96, 64, 1])
        for name, w, b in self.layers:
            if name.startswith("conv"):
                net = tf.nn.relu(tf.nn.conv2d(net, w, 1, "SAME") + b)
                if name in POOL_AFTER:
                    net = tf.nn.max_pool2d(net, 2, 2, "SAME")
            else:
                net = tf.reshape(net, [tf.shape(net)[0], -1]) if len(net.shape) > 2 else net
                net = tf.matmul(net, w) + b
                if name != "fc2":
                    net = tf.nn.relu(net)
        return net


def build(path: str, seed: int = 0, width: float = 1.0) -> str:
    m = VGGishStandIn(seed, width)
    tf.saved_model.save(m, path)
    return path
