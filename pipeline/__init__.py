"""onair runtime: configuration, CLI, sources, batching, sinks and metrics."""
