"""Start-up chatter that TensorFlow's C++ code writes straight to file descriptor 2.

TensorFlow 2.16+ logs through absl before absl is initialised ("WARNING: All log messages
before absl::InitializeLog() ...", "cudart_stub.cc ... Could not find cuda drivers"), which
TF_CPP_MIN_LOG_LEVEL does not reach, and TFLite prints "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU." from C++ with no switch in its Python API. None of it goes through Python's
sys.stderr, so the only way to hide it is to point fd 2 elsewhere while that code runs.

`filtered()` does that for a short block (importing TensorFlow, creating an interpreter) and
afterwards writes back every line that is not known noise, so a real error printed there is
still seen, only later. It is for the `onair` command, not for library code: a process that
embeds onair keeps its own stderr.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^I\d{4} .*\] ",                                   # absl INFO lines (cudart_stub, cpu_feature_guard, ...)
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
    r"^INFO: Initialized TensorFlow Lite runtime\.$",
))


def is_noise(line: str) -> bool:
    return any(p.search(line) for p in NOISE)


@contextmanager
def filtered(stream=None):
    """Inside the block, fd 2 goes to a temporary file; after it, lines that are not noise go
    to `stream` (default: sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not is_noise(ln.rstrip("\n"))]
            if kept:
                out = stream or sys.stderr
                out.write("".join(kept))
                out.flush()


def import_tensorflow() -> None:
    """Import TensorFlow (and so its shared libraries) with its start-up chatter filtered.
    Later imports are free and print nothing."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with filtered():
        import tensorflow  # noqa: F401
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TensorFlow; without it there is nothing to quiet
        pass
