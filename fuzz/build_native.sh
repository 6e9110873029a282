#!/usr/bin/env bash
# Builds a coverage-instrumented copy of the HTTP/2 engine (meshd.dataplane._h2) into
# build/fuzz-native/, for fuzz_h2.py and fuzz_tls.py to load with MESHD_FUZZ_NATIVE=1.
#   - clang's -fsanitize-coverage adds the inline 8-bit counters and PC tables that
#     libFuzzer reads; fuzz/sancov_shim.c holds them until atheris loads its libFuzzer
#     (only inside atheris.Fuzz()), then hands them over.
#   - The package's own build (setup.py, gcc) is untouched: this copy lives outside the
#     source tree, so the tests and meshd keep importing the uninstrumented module.
# Needs clang (Debian: apt-get install clang) and Cython in the virtualenv.
# Usage: fuzz/build_native.sh [python]   (default: ./.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
OUT=build/fuzz-native
mkdir -p "$OUT"
command -v clang >/dev/null || { echo "clang not found (apt-get install clang)" >&2; exit 1; }
"$PY" -c 'import Cython' 2>/dev/null || "$PY" -m pip install -q "Cython>=3.0,<4"
# The same directives as setup.py, so the instrumented module behaves as the shipped one.
"$PY" -m cython -3 -I . \
  -X boundscheck=False -X wraparound=False -X cdivision=True -X embedsignature=True \
  --module-name meshd.dataplane._h2 meshd/dataplane/_h2.pyx -o "$OUT/_h2.c"
SUFFIX="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
clang -shared -fPIC -O2 -g -fsanitize-coverage=inline-8bit-counters,pc-table \
  -I "$INCLUDE" "$OUT/_h2.c" -lnghttp2 -o "$OUT/_h2$SUFFIX"
clang -shared -fPIC -O2 fuzz/sancov_shim.c -ldl -o "$OUT/sancov_shim.so"
echo "built $OUT/_h2$SUFFIX and $OUT/sancov_shim.so"
