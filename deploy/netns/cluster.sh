#!/usr/bin/env bash
# Thin wrapper over cluster.py (same directory): an N-host meshd cluster in network namespaces.
#   deploy/netns/cluster.sh up 3 | status | env | down
#   deploy/netns/cluster.sh kill-etcd h2 | stop-meshd h2 | start-meshd h2 | cut h2 | restore h2
#   deploy/netns/cluster.sh demo        # 3 hosts, sample services, cross-host traffic; stays up
#   deploy/netns/cluster.sh bg h2 NAME -- CMD...   # a process in h2's namespace, stopped by down
# Runs cluster.py with a Python that can import meshd: $MESHD_PYTHON, else the active
# virtualenv, else the checkout's .venv, else python3. Needs root (network namespaces).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${MESHD_PYTHON:-}"
if [ -z "$py" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then py="$VIRTUAL_ENV/bin/python"
  elif [ -x "$here/../../.venv/bin/python" ]; then py="$here/../../.venv/bin/python"
  else py="python3"
  fi
fi
exec "$py" "$here/cluster.py" "$@"
