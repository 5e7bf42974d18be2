#!/usr/bin/env bash
# The container test: builds the repository's Dockerfile and runs
# tests/container/check.py against the image (the reference EfficientNetV2-S
# under --memory 512m, the smallest-limit search, a killed worker, --cpus 0.1).
#   bash tests/container/run.sh [check.py options, e.g. --skip-search]
# Needs root; installs Debian's docker.io and debootstrap when missing (the
# library's own set-up, tools/setup.sh, does not need them). Starts dockerd (niced:
# CI shares the machine) when none answers, and makes the base image
# debian:<release>-slim offline with tests/container/base-image.sh when it is
# missing. DERMAL_DEBIAN_RELEASE=trixie builds on Debian 13. Docker's layer
# cache makes a rebuild after a source change recompile only the library.
# Logs: build/container/{dockerd,build}.log. Ends with `N passed, N failed`.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
release=${DERMAL_DEBIAN_RELEASE:-bookworm}
image=dermal:test-$release
mkdir -p build/container
started=$SECONDS

fail() {  # a step before check.py failed: say so in check.py's closing form
  echo "FAIL  $1"
  echo "0 passed, 1 failed"
  exit 1
}

missing=()
command -v dockerd > /dev/null || missing+=(docker.io)
command -v debootstrap > /dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  echo "== installing Debian packages: ${missing[*]}"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    > build/container/apt.log 2>&1 || { tail -n 20 build/container/apt.log; fail "apt-get install ${missing[*]}"; }
fi

if ! docker info > /dev/null 2>&1; then
  echo "== starting dockerd (log: build/container/dockerd.log)"
  setsid nice -n 10 dockerd > build/container/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info > /dev/null 2>&1 && break; sleep 1; done
  docker info > /dev/null 2>&1 || { tail -n 20 build/container/dockerd.log; fail "dockerd did not start"; }
fi

if ! docker image inspect "debian:$release-slim" > /dev/null 2>&1; then
  bash tests/container/base-image.sh "$release" || fail "could not make the base image debian:$release-slim"
fi

echo "== docker build --build-arg DEBIAN_RELEASE=$release -t $image . (log: build/container/build.log)"
step=$SECONDS
if ! nice -n 10 docker build --network host --build-arg "DEBIAN_RELEASE=$release" -t "$image" . \
     > build/container/build.log 2>&1; then
  tail -n 40 build/container/build.log
  fail "docker build"
fi
echo "   built in $((SECONDS - step)) s"

# The reference model of the Django example's load test, exported on the host
# by python3 -m dermal.convert, which loads the host's build of the library.
model=$("$PY" -c 'import sys; sys.path.insert(0, "examples/django"); import loadtest; print(loadtest.MODEL)')
if [[ ! -f $model ]]; then
  export DERMAL_LIBRARY=${DERMAL_LIBRARY:-$PWD/build/capi/libdermal_c.so}
  [[ -f $DERMAL_LIBRARY ]] || fail "$DERMAL_LIBRARY is missing, the exporter needs it (bash tools/setup.sh --build)"
  echo "== exporting the reference EfficientNetV2-S to $model (about a minute)"
  mkdir -p "$(dirname "$model")"
  PYTHONPATH=capi/python "$PY" -c 'import sys, subprocess; sys.path.insert(0, "examples/django"); import loadtest
subprocess.run(loadtest.EXPORT, check=True, stdout=subprocess.DEVNULL)' || fail "exporting the reference model"
fi
echo "== tests/container/check.py (set-up took $((SECONDS - started)) s)"
nice -n 10 "$PY" tests/container/check.py --image "$image" --model "$model" "$@"
