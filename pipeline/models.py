"""Where models are found (DESIGN.md §3): $ONAIR_MODEL_DIR first, laid out like
../shared/models, then the configured TF-Hub handle. A model found in neither
place fails with a message naming both."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from operators.models.embed import Embedder

log = logging.getLogger("onair.models")


class ModelNotFound(RuntimeError):
    pass


def model_cache() -> Path:
    """Where converted models are kept ($ONAIR_CACHE, as for the broker; default ~/.cache/onair)."""
    return Path(os.environ.get("ONAIR_CACHE", Path.home() / ".cache" / "onair")) / "models"


def model_dir() -> Path | None:
    d = os.environ.get("ONAIR_MODEL_DIR")
    return Path(d) if d else None


def load_embedder(cfg: dict) -> Embedder:
    emb = cfg["embedding"]
    backend = emb["backend"]
    _configure_tf_threads(emb["threads"])
    d = model_dir()
    if backend == "yamnet":
        if emb["precision"] != "fp32":
            log.warning("embedding.precision %s applies to VGGish only; YAMNet runs its float model",
                        emb["precision"])
        local = d / "yamnet" / "yamnet.tflite" if d else None
        if local and local.is_file():
            from operators.models.embed import YamnetTFLite
            log.info("embedding: yamnet TFLite from %s", local)
            return YamnetTFLite(local, emb["threads"])
        return _from_hub(backend, emb["yamnet_handle"], local, emb)
    local = d / "vggish" if d else None
    if local and (local / "saved_model.pb").is_file():
        from operators.models.embed import VGGishHub
        log.info("embedding: vggish SavedModel from %s (%s)", local, emb["precision"])
        return VGGishHub(str(local), emb["precision"], emb["threads"], model_cache())
    return _from_hub(backend, emb["vggish_handle"], local, emb)


def _from_hub(backend: str, handle: str, local: Path | None, emb: dict) -> Embedder:
    from operators.models.embed import VGGishHub, YamnetHub
    where = f"$ONAIR_MODEL_DIR ({local})" if local else "$ONAIR_MODEL_DIR (not set)"
    try:
        log.info("embedding: %s from TF-Hub handle %s", backend, handle)
        if backend == "yamnet":
            return YamnetHub(handle)
        return VGGishHub(handle, emb["precision"], emb["threads"], model_cache())
    except Exception as e:  # network, missing dir, bad SavedModel: all mean "not found here"
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelNotFound(f"{backend} model not found: not in {where} and TF-Hub handle {handle!r} "
                            f"failed to load ({first})") from None


def _configure_tf_threads(threads: int) -> None:
    """TensorFlow's pools, sized before its first op (later calls cannot resize them).
    0 = every core this process may use: TF's own default counts the host's cores,
    which oversubscribes a container limited by cpuset.

    The model's pools own the cores; numpy's BLAS is kept to one thread. The stream
    path's matrix products are small (mel projection, heads, debounce prototypes) and
    OpenBLAS threads spin for each one, so on a busy machine its threads cost more
    than they save."""
    from operators.models.vggish import available_cores
    threads = threads or available_cores()
    limit_blas_threads(1)
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    except RuntimeError:  # already initialised by an earlier load in this process
        pass


def limit_blas_threads(n: int) -> int:
    """Set the thread count of every OpenBLAS loaded in this process (numpy's and
    scipy's wheels each bring one); returns how many were set. Without
    threadpoolctl: the libraries are found in /proc/self/maps (Linux)."""
    import ctypes

    import numpy  # noqa: F401  (loads numpy's OpenBLAS)
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return 0
    done = 0
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                       "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done += 1
                break
    return done
