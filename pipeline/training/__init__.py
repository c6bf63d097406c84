"""`onair train` and its evaluation: fitting heads and the HMM on labelled data."""
