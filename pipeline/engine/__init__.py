"""The one engine: channel states, frames batched across channels into the embedder,
head + HMM + debounce + genre, records handed to outputs. Direct mode, the Kafka worker and the
throughput benchmark all drive it."""
