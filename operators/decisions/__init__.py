"""Deciding over time: the fixed-lag HMM, segments, and the debouncer that turns music into one
recognition request per song (with the recording-identity test)."""
