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
    ("recognition:\n  global_day_money: .nan\n", "recognition.global_day_money"),   # a NaN cap never trips
    ("recognition:\n  channel_day_money: .inf\n", "recognition.channel_day_money"),
])
def test_bad_config_names_the_key(tmp_path, yaml_text, key):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(config.ConfigError, match=f"'{key}'"):
        config.load(p)


@pytest.mark.parametrize("key", ["recognition.global_day_money", "recognition.channel_day_money"])
def test_numbers_given_with_set_must_be_finite(key):
    with pytest.raises(config.ConfigError, match=f"'{key}'"):
        config.load(None, [f"{key}=.nan"])


def test_unreadable_files_and_duplicate_keys_are_clear_errors(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("overlay:\n  host: caf\xe9\n".encode("latin-1"))
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(latin1)
    with pytest.raises(config.ConfigError, match="is a directory"):
        config.load(tmp_path)
    twice = tmp_path / "twice.yaml"
    twice.write_text("recognition:\n  global_day_money: 5\n  global_day_money: 500\n")
    with pytest.raises(config.ConfigError, match="'global_day_money' given twice.*line 3"):
        config.load(twice)


def test_heads_dir_has_documented_bases(tmp_path, monkeypatch):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "mine.yaml").write_text("embedding:\n  batch_size: 8\n")
    shipped = config.load()["heads"]["dir"]
    assert config.load(elsewhere / "mine.yaml")["heads"]["dir"] == shipped        # not given: onair's own
    (elsewhere / "local.yaml").write_text("heads:\n  dir: my-heads\n")
    assert config.load(elsewhere / "local.yaml")["heads"]["dir"] == str((elsewhere / "my-heads").resolve())
    monkeypatch.chdir(tmp_path)
    assert config.load(elsewhere / "local.yaml", ["heads.dir=h2"])["heads"]["dir"] == str((tmp_path / "h2").resolve())


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


def test_every_key_is_documented_and_its_spec_renders():
    from pipeline import configdoc
    for sec, keys in config.SCHEMA.items():
        assert config.SECTIONS[sec], sec
        for key, spec in keys.items():
            assert spec.doc and "\n" not in spec.doc, f"{sec}.{key} has no one-line doc"
            assert configdoc.valid(spec)


def test_documenting_a_key_does_not_change_its_validation():
    # doc and unit are keyword-only and left out of equality: the spec validates as before
    assert config.Int(3, 1, 4, doc="a") == config.Int(3, 1, 4, doc="b") == config.Int(3, 1, 4)
    with pytest.raises(config.ConfigError, match="'x.y'"):
        config.Int(3, 1, 4, doc="a").check("x.y", 5)


def test_docs_configuration_md_is_current():
    from pipeline import configdoc
    committed = (config.REPO / "docs" / "configuration.md").read_text()
    assert committed == configdoc.render(), \
        "docs/configuration.md is not current: run `onair config --doc > docs/configuration.md`"


def test_configuration_md_shows_defaults_ranges_and_environment():
    from pipeline import configdoc
    text = configdoc.render()
    assert "| `batch_size` | `64` | frames | integer, 1 to 4096 |" in text
    assert "| `lag_frames` | `5` (`configs/pipeline.yaml`: `4`) | frames |" in text
    assert "one of `yamnet`, `vggish`" in text
    for var in ("ONAIR_MODEL_DIR", "ONAIR_CACHE", "AUDD_API_TOKEN", "ACRCLOUD_ACCESS_KEY", "ONAIR_OVERLAY_TOKEN",
                "ONAIR_KAFKA_PASSWORD"):
        assert f"| `{var}` |" in text


def test_onair_config_prints_the_effective_config_and_the_doc():
    import yaml
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "--set", "hmm.lag_frames=3"],
                       capture_output=True, text=True, timeout=60, cwd=config.REPO)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["hmm"]["lag_frames"] == 3
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "--doc"],
                       capture_output=True, text=True, timeout=60, cwd=config.REPO)
    assert r.returncode == 0 and r.stdout == (config.REPO / "docs" / "configuration.md").read_text()


def test_run_refuses_an_out_that_is_a_file_before_loading_the_model(tmp_path):
    f = tmp_path / "out.txt"
    f.write_text("mine\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--input", "a=x.ts", "--out", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f.read_text() == "mine\n"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "is a file" in lines[0] and "Traceback" not in r.stderr, r.stderr
