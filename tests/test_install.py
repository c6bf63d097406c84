"""deploy/install.sh: its options (the installing itself is what CI's .ci/run does first)."""
import subprocess

from tests.conftest import REPO

SCRIPT = REPO / "deploy" / "install.sh"


def sh(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_help_says_what_each_mode_installs():
    r = sh("--help")
    assert r.returncode == 0 and "--test" in r.stdout and "pip install -e ." in r.stdout
    assert "set -e" not in r.stdout.splitlines()[-1]


def test_an_unknown_option_fails_before_installing_anything():
    r = sh("--tests")
    assert r.returncode == 2 and "unknown option --tests" in r.stderr


def test_ci_installs_the_test_tools_and_runs_the_readme_command():
    readme = (REPO / "README.md").read_text()
    assert "bash deploy/install.sh --test && .venv/bin/python -m pytest" in readme
    # CI runs the same two steps, pytest under the sampler that prints its wall time and peak RSS
    ci = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln.startswith("bash ")]
    assert ci == ["bash deploy/install.sh --test && .venv/bin/python .ci/peak_rss.py -- .venv/bin/python -m pytest"]
