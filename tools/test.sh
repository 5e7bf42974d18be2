#!/usr/bin/env bash
# Builds dermal (installing missing Debian packages) and runs every test:
# the C++ tests through ctest, the unit tests again under the sanitizers,
# then the Python tests through pytest.
#   bash tools/test.sh                       # all of it
#   bash tools/test.sh --without-sanitizers  # not the sanitizer build (tools/debian13.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/onednn-cap.sh
sanitizers=yes
case "${1:-}" in
  "") ;;
  --without-sanitizers) sanitizers=no ;;
  *) echo "usage: bash tools/test.sh [--without-sanitizers]" >&2; exit 2 ;;
esac
bash tools/setup.sh --build
echo "== C++ tests"
(cd build && ctest --output-on-failure -j "$(nproc)")
if [[ $sanitizers == yes ]]; then
  echo "== unit tests under AddressSanitizer and UndefinedBehaviorSanitizer (build-asan/)"
  (
    # LibTorch is linked but not instrumented; what it leaks itself is in lsan.supp.
    export ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1
    export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDERMAL_SANITIZE=ON \
      -DDERMAL_BUILD_EXAMPLES=OFF -DDERMAL_BUILD_BENCHMARKS=OFF > build-asan.log 2>&1 &&
      cmake --build build-asan -j "$(nproc)" --target unit_tests fuzz_replay_decode fuzz_replay_description \
        >> build-asan.log 2>&1 || { tail -50 build-asan.log; exit 1; }
    rm -f build-asan.log
    # c_abi_exports (labelled unit and capi) inspects libdermal_c.so, which is not built here.
    cd build-asan && ctest -L unit -LE capi --output-on-failure -j "$(nproc)"
  )
fi
echo "== TensorFlow.js for the Keras import tests (npm ci from tests/keras/package-lock.json)"
npm ci --prefix tests/keras --no-audit --no-fund --loglevel=error
echo "== Python tests"
DERMAL_BUILD_DIR="$PWD/build" /usr/bin/python3 -m pytest -q tests/python
