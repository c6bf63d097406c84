"""Prometheus rules checked and unit-tested with promtool, a real Prometheus scraping onair and
firing a spend alert, the Grafana dashboard against the metrics that exist, and counters against records."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from operators.audio.clip import audio_field
from pipeline.kafka.broker import free_port
from pipeline.metrics import Metrics
from tests.conftest import REPO, run_records
from tests.waiting import wait_until
from tests.provider_servers import ProviderServer

RULES = REPO / "deploy" / "prometheus" / "onair-rules.yml"


def tool(name):
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: .ci/run installs the Debian package prometheus")
        pytest.skip(f"{name} not installed (Debian package prometheus)")
    return path


def test_rules_pass_promtool_check_and_unit_tests():
    promtool = tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    tests = sorted((REPO / "deploy" / "prometheus" / "tests").glob("onair-rules*.test.yml"))
    r = subprocess.run([promtool, "test", "rules", *[t.name for t in tests]], capture_output=True, text=True,
                       cwd=REPO / "deploy" / "prometheus" / "tests")
    assert r.returncode == 0 and r.stdout.count("SUCCESS") == len(tests) == 2, r.stdout + r.stderr
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    tested = {a for t in tests for a in re.findall(r"alertname: (\w+)", t.read_text())}
    assert set(alerts) <= tested, f"alerts without a promtool test: {set(alerts) - tested}"


def test_dashboard_queries_only_metrics_that_exist():
    dash = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "onair.json").read_text())
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    known = {m.name + sfx for m in Metrics().registry.collect() for sfx in suffixes[m.type]}
    known |= set(re.findall(r"record: (\S+)", RULES.read_text()))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for e in exprs:
        for name in re.findall(r"\b(onair[_:][A-Za-z0-9_:]+)", e):
            assert name in known, f"dashboard queries {name}, which onair does not export"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for word in ("music", "spend", "outcome", "lag", "error"):
        assert word in titles


def test_counters_agree_with_the_records(programme, programme_run):
    assert programme_run["returncode"] == 0, programme_run["stderr"]
    out = programme_run["out"]
    text = programme_run["metrics"].read_text()

    def total(name):
        return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))
    lines = lambda f: len(run_records(out / f))  # noqa: E731
    assert total("onair_segments_total") == lines("segments.jsonl")
    assert total("onair_recognition_requests_emitted_total") == lines("requests.jsonl") > 0
    assert abs(total("onair_audio_decoded_seconds_total") - len(programme["audio"]) / 48000) < 0.1
    assert total("onair_frames_embedded_total") > 70


def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_real_prometheus_fires_the_spend_alert(tmp_path, monkeypatch):
    prometheus = tool("prometheus")
    server = ProviderServer("audd", "tok")
    monkeypatch.setenv("AUDD_API_TOKEN", "tok")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    samples = (np.sin(np.arange(16000 * 5) * 0.05) * 8000).astype(np.int16)
    (run_dir / "requests.jsonl").write_text("")
    mport, pport = free_port(), free_port()
    rec = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "recognize", "--dir", str(run_dir),
                            "--metrics-port", str(mport), "--set", "recognition.provider=audd",
                            "--set", f"recognition.audd_url={server.url}",
                            "--set", "recognition.monthly_budget=1",
                            # every clip here is one tone: the fingerprint index would answer all but
                            # the first for free, and this test needs spend
                            "--set", "identity.enabled=false"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "recognize.log", "w"))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        f"scrape_configs: [{{job_name: onair, static_configs: [{{targets: ['127.0.0.1:{mport}']}}]}}]\n")
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{pport}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    api = f"http://127.0.0.1:{pport}/api/v1"
    def scraping() -> bool:
        try:
            return any(t["health"] == "up" for t in get(f"{api}/targets")["data"]["activeTargets"])
        except (OSError, KeyError, ValueError):
            return False

    try:
        # requests arrive while Prometheus scrapes, as a runaway channel's would
        wait_until(lambda: scraping() or prom.poll() is not None or rec.poll() is not None, 120,
                   "Prometheus to scrape `onair recognize`")
        assert prom.poll() is None and rec.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:] + \
            (tmp_path / "recognize.log").read_text()[-2000:]
        audio = audio_field(samples)
        for i in range(12):
            with open(run_dir / "requests.jsonl", "a") as f:
                f.write(json.dumps({"request_id": f"c:{i}:0", "channel": f"ch{i % 3}", "clip_start": i * 40.0,
                                    "clip_end": i * 40.0 + 5, "emitted_at": i * 40.0 + 20, "audio": audio}) + "\n")
            time.sleep(0.5)
        state, deadline = None, time.monotonic() + 90
        while time.monotonic() < deadline and state not in ("pending", "firing"):
            time.sleep(1)
            try:
                alerts = get(f"{api}/alerts")["data"]["alerts"]
            except OSError:
                continue
            state = next((a["state"] for a in alerts if a["labels"]["alertname"] == "OnairSpendBurnRateFast"), None)
        assert state in ("pending", "firing"), (tmp_path / "prometheus.log").read_text()[-2000:]
        spend = get(f"{api}/query?query=sum(onair_recognition_spend_usd_total)")["data"]["result"]
        assert float(spend[0]["value"][1]) == pytest.approx(12 * 0.005)
        targets = get(f"{api}/targets")["data"]["activeTargets"]
        assert targets[0]["health"] == "up"
    finally:
        prom.terminate()
        rec.terminate()
        prom.wait(timeout=30)
        rec.wait(timeout=30)
        server.close()
