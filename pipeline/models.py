"""Where models are found (DESIGN.md §3): $ONAIR_MODEL_DIR first, laid out like
../shared/models, then the configured TF-Hub handle. A model found in neither
place fails with a message naming both."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from operators.embed import Embedder

log = logging.getLogger("onair.models")


class ModelNotFound(RuntimeError):
    pass


def model_dir() -> Path | None:
    d = os.environ.get("ONAIR_MODEL_DIR")
    return Path(d) if d else None


def load_embedder(cfg: dict) -> Embedder:
    emb = cfg["embedding"]
    backend = emb["backend"]
    _configure_tf_threads(emb["threads"])
    d = model_dir()
    if backend == "yamnet":
        local = d / "yamnet" / "yamnet.tflite" if d else None
        if local and local.is_file():
            from operators.embed import YamnetTFLite
            log.info("embedding: yamnet TFLite from %s", local)
            return YamnetTFLite(local, emb["threads"])
        return _from_hub(backend, emb["yamnet_handle"], local)
    local = d / "vggish" if d else None
    if local and (local / "saved_model.pb").is_file():
        from operators.embed import VGGishHub
        log.info("embedding: vggish SavedModel from %s", local)
        return VGGishHub(str(local))
    return _from_hub(backend, emb["vggish_handle"], local)


def _from_hub(backend: str, handle: str, local: Path | None) -> Embedder:
    from operators.embed import VGGishHub, YamnetHub
    where = f"$ONAIR_MODEL_DIR ({local})" if local else "$ONAIR_MODEL_DIR (not set)"
    try:
        log.info("embedding: %s from TF-Hub handle %s", backend, handle)
        return (YamnetHub if backend == "yamnet" else VGGishHub)(handle)
    except Exception as e:  # network, missing dir, bad SavedModel: all mean "not found here"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelNotFound(f"{backend} model not found: not in {where} and TF-Hub handle {handle!r} "
                            f"failed to load ({first})") from None


def _configure_tf_threads(threads: int) -> None:
    if not threads:
        return
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    except RuntimeError:  # already initialised by an earlier load in this process
        pass
