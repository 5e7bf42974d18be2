#!/usr/bin/env bash
# Builds dermal (installing missing Debian packages) and runs every test:
# the C++ tests through ctest, then the Python tests through pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --build
echo "== C++ tests"
(cd build && ctest --output-on-failure -j "$(nproc)")
echo "== Python tests"
DERMAL_BUILD_DIR="$PWD/build" /usr/bin/python3 -m pytest -q tests/python
