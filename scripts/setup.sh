#!/usr/bin/env bash
# Installs everything meshd needs on a Debian 12 host and builds meshd into a virtualenv:
#   - Debian packages: etcd-server (the embedded default runs Debian's etcd), libnghttp2-dev
#     (the data plane's HTTP/2 codec, linked by the Cython extension), libre2-dev (the
#     routes' regex engine, as Envoy's), a C/C++ compiler and Python headers for the Cython
#     extensions; with --test also what the tests drive:
#     nghttp2-client/-server (h2load, nghttp, nghttpd), haproxy (side-by-side benchmarks) and
#     iproute2 (network-namespace cluster tests), systemd (systemd-analyze verify of the units),
#     graphviz (meshctl graph --png), iptables (the sidecar tests' interception rules, made by
#     meshd proxy-init in network namespaces), curl (the ECS health check they run) and prometheus (the observability tests scrape meshd with
#     it; its promtool checks the dashboard's queries and the scrape config);
#   - a virtualenv at $MESHD_VENV (default ./.venv) with meshd installed from this checkout.
# Safe to run again: each step is skipped when already done. Usage: scripts/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MESHD_VENV:-.venv}"
EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test]"

need_apt=()
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || need_apt+=(etcd-server)
dpkg -s libnghttp2-dev >/dev/null 2>&1 || need_apt+=(libnghttp2-dev)
dpkg -s libre2-dev >/dev/null 2>&1 || need_apt+=(libre2-dev)
{ command -v cc && command -v c++; } >/dev/null 2>&1 || need_apt+=(build-essential)
python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)' \
  || need_apt+=(python3-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ -n "$EXTRAS" ]; then
  command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
  command -v nghttpd >/dev/null 2>&1 || need_apt+=(nghttp2-server)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
  command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
  { command -v iptables && command -v ip6tables; } >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || need_apt+=(iptables)
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)  # the sidecar tests run the task definition's health check
  { command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_apt+=(prometheus)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "==> installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
echo "==> installing meshd$EXTRAS into $VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Editable, so the test suite and the installed commands run the same files; the Cython
# extension is compiled in place by the build.
"$VENV/bin/python" -m pip install -q -e ".$EXTRAS"
