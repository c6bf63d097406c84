"""Audio in: decoding to 16 kHz mono with stream time, framing into 0.96 s model frames,
log-mel features, recognition clips."""
