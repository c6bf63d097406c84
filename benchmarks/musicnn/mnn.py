"""musicnn (PyPI musicnn 0.1.0, ISC) run under TF 2.x: the package's own graph code (models.define_model)
and checkpoints, through tf.compat.v1 with TF_USE_LEGACY_KERAS=1 (tf_keras) and a variable-length input.
The log-mel is musicnn's own recipe (extractor.batch_data) on audio decoded by the project's read_audio."""
import os
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import librosa
import tensorflow as tf
import musicnn
from musicnn import models, configuration as C

BLOCKS = ("taggram", "penultimate", "mean_pool", "max_pool")


def logmel(audio: np.ndarray) -> np.ndarray:
    """[T, 96] as musicnn.extractor.batch_data (pad_mode reflect: librosa < 0.10's default, which it was trained with),
    except that the log is taken in float32 before the float16 cast: the package's order (float16, then 10000 * x)
    overflows to inf for any loud input (mel power > 6.55), which gives NaN features on most of our files."""
    m = librosa.feature.melspectrogram(y=audio, sr=C.SR, hop_length=C.FFT_HOP, n_fft=C.FFT_SIZE,
                                       n_mels=C.N_MELS, pad_mode="reflect").T
    return np.log10(10000 * m.astype(np.float32) + 1).astype(np.float16)


class Musicnn:
    def __init__(self, model: str = "MSD_musicnn", input_length: float = 3.0, threads: int = 0):
        self.model = model
        self.n_frames = librosa.time_to_frames(input_length, sr=C.SR, n_fft=C.FFT_SIZE, hop_length=C.FFT_HOP) + 1
        n_classes = len(C.MTT_LABELS if "MTT" in model else C.MSD_LABELS)
        self.graph = tf.Graph()
        with self.graph.as_default():
            with tf.name_scope("model"):
                self.x = tf.compat.v1.placeholder(tf.float32, [None, None, C.N_MELS])
                self.training = tf.compat.v1.placeholder(tf.bool)
                out = models.define_model(self.x, self.training, model, n_classes)
                y, _tim, _tem, _c1, _c2, _c3, mean_pool, max_pool, penultimate = out
                self.fetch = [tf.nn.sigmoid(y), penultimate, mean_pool, max_pool]
            cfg = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
            self.sess = tf.compat.v1.Session(graph=self.graph, config=cfg)
            tf.compat.v1.train.Saver().restore(self.sess, os.path.dirname(musicnn.__file__) + "/" + model + "/")

    def patches(self, audio: np.ndarray, cap: int | None = None) -> np.ndarray:
        """3 s patches without overlap (musicnn's default; the tail is dropped as it does); a clip
        shorter than one patch is one patch of its own length (musicnn is convolutional in time)."""
        s = logmel(audio)
        if len(s) < self.n_frames:
            return s[None]
        n = 1 + (len(s) - self.n_frames) // self.n_frames
        idx = np.arange(n)
        if cap and n > cap:   # evenly spaced, as pipeline.training.audiofile.frames_of's max_frames
            idx = np.unique(np.linspace(0, n - 1, cap).round().astype(int))
        return np.stack([s[i * self.n_frames:(i + 1) * self.n_frames] for i in idx])

    def run(self, batch: np.ndarray) -> dict:
        out = self.sess.run(self.fetch, {self.x: batch.astype(np.float32), self.training: False})
        return dict(zip(BLOCKS, out))

    def features(self, audio: np.ndarray, cap: int | None = None) -> dict:
        """Per block: [P, D] over the clip's patches (at most `cap`, evenly spaced)."""
        return self.run(self.patches(audio, cap))
