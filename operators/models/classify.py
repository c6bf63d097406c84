"""Small classifier heads on embeddings: standardised multinomial logistic
regression, fitted with scipy's L-BFGS. One implementation serves the binary
music head and the multi-class genre head; parameters live in a JSON file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax


@dataclass
class Head:
    classes: list[str]
    mean: np.ndarray        # [D]
    scale: np.ndarray       # [D]
    weights: np.ndarray     # [D, K]
    bias: np.ndarray        # [K]
    meta: dict = field(default_factory=dict)
    # set at load: probe cosine against the embeddings it was trained on (pipeline.heads)
    agreement: float | None = field(default=None, compare=False)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def logits(self, emb: np.ndarray) -> np.ndarray:
        x = (np.asarray(emb, np.float32) - self.mean) / self.scale
        # not `x @ weights`: a BLAS product's rows depend on how many rows go in (other kernels for
        # short batches on AVX-512 machines: 1e-5 apart), and a frame must score the same whether
        # direct mode batched it with other channels' frames or a Kafka worker alone
        return np.einsum("nd,dk->nk", x, self.weights) + self.bias

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        return softmax(self.logits(emb), axis=-1)

    def save(self, path: str | Path) -> None:
        r = lambda a: np.round(np.asarray(a, np.float64), 6).tolist()  # noqa: E731
        doc = {"classes": self.classes, "mean": r(self.mean), "scale": r(self.scale),
               "weights": r(self.weights), "bias": r(self.bias), "meta": self.meta}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Head":
        doc = json.loads(Path(path).read_text())
        f = lambda k: np.asarray(doc[k], np.float32)  # noqa: E731
        head = cls(list(doc["classes"]), f("mean"), f("scale"), f("weights"), f("bias"), doc.get("meta", {}))
        if head.weights.shape != (head.dim, len(head.classes)):
            raise ValueError(f"{path}: weights shape {head.weights.shape} does not match "
                             f"{head.dim} inputs x {len(head.classes)} classes")
        return head


def fit_head(x: np.ndarray, labels: list[str], classes: list[str] | None = None, l2: float = 1e-3,
             sample_weight: np.ndarray | None = None, max_iter: int = 500) -> Head:
    """Fit on [N, D] embeddings; classes are balanced unless sample_weight is given."""
    x = np.asarray(x, np.float64)
    classes = classes or sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    n, d = x.shape
    k = len(classes)
    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    z = (x - mean) / scale
    if sample_weight is None:
        counts = np.bincount(y, minlength=k).astype(np.float64)
        sample_weight = (n / (k * np.maximum(counts, 1)))[y]
    sw = sample_weight / sample_weight.sum()
    onehot = np.eye(k)[y]

    def loss(theta):
        w = theta[:d * k].reshape(d, k)
        b = theta[d * k:]
        lp = log_softmax(z @ w + b, axis=1)
        g = (np.exp(lp) - onehot) * sw[:, None]
        value = -np.sum(sw * np.sum(onehot * lp, axis=1)) + 0.5 * l2 * np.sum(w * w)
        grad_w = z.T @ g + l2 * w
        return value, np.concatenate([grad_w.ravel(), g.sum(0)])

    res = minimize(loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    w = res.x[:d * k].reshape(d, k)
    b = res.x[d * k:]
    return Head(classes, mean.astype(np.float32), scale.astype(np.float32), w.astype(np.float32),
                b.astype(np.float32), {"l2": l2, "train_loss": float(res.fun), "n_train": int(n)})
