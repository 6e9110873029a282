#!/usr/bin/env bash
# Sets up everything (Debian packages including etcd, a virtualenv, meshd with test extras)
# and runs the whole test suite, including the benchmark gates in quick mode.
# Extra arguments go to pytest, e.g. scripts/test.sh -k registry
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
VENV="${MESHD_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest "$@"
