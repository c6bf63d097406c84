"""The one engine: channel states, frames batched across channels into the embedder,
head + HMM + debounce + genre, records handed to outputs. Direct mode, the Kafka worker
and the throughput benchmark all drive it (pipeline.engine.engine)."""
from pipeline.engine.channel import ChannelDetector, segment_id
from pipeline.engine.engine import Engine, EngineError

__all__ = ["ChannelDetector", "Engine", "EngineError", "segment_id"]
