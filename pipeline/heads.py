"""Trained heads per embedding backend, under `heads.dir/<backend>/`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from operators.decisions.hmm import HmmParams
from operators.models.classify import Head
from pipeline.metrics import Metrics

log = logging.getLogger("onair.heads")


class HeadMissing(RuntimeError):
    pass


TALK_CLASS = "speech_over_music"    # the talk-over head's positive class (adverts, voice over a bed)


def head_path(cfg: dict, backend: str, kind: str = "music") -> Path:
    return Path(cfg["heads"]["dir"]) / backend / f"{kind}.json"


def _checked(path: Path, backend: str, dim: int, needed_class: str) -> Head:
    """A head file that fits this backend's embeddings and has the class its user reads."""
    head = Head.load(path)
    if head.dim != dim or needed_class not in head.classes:
        raise HeadMissing(f"{path}: head expects {head.dim}-d embeddings with a '{needed_class}' class, "
                          f"backend '{backend}' gives {dim}-d; retrain with onair train --backend {backend}")
    return head


def load_music_head(cfg: dict, backend: str, dim: int, embedder=None) -> Head:
    path = head_path(cfg, backend)
    if not path.is_file():
        raise HeadMissing(
            f"no music head for embedding backend '{backend}' at {path}; train one with: "
            f"onair train --backend {backend} --manifest ../shared/data/manifest.csv "
            f"--music-dir ../shared/data/genre --programmes ../shared/data/streams")
    head = _checked(path, backend, dim, "music")
    head.agreement = embedding_agreement(head, embedder, path)
    return head


def load_talkover_head(cfg: dict, backend: str, dim: int, embedder=None) -> Head | None:
    """The speech-over-music head (music vs speech_over_music), or None: without it adverts with a
    music bed can cost a request, and the pipeline says so once."""
    path = head_path(cfg, backend, "talkover")
    if not path.is_file():
        log.warning(
            "no talk-over head for backend '%s' at %s: speech over a music bed (adverts) is not told apart "
            "from songs by the debouncer; train one with onair train --compose N", backend, path)
        return None
    head = _checked(path, backend, dim, TALK_CLASS)
    head.agreement = embedding_agreement(head, embedder, path)
    return head


def embedding_agreement(head: Head, embedder, path) -> float | None:
    """Cosine between the probe embedding stored with `head` at training and this embedder's
    (operators.models.probe); None for a head without one. Below MIN_AGREEMENT the head was fitted on
    other embeddings (another model file, or the same file on other kernels) and its scores
    are not to be trusted: one warning line says so and how to fix it."""
    from operators.models.probe import MIN_AGREEMENT, agreement, fingerprint
    stored = head.meta.get("embedding_probe")
    if stored is None or embedder is None:
        return None
    cos = agreement(stored, fingerprint(embedder))
    if cos < MIN_AGREEMENT:
        log.warning(
            "%s: this runtime's '%s' embeddings do not match the ones the head was trained on (probe cosine "
            "%.3f, expected >= %.2f: another model file, or TFLite kernels other than XNNPACK); its decisions "
            "may be wrong; retrain it here with onair train", path, embedder.name, cos, MIN_AGREEMENT)
    return cos


def hmm_params(head: Head, cfg: dict) -> HmmParams:
    """Transition matrix and priors: fitted values stored with the head, overridable in config."""
    h = head.meta.get("hmm", {})
    leave = cfg["hmm"]["p_leave_music"] or h.get("p_leave_music", 0.01)
    enter = cfg["hmm"]["p_enter_music"] or h.get("p_enter_music", 0.01)
    A = np.array([[1 - enter, enter], [leave, 1 - leave]])
    stationary = np.array([leave, enter]) / (leave + enter)
    class_prior = np.array(h.get("class_prior", [0.5, 0.5]))   # [non_music, music], as the head was fitted
    weight = cfg["hmm"]["emission_weight"] or h.get("emission_weight", 1.0)
    return HmmParams(A, stationary, class_prior, weight, cfg["hmm"]["lag_frames"])


def load_genre_model(cfg: dict, embedder):
    """The genre model of a backend, or None (genre tags off) when no genre head was trained for it."""
    path = head_path(cfg, embedder.name, "genre")
    if not path.is_file():
        log.warning("no genre head for backend '%s' at %s: genre tags are off (train one with "
                    "onair train --head genre --backend %s --manifest ...)", embedder.name, path, embedder.name)
        return None
    head = Head.load(path)
    try:
        model = genre_model_for(cfg, embedder)(head, path)
    except HeadMissing as e:   # genre tags are an extra: music detection and requests go on
        log.warning("%s: genre tags are off", e)
        return None
    head.agreement = embedding_agreement(head, embedder, path)
    return model


class Heads(NamedTuple):
    music: Head
    talkover: Head | None
    genre: object          # operators.tagging.genre.GenreModel, or None


def load_heads(cfg: dict, embedder, metrics: Metrics | None = None) -> Heads:
    """Every head a channel detector uses, each checked against this embedder's probe (its
    agreement exported to `metrics` when given)."""
    heads = Heads(load_music_head(cfg, embedder.name, embedder.dim, embedder),
                  load_talkover_head(cfg, embedder.name, embedder.dim, embedder),
                  load_genre_model(cfg, embedder))
    (metrics or Metrics()).heads_loaded(music=heads.music, talkover=heads.talkover, genre=heads.genre and heads.genre.head)
    return heads


def genre_model_for(cfg: dict, embedder):
    """A function head -> GenreModel with this config's AudioSet blending (used by training too)."""
    import os

    from operators.tagging.genre import GenreModel, audioset_indices, head_inputs
    g = cfg["genre"]
    class_map = Path(os.environ.get("ONAIR_MODEL_DIR", "")) / "yamnet" / "yamnet_class_map.csv"

    def make(head, path="the genre head"):
        gives = {"embedding": embedder.dim, **embedder.feature_dims}
        inputs, dims = head_inputs(head)
        wrong = [f"{n} ({d}-d)" for n, d in zip(inputs, dims) if gives.get(n) != d]
        if wrong or sum(dims) != head.dim:
            raise HeadMissing(f"{path}: the genre head reads {', '.join(wrong or inputs)}, which backend "
                              f"'{embedder.name}' ({type(embedder).__name__}) does not give; retrain with "
                              f"onair train --head genre --backend {embedder.name}")
        audioset = None
        if embedder.name == "yamnet" and g["audioset_weight"] > 0 and class_map.is_file():
            audioset = audioset_indices(str(class_map), {k: v for k, v in g["audioset_map"].items()
                                                          if k in head.classes})
        return GenreModel(head, audioset, g["audioset_weight"])
    return make
