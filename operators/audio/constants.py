"""The audio numbers every stage agrees on (DESIGN.md §2).

Both embedding models were trained on 16 kHz mono and read a 96 x 64 log-mel patch of
25 ms windows at a 10 ms hop: one frame needs 15 600 samples (0.975 s) and frames start
15 360 samples (0.96 s) apart, so consecutive frames overlap by 15 ms.
"""
SAMPLE_RATE = 16000                       # Hz, mono float32 in [-1, 1]
FRAME_SAMPLES = 15600                     # one model frame
HOP_SAMPLES = 15360                       # between frame starts
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE     # 0.975 s
HOP_S = HOP_SAMPLES / SAMPLE_RATE         # 0.96 s
LEVEL_BLOCK = SAMPLE_RATE // 10           # 0.1 s: the block of a frame's level statistics
