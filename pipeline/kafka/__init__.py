"""Kafka mode: clients, the media envelope, remuxing into chunks, `onair ingest`, `onair worker`
(which drives the engine), channel-state checkpoints and the local development broker."""
