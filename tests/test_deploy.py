"""The deployment files, read as a user's tools would read them (no Docker engine or cluster here):
Dockerfile, compose, Kubernetes manifests and their config parse, every `onair` command in them parses
with our CLI, ports agree with the config, and Prometheus and Grafana get our rules and dashboard."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline import config
from pipeline.cli import build_parser
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
ONAIR_SERVICES = ("ingest", "worker", "recognize", "overlay", "archive")


def cli(argv: list[str]):
    """The argparse namespace of an `onair` command line, or a test failure naming it."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`onair {' '.join(argv)}` does not parse with pipeline.cli")


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


# ---------------------------------------------------------------- Dockerfile

def dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "docker" / "Dockerfile").read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^(\w+)\s+(.*)$", text, re.M)
            if not m.group(0).startswith("#")]


def test_dockerfile_is_slim_non_root_and_runs_onair():
    ins = dockerfile()
    get = lambda k: [v for i, v in ins if i == k]  # noqa: E731
    assert "slim" in get("FROM")[0]
    user = get("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert yaml.safe_load(get("ENTRYPOINT")[-1]) == ["onair"]
    env = " ".join(get("ENV"))
    assert "ONAIR_MODEL_DIR=/models" in env and "TFHUB_CACHE_DIR=" in env
    exposed = {int(p) for v in get("EXPOSE") for p in v.split()}
    deploy_cfg = config.load(DEPLOY / "docker" / "pipeline.yaml")
    assert {deploy_cfg["overlay"]["port"], deploy_cfg["metrics"]["port"]} <= exposed
    # what it copies exists, and the Dockerfile's own ignore file lets it through
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    for v in get("COPY"):
        for src in v.split()[:-1]:
            assert (REPO / src).exists(), src
            assert f"!{src}" in ignore, f"{src} is copied but excluded from the build context"
    # the heads the deploy configs name are where the image puts configs/
    workdirs = get("WORKDIR")
    assert workdirs[0] == "/opt/onair" and (REPO / "configs" / "heads").is_dir()
    assert deploy_cfg["heads"]["dir"] == "/opt/onair/configs/heads"


def test_dockerfile_dependency_list_is_the_projects():
    """The Dockerfile installs the dependencies from pyproject.toml with a one-liner: run that one-liner."""
    run = next(v for i, v in dockerfile() if i == "RUN" and "tomllib" in v)
    code = re.search(r'python -c "(.*?)"\s+>', run).group(1)
    out = subprocess.run([shutil.which("python3") or "python3", "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [x for x in out if x] == deps


# ---------------------------------------------------------------- compose

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def interpolate(s: str) -> str:
    """Compose's ${VAR:-default}, as it reads with VAR unset."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", s)


def mounts(svc: dict) -> dict[str, str]:
    """target -> source of a service's volumes (bind sources relative to deploy/)."""
    out = {}
    for v in svc.get("volumes", []):
        src, dst = interpolate(v).split(":")[:2]
        out[dst] = src
    return out


def test_compose_runs_kafka_in_kraft_mode_and_every_onair_command_parses(compose):
    svcs = compose["services"]
    assert set(svcs) >= {"kafka", *ONAIR_SERVICES, "prometheus", "grafana"}
    assert not any("zookeeper" in name for name in svcs)
    kafka = svcs["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].endswith("@kafka:9093")
    assert svcs["worker"]["deploy"]["replicas"] == 2
    for name in ONAIR_SERVICES:
        svc = svcs[name]
        assert svc["image"].split(":")[0] == "onair"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        argv = svc["command"]
        args = cli(argv)
        assert args.command == name
        cfg_path = option(argv, "--config")
        src = mounts(svc)[cfg_path]
        cfg = config.load(DEPLOY / src)
        assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= cfg["kafka"]["max_message_bytes"]
        assert cfg["kafka"]["bootstrap_servers"] == "kafka:9092" and cfg["kafka"]["api_version"] is None
        assert cfg["metrics"]["address"] == "0.0.0.0" and cfg["metrics"]["port"]
        # a secret file the config names is one compose mounts into this service
        for key, path in [("recognition", cfg["recognition"][f"{cfg['recognition']['provider']}_api_token_file"]
                           if name == "recognize" else None),
                          ("overlay", cfg["overlay"]["token_file"] if name == "overlay" else None)]:
            if path:
                secret = Path(path).name
                assert path == f"/run/secrets/{secret}" and secret in svc["secrets"], (name, key, path)
                assert secret in compose["secrets"]
    ingest = svcs["ingest"]["command"]
    assert "--input" in ingest and "--audio-only" in ingest
    assert cli(svcs["overlay"]["command"]).kafka and cli(svcs["recognize"]["command"]).kafka


def test_compose_ports_models_and_overlay_access(compose):
    svcs = compose["services"]
    cfg = config.load(DEPLOY / "docker" / "pipeline.yaml")
    published = {p.split(":")[-1] for p in svcs["overlay"]["ports"]}
    assert str(cfg["overlay"]["port"]) in published
    assert cfg["overlay"]["host"] == "0.0.0.0" and cfg["overlay"]["token_file"], \
        "reachable through a published port, so the token is required"
    assert any(dst == "/models" for dst in mounts(svcs["worker"])), "models are mounted into the workers"
    assert mounts(svcs["recognize"]).get("/var/lib/onair") and cfg["recognition"]["ledger"].startswith("/var/lib/onair/")
    assert all(not p.startswith("9090") for p in svcs["prometheus"]["ports"]), "Prometheus stays on localhost"


def test_compose_prometheus_gets_our_rules_and_scrapes_every_onair_service(compose, tmp_path):
    prom = compose["services"]["prometheus"]
    m = mounts(prom)
    conf_path = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    assert m[conf_path] == "./prometheus/prometheus.yml"
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in prom_cfg["rule_files"]:
        assert m[rule_file] == "./prometheus/onair-rules.yml"
    cfg = config.load(DEPLOY / "docker" / "pipeline.yaml")
    (job,) = prom_cfg["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert set(sd["names"]) == set(ONAIR_SERVICES) and sd["port"] == cfg["metrics"]["port"]
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool missing: deploy/install.sh installs the Debian package prometheus")
        pytest.skip("promtool not installed (Debian package prometheus)")
    # the config as the container sees it: its rule file where the mount puts it
    shutil.copy(DEPLOY / "prometheus" / "onair-rules.yml", tmp_path / "onair-rules.yml")
    prom_cfg["rule_files"] = [str(tmp_path / "onair-rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom_cfg))
    r = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_grafana_gets_our_provisioning_and_dashboard(compose):
    graf = compose["services"]["grafana"]
    m = mounts(graf)
    assert m["/etc/grafana/provisioning"] == "./grafana/provisioning"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/onair.yaml").read_text())["providers"]
    dash_dir = providers[0]["options"]["path"]
    assert m[dash_dir] == "./grafana/dashboards" and (DEPLOY / "grafana/dashboards/onair.json").is_file()
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    assert graf["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in graf["secrets"]


# ---------------------------------------------------------------- Kubernetes

@pytest.fixture(scope="module")
def k8s() -> dict:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = []
    for f in kust["resources"] + ["podmonitor.yaml"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / f).read_text()) if d]
    listed = set(kust["resources"]) | {"kustomization.yaml", "podmonitor.yaml"}
    assert {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} == listed, "every manifest is in kustomization.yaml"
    by_kind: dict[str, dict] = {}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return {"kustomization": kust, **by_kind}


def test_k8s_manifests_follow_the_kubernetes_schemas(k8s):
    """Strict: an unknown or misspelt field is an error, as `kubectl apply --validate=strict` makes it."""
    import kubernetes_validate
    checked = 0
    for kind, docs in k8s.items():
        if kind in ("kustomization", "PodMonitor"):     # CRD and tool config: no schema in Kubernetes itself
            continue
        for name, doc in docs.items():
            try:
                kubernetes_validate.validate(doc, "1.30", strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{kind}/{name}: {'.'.join(map(str, e.path))}: {e.message}")
            checked += 1
    assert checked >= 10


def test_k8s_configmap_holds_a_valid_pipeline_yaml(k8s):
    cm = k8s["ConfigMap"]["onair-config"]
    cfg = config.validate(yaml.safe_load(cm["data"]["pipeline.yaml"]), "configmap.yaml")
    assert cfg["heads"]["dir"] == "/opt/onair/configs/heads"
    assert cfg["metrics"]["address"] == "0.0.0.0" and cfg["overlay"]["host"] == "0.0.0.0"
    assert cfg["kafka"]["api_version"] is None
    secret = k8s["Secret"]["onair-secrets"]["stringData"]
    for key in ("audd_api_token_file", "acrcloud_access_key_file", "acrcloud_access_secret_file"):
        assert cfg["recognition"][key] == f"/run/secrets/onair/{Path(cfg['recognition'][key]).name}"
        assert Path(cfg["recognition"][key]).name in secret
    assert cfg["overlay"]["token_file"] == "/run/secrets/onair/overlay_token" and "overlay_token" in secret


def pod(dep: dict) -> tuple[dict, dict]:
    """The pod spec and its main container (the first; only the recognizer has a second: the archive)."""
    spec = dep["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert len(spec["containers"]) == 1 or [c["name"] for c in spec["containers"]] == ["recognize", "archive"]
    return spec, container


def test_k8s_deployments_run_onair_as_non_root_with_consistent_ports(k8s):
    cm = k8s["ConfigMap"]["onair-config"]
    cfg = config.validate(yaml.safe_load(cm["data"]["pipeline.yaml"]))
    image = k8s["kustomization"]["images"][0]["name"]
    deps = k8s["Deployment"]
    # the archive runs beside the recognizer, on the volume of its ledger (a ReadWriteOnce claim)
    assert set(deps) == {f"onair-{s}" for s in ONAIR_SERVICES if s != "archive"}
    rec_spec, _ = pod(deps["onair-recognize"])
    arch = next(c for c in rec_spec["containers"] if c["name"] == "archive")
    arch_args = cli(arch["args"])
    assert arch_args.command == "archive" and arch_args.kafka
    state = next(m["mountPath"] for m in arch["volumeMounts"] if m["name"] == "state")
    assert arch_args.out == state and arch_args.metrics_port != cfg["metrics"]["port"]
    assert cfg["recognition"]["ledger"].startswith(state + "/")
    assert deps["onair-worker"]["spec"]["replicas"] == 2
    assert deps["onair-recognize"]["spec"]["strategy"]["type"] == "Recreate"
    for name, dep in deps.items():
        spec, c = pod(dep)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert c["image"].split(":")[0] == image
        args = cli(c["args"])
        assert f"onair-{args.command}" == name
        cfg_path = option(c["args"], "--config")
        vols = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in c["volumeMounts"] if cfg_path.startswith(m["mountPath"] + "/"))
        assert vols[mount["name"]]["configMap"]["name"] == "onair-config" and cfg_path.endswith("/pipeline.yaml")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == cfg["metrics"]["port"]
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == cfg["metrics"]["port"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        if c["securityContext"].get("readOnlyRootFilesystem"):
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
        needs_secret = name in ("onair-recognize", "onair-overlay")
        secret_mounts = [m for m in c["volumeMounts"] if "secret" in vols[m["name"]]]
        assert bool(secret_mounts) == needs_secret, f"{name}: secrets only where they are used"
        for m in secret_mounts:
            assert m["mountPath"] == "/run/secrets/onair"
            assert vols[m["name"]]["secret"]["secretName"] in k8s["Secret"]
            assert spec["securityContext"].get("fsGroup") == spec["securityContext"]["runAsUser"]
    _, ov = pod(deps["onair-overlay"])
    ov_ports = {p["name"]: p["containerPort"] for p in ov["ports"]}
    assert ov_ports["http"] == cfg["overlay"]["port"]
    assert ov["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert cli(ov["args"]).kafka
    svc = k8s["Service"]["onair-overlay"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["selector"].items() <= deps["onair-overlay"]["spec"]["template"]["metadata"]["labels"].items()
    _, w = pod(deps["onair-worker"])
    assert any(m["mountPath"] == "/models" for m in w["volumeMounts"])


def test_k8s_scraping_selects_every_onair_pod(k8s):
    pm = k8s["PodMonitor"]["onair"]
    sel = pm["spec"]["selector"]["matchLabels"]
    headless = k8s["Service"]["onair-metrics"]["spec"]
    assert headless["clusterIP"] == "None"
    for dep in k8s["Deployment"].values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= labels.items() and headless["selector"].items() <= labels.items()
        _, c = pod(dep)
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in c["ports"]}


def systemd_units() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((DEPLOY / "systemd").glob("onair-*.*"))}


def test_systemd_units_verify_and_their_commands_parse(tmp_path):
    """The units of docs/operations.md: systemd accepts them, and every onair command line in
    them (with the example environment file's channels) is one the CLI takes."""
    import shlex
    units = systemd_units()
    assert {"onair-run.service", "onair-overlay.service", "onair-report.service", "onair-report.timer"} <= set(units)
    env = dict(re.findall(r'^(\w+)="(.*)"$', (DEPLOY / "systemd" / "onair.env.example").read_text(), re.M))
    onair = str(REPO / ".venv" / "bin" / "onair")
    for name, text in units.items():
        for exec_start in re.finditer(r"^ExecStart=(.*?)(?<!\\)$", text, re.M | re.S):
            line = exec_start.group(1).replace("\\\n", " ")
            if line.startswith("/bin/sh -c"):
                line = shlex.split(line)[2].replace('"$(date -u -d yesterday +%%F)"', "2026-12-05")
            argv = shlex.split(line.replace("$ONAIR_INPUTS", env["ONAIR_INPUTS"])
                               .replace("$ONAIR_REPORT_ARGS", env["ONAIR_REPORT_ARGS"]))
            argv = argv[1:] if argv[0] != "exec" else argv[2:]
            args = cli(argv)
            assert args.command in ("run", "overlay", "report", "prune", "fingerprints"), name
        (tmp_path / name).write_text(text.replace("/opt/onair/.venv/bin/onair", onair))
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the units' syntax is not checked")
    res = subprocess.run(["systemd-analyze", "verify", "--man=false", *sorted(str(p) for p in tmp_path.iterdir())],
                         capture_output=True, text=True, timeout=60)
    problems = [x for x in (res.stdout + res.stderr).splitlines() if x.strip()]
    assert res.returncode == 0 and not problems, problems
