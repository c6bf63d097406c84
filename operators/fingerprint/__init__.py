"""Audio identity by landmark fingerprints: the same recording the second time it airs."""
