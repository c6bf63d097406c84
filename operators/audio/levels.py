"""Levels of audio in 0.1 s blocks: what the debouncer's dips and breaks are measured in."""
from __future__ import annotations

import numpy as np

from operators.audio.constants import LEVEL_BLOCK


def block_levels_db(samples: np.ndarray) -> np.ndarray:
    """dB of the mean power of each whole LEVEL_BLOCK along the last axis ([..., n] -> [..., n //
    LEVEL_BLOCK]); a tail shorter than a block is left out."""
    x = np.asarray(samples)
    n = x.shape[-1] // LEVEL_BLOCK * LEVEL_BLOCK
    blocks = x[..., :n].reshape(*x.shape[:-1], -1, LEVEL_BLOCK)
    return 10 * np.log10(np.mean(blocks * blocks, axis=-1) + 1e-10)
