"""Online two-state HMM over per-frame class posteriors, decided at a fixed lag.

A frame's label is decided `lag` frames after it arrived, from the forward
probabilities up to it and a backward pass over the `lag` frames that
followed: a bounded delay (lag x 0.96 s), never a re-read of the stream.
Emissions are scaled likelihoods p(state | x) / p(state) from the head.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Decision:
    index: int          # frame number within the channel
    time: float         # stream time of the frame
    state: int          # 0 = non_music, 1 = music
    posterior: float    # smoothed probability of `state`


@dataclass(frozen=True, eq=False)
class HmmParams:
    """The model of one head: its transitions, the stationary prior, the class prior the head was
    fitted with (emissions are divided by it) and the emission weight (<1 trusts the transitions
    more); `lag` is the decision delay in frames."""
    transition: np.ndarray     # [2, 2] row-stochastic, state 0 = non_music, 1 = music
    prior: np.ndarray          # [2]
    class_prior: np.ndarray    # [2]
    emission_weight: float = 1.0
    lag: int = 5


class FixedLagHMM:
    @classmethod
    def from_params(cls, p: HmmParams) -> "FixedLagHMM":
        return cls(p.transition, p.prior, p.lag, p.class_prior, p.emission_weight)

    def __init__(self, transition: np.ndarray, prior: np.ndarray, lag: int = 5,
                 class_prior: np.ndarray | None = None, emission_weight: float = 1.0):
        self.A = np.asarray(transition, np.float64)
        if self.A.shape != (2, 2) or not np.allclose(self.A.sum(1), 1.0):
            raise ValueError("transition must be a 2x2 row-stochastic matrix")
        self.prior = np.asarray(prior, np.float64)
        self.class_prior = np.asarray(class_prior if class_prior is not None else [0.5, 0.5], np.float64)
        self.lag = int(lag)
        self.emission_weight = float(emission_weight)
        self.reset()

    def reset(self) -> None:
        self._alpha = None
        self._window: deque = deque()   # (index, time, alpha_t, emission_t)
        self._n = 0

    def snapshot(self) -> dict:
        return {"alpha": None if self._alpha is None else self._alpha.tolist(), "n": self._n,
                "window": [(i, t, a.tolist(), e.tolist()) for i, t, a, e in self._window]}

    def restore(self, d: dict) -> None:
        self._alpha = None if d["alpha"] is None else np.asarray(d["alpha"])
        self._n = d["n"]
        self._window = deque((i, t, np.asarray(a), np.asarray(e)) for i, t, a, e in d["window"])

    def push(self, p_music: float, time: float) -> list[Decision]:
        p = float(np.clip(p_music, 1e-6, 1 - 1e-6))
        e = (np.array([1 - p, p]) / self.class_prior) ** self.emission_weight
        pred = self.prior if self._alpha is None else self._alpha @ self.A
        a = pred * e
        self._alpha = a / a.sum()
        self._window.append((self._n, time, self._alpha, e))
        self._n += 1
        out = []
        if len(self._window) > self.lag:
            out.append(self._decide_oldest())
        return out

    def flush(self) -> list[Decision]:
        out = []
        while self._window:
            out.append(self._decide_oldest())
        return out

    def _decide_oldest(self) -> Decision:
        beta = np.ones(2)
        items = list(self._window)
        for _, _, _, e in reversed(items[1:]):
            beta = self.A @ (e * beta)
            beta /= beta.sum()
        idx, t, alpha, _ = self._window.popleft()
        post = alpha * beta
        post /= post.sum()
        s = int(np.argmax(post))
        return Decision(idx, t, s, float(post[s]))


def fit_transitions(label_runs: list[list[int]], pseudo: float = 1.0) -> np.ndarray:
    """Maximum-likelihood transition matrix from per-frame state sequences."""
    counts = np.full((2, 2), pseudo)
    for seq in label_runs:
        seq = np.asarray(seq)
        for a, b in zip(seq[:-1], seq[1:]):
            counts[a, b] += 1
    return counts / counts.sum(1, keepdims=True)
