"""Embedding backends (YAMNet, VGGish), the probe that ties heads to embeddings, and the
small classifier heads."""
