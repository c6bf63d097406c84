"""The `onair` command line itself: version, help for everything, and a quiet start."""
import argparse
import io
import os
import subprocess
import sys

import pytest

from pipeline import cli, native_stderr
from tests.conftest import REPO, tone, write_ts


def onair(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_version_is_the_package_version_or_dev():
    r = onair("--version")
    assert r.returncode == 0
    from importlib.metadata import PackageNotFoundError, version
    try:
        expected = version("onair")
    except PackageNotFoundError:
        expected = "dev"
    assert r.stdout.strip() == f"onair {expected}"


def _walk(parser, path):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + [name], "the subcommand", summaries.get(name)
                yield from _walk(sub, path + [name])
        elif not isinstance(action, argparse._HelpAction):
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_subcommand_and_option_has_help():
    missing = [f"{' '.join(path)}: {what}" for path, what, text in _walk(cli.build_parser(), ["onair"]) if not text]
    assert not missing, missing


def test_every_help_page_renders():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in [None, *commands]:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"] if name else ["--help"])
        assert e.value.code == 0


def test_native_stderr_drops_known_noise_and_keeps_the_rest():
    kept = io.StringIO()
    with native_stderr.filtered(kept):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1796536554.968027    9010 cudart_stub.cc:31] Could not find cuda drivers on "
                    b"your machine, GPU will not be used.\n"
                    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
                    b"E0000 something real went wrong\n")
    assert kept.getvalue() == "E0000 something real went wrong\n"


def test_run_logs_one_line_per_channel_opened_and_no_tensorflow_chatter(tmp_path):
    ts = write_ts(tmp_path / "a.ts", tone(8.0))
    mp2 = write_ts(tmp_path / "b.ts", tone(8.0), codec="mp2")
    r = onair("run", "--input", f"a={ts}", "--input", f"b={mp2}", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    for noise in ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "XNNPACK", "experimental_preserve",
                  "UserWarning"):
        assert noise not in r.stderr, r.stderr
    opened = [ln for ln in r.stderr.splitlines() if " opened: " in ln]
    assert len(opened) == 2, r.stderr
    assert any(f"channel a: {ts} opened: aac 48000 Hz stereo, track first" in ln for ln in opened), opened
    assert any(f"channel b: {mp2} opened: mp2 48000 Hz stereo, track first" in ln for ln in opened), opened
