"""Recognition bookkeeping without I/O: spend caps and the now-playing display state."""
