#!/usr/bin/env bash
# Installs the Debian packages dermal needs, builds it into build/, and
# classifies a bundled sample photo with the bundled demo model.
#   bash tools/setup.sh            # all of it
#   bash tools/setup.sh --build    # packages and build only (used by tools/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config
  libtorch-dev libstb-dev catch2 libfmt-dev nlohmann-json3-dev libturbojpeg0-dev
  python3-torch python3-torchvision python3-numpy python3-pil python3-pytest python3-pip python3-setuptools
  python3-django gunicorn chromium chromium-driver python3-selenium python3-matplotlib python3-distributed
  python3-h5py nodejs
  clang libclang-rt-dev
)
# Debian 12 and 13 ship different versions of LibTorch, Catch2, fmt, Python and
# clang; every name above is one both releases have (clang and libclang-rt-dev
# pull the release's default clang, for the fuzz builds).
# Under Debian 13's LibTorch 2.6, frozen graphs (the stages after the CAM
# layer, and every stage where the optimised graphs are refused) send
# single-threaded 1x1 convolutions to the BLAS:
# with Debian's reference BLAS (libblas3) a reference-model Grad-CAM took
# 1.1 s at 1 thread, with OpenBLAS 0.17 s. (Debian 12's optimised graphs run
# on oneDNN; its OpenBLAS is left out, not measured there.)
[[ $(. /etc/os-release && echo "${VERSION_ID:-}") == 12 ]] || packages+=(libopenblas0-openmp)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# npm installs the pinned TensorFlow.js of the Keras import tests (tests/keras);
# a Node.js from elsewhere (e.g. NodeSource) brings its own npm.
command -v npm > /dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "== installing Debian packages: ${missing[*]}"
  sudo_prefix=()
  [[ $(id -u) -eq 0 ]] || sudo_prefix=(sudo)
  "${sudo_prefix[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_prefix[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

. tools/onednn-cap.sh  # needs Python's torch, installed above

echo "== building into build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > build.log 2>&1 || { cat build.log; exit 1; }
cmake --build build -j "$(nproc)" >> build.log 2>&1 || { tail -50 build.log; exit 1; }
rm -f build.log

[[ "${1:-}" == "--build" ]] && exit 0

echo "== classifying a bundled sample with the demo model (scores, not a diagnosis)"
build/examples/dermal-classify --heatmap build/melanoma_1-gradcam.jpg examples/data/samples/melanoma_1.jpg
