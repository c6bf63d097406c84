"""The local fingerprint index: store, lookups and learning, a channel's checks, administration."""
