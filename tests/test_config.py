import subprocess
import sys

import pytest

from pipeline import config


def test_default_config_loads_and_heads_dir_is_resolved():
    cfg = config.load()
    assert cfg["embedding"]["backend"] == "yamnet"
    assert cfg["heads"]["dir"].endswith("configs/heads")


@pytest.mark.parametrize("yaml_text, key", [
    ("embedding:\n  batchsize: 3\n", "embedding.batchsize"),
    ("embedding:\n  batch_size: 0\n", "embedding.batch_size"),
    ("embedding:\n  backend: openl3\n", "embedding.backend"),
    ("hmm:\n  lag_frames: abc\n", "hmm.lag_frames"),
    ("source:\n  audio_track: second\n", "source.audio_track"),
    ("sources: {}\n", "sources"),
    ("debounce:\n  restart_on_early_dip: maybe\n", "debounce.restart_on_early_dip"),
    # the recording-identity test reads both sides of a boundary from the clip history
    ("debounce:\n  history_s: 30\n", "debounce.history_s"),
    ("debounce:\n  identity_before_s: 40\n", "debounce.history_s"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, key):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(config.ConfigError, match=f"'{key}'"):
        config.load(p)


def test_set_overrides_are_typed_and_validated():
    cfg = config.load(None, ["embedding.batch_size=8", "source.audio_track=pid:0x101"])
    assert cfg["embedding"]["batch_size"] == 8 and cfg["source"]["audio_track"] == "pid:0x101"
    with pytest.raises(config.ConfigError, match="embedding.batch_size"):
        config.load(None, ["embedding.batch_size=-1"])


def test_cli_stops_with_one_line_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("hmm:\n  lag_frames: 1000\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--input", "a=x.ts", "--out", str(tmp_path),
                        "--config", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "hmm.lag_frames" in lines[0], r.stderr
