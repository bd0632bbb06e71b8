#!/usr/bin/env bash
# Installs what sandboxlet needs (Debian 12, as root), builds it and runs every test with ctest.
#
#   scripts/test.sh                 # RelWithDebInfo build in build/, all tests
#   scripts/test.sh --sanitize asan # ASan+UBSan build in build-asan/, all tests
#   scripts/test.sh --sanitize tsan # TSan build in build-tsan/, the concurrency tests (-L tsan)
#   scripts/test.sh -R ch_          # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=""
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize="$2"; shift 2 ;;
    --sanitize=*) sanitize="${1#*=}"; shift ;;
    *) ctest_args+=("$1"); shift ;;
  esac
done

bash scripts/install-deps.sh

build_dir=build
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSANDBOXLET_BUILD_BENCH=ON)
case "$sanitize" in
  "") ;;
  asan) build_dir=build-asan; cmake_args+=(-DSANDBOXLET_SANITIZE=address,undefined -DSANDBOXLET_BUILD_BENCH=OFF) ;;
  tsan) build_dir=build-tsan; cmake_args+=(-DSANDBOXLET_SANITIZE=thread -DSANDBOXLET_BUILD_BENCH=OFF); ctest_args=(-L tsan "${ctest_args[@]}") ;;
  *) echo "test.sh: unknown sanitizer '$sanitize' (asan|tsan)" >&2; exit 2 ;;
esac

cmake -S . -B "$build_dir" "${cmake_args[@]}"
cmake --build "$build_dir" -j "$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 600 "${ctest_args[@]}"
