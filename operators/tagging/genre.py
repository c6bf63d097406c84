"""Genre tags for music: a softmax head over per-frame inputs, optionally blended
with YAMNet's own AudioSet genre classes, aggregated over a song.

A frame's input is one or more blocks (the embedding and, with YAMNet, band means of two
inner layers: operators.models.embed); the head's meta names them (`inputs`, `input_dims`). They
are averaged over the segment and each block's mean scaled to unit length (`pool`); the head
gives a probability per genre; with YAMNet the AudioSet scores of the classes mapped
to each genre (their maximum, normalised over genres) are mixed in with
weight `audioset_weight`. Tags are the top k, best first; their scores sum
to at most 1.
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass

import numpy as np

from operators.audio.constants import HOP_S
from operators.models.classify import Head
from operators.state import from_text, to_text
from operators.tagging.usage import Usage

POOLING = "mean of frame inputs, each block L2-normalised"
# what heads trained on the embedding alone say: the same pooling with one block
POOLING_EMBEDDING_ONLY = "mean of frame embeddings, L2-normalised"


def pool(mean: np.ndarray, dims: list[int] | None = None) -> np.ndarray:
    """Mean input(s) -> each block (`dims`, default one) at unit length. The norm of a mean
    shrinks as its frames disagree, so it says more about a segment's length and variety (a 3 s
    excerpt against a 4 min song) than about its genre; the head should see the direction only.
    Blocks are scaled apart so that none outweighs the others by its size.
    By 5-fold orig_id validation on the GTZAN excerpts it is worth +0.005 top-1 (8 of 10 fold seeds)."""
    e = np.asarray(mean, np.float64)
    parts = np.split(e, np.cumsum(dims)[:-1], axis=-1) if dims else [e]
    return np.concatenate([p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12) for p in parts],
                          axis=-1)


def head_inputs(head: Head) -> tuple[list[str], list[int]]:
    """The blocks a genre head reads and their sizes; heads from before inner layers read the
    embedding alone."""
    return list(head.meta.get("inputs", ["embedding"])), list(head.meta.get("input_dims", [head.dim]))


def frame_inputs(names: list[str], embeddings: np.ndarray, features: dict | None = None) -> np.ndarray:
    """[B, sum of block sizes]: the named blocks of B frames ("embedding" or a key of the
    embedder's `features`), in that order."""
    if names == ["embedding"]:
        return np.asarray(embeddings)
    features = features or {}
    missing = [n for n in names if n != "embedding" and n not in features]
    if missing:
        raise KeyError(f"the genre head reads {', '.join(missing)}, which the embedder does not give")
    return np.concatenate([embeddings if n == "embedding" else features[n] for n in names], axis=1)


def audioset_indices(class_map_csv: str, mapping: dict[str, list[str]]) -> dict[str, list[int]]:
    with open(class_map_csv, newline="") as f:
        names = {r["display_name"]: int(r["index"]) for r in csv.DictReader(f)}
    missing = [n for names_ in mapping.values() for n in names_ if n not in names]
    if missing:
        raise ValueError(f"AudioSet classes not in {class_map_csv}: {missing}")
    return {g: [names[n] for n in ns] for g, ns in mapping.items()}


class GenreModel:
    def __init__(self, head: Head, audioset: dict[str, list[int]] | None = None, weight: float = 0.0):
        self.head = head
        self.classes = head.classes
        self.weight = weight if audioset else 0.0
        self.audioset = audioset or {}
        # heads trained before pooling normalised (or by other tools) keep the plain mean
        self.normalise = head.meta.get("aggregation") in (POOLING, POOLING_EMBEDDING_ONLY)
        self.inputs, self.input_dims = head_inputs(head)

    def frame_inputs(self, embeddings: np.ndarray, features: dict | None = None) -> np.ndarray:
        """[B, head.dim]: this head's blocks of B frames, in its order."""
        return frame_inputs(self.inputs, embeddings, features)

    def probs(self, mean_input: np.ndarray, class_scores: np.ndarray | None = None) -> np.ndarray:
        """Genre probabilities from a segment's mean input (`frame_inputs` averaged over frames)."""
        e = pool(mean_input, self.input_dims) if self.normalise else mean_input
        return self.blend(self.head.predict_proba(np.asarray(e, np.float32)[None])[0], class_scores)

    def blend(self, p: np.ndarray, class_scores: np.ndarray | None, weight: float | None = None) -> np.ndarray:
        """The head's probabilities mixed with the AudioSet genre classes (`weight`, default the model's)."""
        w = self.weight if weight is None else weight
        if w and self.audioset and class_scores is not None:
            a = np.array([max((class_scores[i] for i in self.audioset.get(g, [])), default=0.0)
                          for g in self.classes])
            if a.sum() > 0:
                p = (1 - w) * p + w * a / a.sum()
        return p

    def tags(self, probs: np.ndarray, k: int) -> list[dict]:
        order = np.argsort(-probs)[:k]
        return [{"genre": self.classes[i], "score": round(float(probs[i]), 4)} for i in order]


@dataclass(frozen=True)
class GenreParams:
    min_music_s: float = 12.0    # music this long before the first tag
    update_s: float = 30.0       # then a new tag of the open segment this often
    top_k: int = 3               # tags per record, best first

    @classmethod
    def from_config(cls, section: dict) -> "GenreParams":
        return cls(section["min_music_s"], section["update_s"], section["top_k"])


class SongGenres:
    """Per channel: the genre of each song, with the debouncer's song boundaries (the same songs as
    the requests). A song's record opens once it has `min_music_s` of music, is sent again every
    `update_s` and whenever the provider's genres become known, and closes with the song.

    Boundaries are found late (a change is accepted a few frames after it, an early dip moves the
    start back): frames wait `delay_s` before they count for a song, so the ones after a boundary
    found late go to the song they belong to. Evidence is music the talk-over head does not flag."""

    def __init__(self, channel: str, model: GenreModel, params: GenreParams = GenreParams(), delay_s: float = 10.0):
        self.channel, self.model, self.delay_s = channel, model, delay_s
        self.min_music_s, self.update_s, self.top_k = params.min_music_s, params.update_s, params.top_k
        self._recent: deque = deque()      # (time, input, class scores, talk, p_background) not counted yet
        self._open(None)

    def _open(self, start: float | None) -> None:
        self.start = start
        self._usage = Usage()
        self._end = None                   # end of the song's last music frame
        self._playing = False              # the last frame decided was the song's music
        self._sum = self._scores = None
        self._n = 0
        self._last_emit = None
        self._emitted = False
        self.provider: list[dict] = []     # provider_tags of the recording identified in this song

    def push(self, time: float, music: bool, x, class_scores, song_start: float | None, talk: bool = False,
             p_background: float | None = None) -> list[dict]:
        """One decided frame at `time`; `song_start`: the debouncer's song once it has seen the frame;
        `talk`: speech dominates it (usage counts it, the genre does not); `p_background`: how likely."""
        out = self._boundary(song_start) if song_start != self.start else []
        self._playing = music and self.start is not None and time >= self.start
        if self._playing:
            self._recent.append((time, None if talk else x, None if talk else class_scores, talk, p_background))
            self._end = time + HOP_S
        while self._recent and self._recent[0][0] < time - self.delay_s:
            self._count(self._recent.popleft())
        if self._due(self._last_emit is None or self._end - self._last_emit >= self.update_s):
            out += self._record(None)
        return out

    def identified(self, tags: list[dict]) -> list[dict]:
        """The provider's genres of the recording identified in the open song: an update at once."""
        if self.start is None or tags == self.provider:
            return []
        self.provider = tags
        return self._record(None) if self._due(True) else []

    def close(self, end_time: float) -> list[dict]:
        """The song ends (end of input, an outage): its closing record."""
        return self._boundary(None, end_time)

    def _due(self, when: bool) -> bool:
        return self.start is not None and self._end is not None and self._end - self.start >= self.min_music_s \
            and when

    def _boundary(self, new_start: float | None, end_time: float | None = None) -> list[dict]:
        out = []
        if self.start is not None:
            cut = new_start if new_start is not None and new_start > self.start else float("inf")
            while self._recent and self._recent[0][0] < cut:
                self._count(self._recent.popleft())
            end = self._end if self._end is not None else self.start
            if cut != float("inf"):
                end = min(end, cut)
            elif end_time is not None and (self._end is None or self._playing):
                end = max(end, end_time)      # playing to the end of input: the song ends with it
            if self._emitted or end - self.start >= self.min_music_s:
                out = self._record(end)
        keep = [f for f in self._recent if new_start is not None and f[0] >= new_start]
        self._recent = deque(keep)
        self._open(new_start)
        if keep:
            self._end = keep[-1][0] + HOP_S
        return out

    def _count(self, frame) -> None:
        _, x, scores, talk, p_bg = frame
        if p_bg is not None:
            self._usage.add(p_bg)
        if talk:
            return
        if x is not None:
            e = np.asarray(x, np.float64)
            self._sum = e if self._sum is None else self._sum + e
        if scores is not None:
            s = np.asarray(scores, np.float64)
            self._scores = s if self._scores is None else self._scores + s
        self._n += 1

    def _record(self, end) -> list[dict]:
        total, scores, n = self._sum, self._scores, self._n
        usage = Usage.restored(self._usage.snapshot())
        for _, x, sc, talk, p_bg in self._recent:          # the frames still waiting are this song's too
            if p_bg is not None:
                usage.add(p_bg)
            if talk:
                continue
            if x is not None:
                total = np.asarray(x, np.float64) if total is None else total + x
            if sc is not None:
                scores = np.asarray(sc, np.float64) if scores is None else scores + sc
            n += 1
        if total is None and not self.provider:
            return []
        tags = []
        if total is not None:
            # dividing by all frames, with or without input, changes the mean's norm, not its direction
            p = self.model.probs(total / n, None if scores is None else scores / n)
            tags = [{**t, "source": "model"} for t in self.model.tags(p, self.top_k)]
        self._emitted, self._last_emit = True, self._end
        end = None if end is None else round(end, 3)
        return [{"channel": self.channel, "song_start": round(self.start, 3), "song_end": end,
                 "status": "open" if end is None else "closed", "tags": tags, "provider_tags": list(self.provider),
                 **usage.fields(),
                 "segment_start": round(self.start, 3), "segment_end": end}]

    def snapshot(self) -> dict:
        return {"start": self.start, "end": self._end, "playing": self._playing, "n": self._n,
                "last_emit": self._last_emit,
                "emitted": self._emitted, "provider": self.provider, "usage": self._usage.snapshot(),
                "sum": to_text(self._sum, "<f8"), "scores": to_text(self._scores, "<f8"),
                "recent": [(t, to_text(x), to_text(sc), talk, p) for t, x, sc, talk, p in self._recent]}

    def restore(self, d: dict) -> None:
        if "recent" not in d:          # written by the per-segment tagger: the song starts afresh
            return
        self.start, self._end, self._n, self._last_emit = d["start"], d["end"], d["n"], d["last_emit"]
        self._playing = d["playing"]
        self._emitted, self.provider = d["emitted"], d["provider"]
        self._usage = Usage.restored(d.get("usage"))
        self._sum = from_text(d["sum"], "<f8")
        self._scores = from_text(d["scores"], "<f8")
        dim = self.model.head.dim
        if self._sum is not None and self._sum.size != dim:
            self._sum = None       # written for another genre head: the song goes on from here
        self._recent = deque((t, x if x is not None and x.size == dim else None, sc, talk, p)
                             for t, x, sc, talk, p in ((t, from_text(x), from_text(sc), talk, p)
                                                       for t, x, sc, talk, p in d["recent"]))
