#!/usr/bin/env bash
# Runs dermal's tests on Debian 13 "trixie" (LibTorch 2.6, Catch2 3, fmt 10,
# Python 3.13, Django 4.2) in a chroot, from a Debian 12 or 13 host, as root:
#   bash tools/debian13.sh              # C++ and Python suites, then the cross-release check
#   bash tools/debian13.sh --benchmark  # benchmarks/run.sh in the chroot instead
#                                       # (on the host's reference exports in build/, if any)
#   bash tools/debian13.sh --releases   # benchmarks/releases.py: both releases side by side
#
# The root file system is made by debootstrap (from the host's Debian mirror)
# and cached in $DERMAL_TRIXIE_ROOT (default /var/cache/dermal/trixie-root);
# it is made again when missing or broken. Each run copies the repository's
# tracked files into it (never the host's build directories; the chroot's own
# stay, so a second run builds only what changed) and runs tools/test.sh
# --without-sanitizers there (the headless-browser test included), which
# installs what is missing with tools/setup.sh.
#
# Cross-release check: model files exported here on the host and in the
# chroot (tools/make_release_models.py) are loaded on the other release by
# tests/cross_release. Full output goes to build/debian13/*.log; a failing
# step prints its tail.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=${DERMAL_TRIXIE_ROOT:-/var/cache/dermal/trixie-root}
logs=$repo/build/debian13
mode=${1:-tests}
[[ $mode == tests || $mode == --benchmark || $mode == --releases ]] ||
  { echo "usage: bash tools/debian13.sh [--benchmark | --releases]" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "tools/debian13.sh needs root (debootstrap, mount, chroot)" >&2; exit 1; }
mkdir -p "$logs" "$(dirname "$root")"

# Runs a step with its output in $logs/NAME.log; on failure prints the tail and stops.
step() {
  local name=$1 started=$SECONDS
  shift
  if "$@" > "$logs/$name.log" 2>&1; then
    echo "   $name: ok ($((SECONDS - started)) s)"
  else
    echo "   $name: FAILED ($((SECONDS - started)) s); last lines of $logs/$name.log:"
    tail -n 60 "$logs/$name.log" | sed 's/^/     | /'
    exit 1
  fi
}

# One run at a time per root.
exec 9> "$root.lock"
flock 9

mounted_under_root() { findmnt -rn -o TARGET | grep -E "^$root(/|$)" || true; }
unmount_root() {
  local target
  for target in $(mounted_under_root | sort -r); do umount -l "$target" 2> /dev/null || true; done
}
trap unmount_root EXIT
unmount_root

# The host's Debian mirror, as apt itself reads the sources (both formats).
debian_mirror() {
  local codename mirror
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 'Origin: Debian' \
             "Codename: $codename" 2> /dev/null | grep -v -- '-security' | head -n 1)
  echo "${mirror:-http://deb.debian.org/debian/}"
}

root_is_usable() {
  [[ -f $root/etc/dermal-trixie-root ]] && chroot "$root" /bin/true 2> /dev/null &&
    [[ -z $(chroot "$root" dpkg --audit 2> /dev/null) ]]
}

make_root() {
  command -v debootstrap > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
  if [[ -n $(mounted_under_root) ]]; then
    echo "still mounted under $root, not removing it:" >&2
    mounted_under_root >&2
    return 1
  fi
  rm -rf "$root" "$root.partial"
  debootstrap --variant=minbase trixie "$root.partial" "$(debian_mirror)"
  echo "made by tools/debian13.sh on $(date -u +%FT%TZ)" > "$root.partial/etc/dermal-trixie-root"
  mv "$root.partial" "$root"
}

echo "== Debian 13 root in $root"
if root_is_usable; then
  echo "   cached root: ok"
else
  step make-root make_root
fi
# The host's name servers and the certificate authorities it added locally
# (a proxy's, say), so that apt and npm reach in the chroot what they reach outside.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G '/usr/local/share/ca-certificates/*.crt' > /dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates > /dev/null 2>&1 || true
fi
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"

# Runs a command line in the chroot, in the repository's copy, with a clean
# environment: no oneDNN ISA cap, which the scripts it runs set only where
# tools/onednn-cap.sh's check finds this machine's convolutions wrong.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /work/dermal && $1"
}

# The repository's tracked files replace the previous copy. A file whose
# content did not change keeps the previous copy's time stamp and any other
# gets the current time, so that make rebuilds exactly what changed in the
# chroot's own build directories (build*/), which stay.
copy_repository() {
  local copy=$root/work/dermal new=$root/work/dermal.new file
  rm -rf "$new"
  mkdir -p "$new" "$copy"
  git ls-files -z | while IFS= read -r -d '' file; do [[ -e $file ]] && printf '%s\0' "$file"; done |
    tar --null -T - -cf - | tar -xf - -C "$new"
  (cd "$new" && find . -type f -print0) | while IFS= read -r -d '' file; do
    if cmp -s "$new/$file" "$copy/$file"; then touch -r "$copy/$file" "$new/$file"; else touch "$new/$file"; fi
  done
  find "$copy" -mindepth 1 -maxdepth 1 -name 'build*' -exec mv -t "$new" {} +
  rm -rf "$copy"
  mv "$new" "$copy"
}
step copy copy_repository

if [[ $mode == --releases ]]; then
  echo "== the benchmark programs on both releases, the reference model, then benchmarks/releases.py"
  step host-build bash tools/setup.sh --build
  step root-build in_root "bash tools/setup.sh --build"
  step reference bash benchmarks/run.sh --prepare-only
  mkdir -p "$root/work/dermal/build"
  cp build/reference-effnetv2s.pt build/benchmark-lesion.jpg "$root/work/dermal/build/"
  step releases /usr/bin/python3 benchmarks/releases.py --root "$root"
  cat benchmarks/results/releases.md
  exit 0
fi

if [[ $mode == --benchmark ]]; then
  echo "== benchmarks/run.sh on Debian 13 (log: $logs/benchmark.log)"
  step packages in_root "bash tools/setup.sh --build"
  # The host's reference exports, if made, so that both releases time the same files.
  mkdir -p "$root/work/dermal/build"
  cp build/reference-effnetv2s*.pt "$root/work/dermal/build/" 2> /dev/null || true
  step benchmark in_root "bash benchmarks/run.sh"
  mkdir -p benchmarks/results/debian13
  cp "$root"/work/dermal/benchmarks/results/{results.md,results.json,chart.png} benchmarks/results/debian13/
  echo "   results.md, results.json and chart.png copied to benchmarks/results/debian13/"
  exit 0
fi

echo "== versions"
step packages in_root "bash tools/setup.sh --build"
in_root "dpkg-query -W -f '   \${Package} \${Version}\n' libtorch-dev python3-torch libcatch2-dev catch2 libfmt-dev python3-django python3 2> /dev/null | sort -u"

# The sanitizer build is left to the host: it checks dermal's own code, the
# same on both releases, and would add ~10 minutes to CI's 90.
echo "== every test but the sanitizer build, on Debian 13"
step tests in_root "bash tools/test.sh --without-sanitizers"
grep -E "tests passed|tests failed|passed|failed" "$logs/tests.log" | grep -E "out of|[0-9]+ passed" | sed 's/^/   /'

echo "== cross-release model files"
step host-build bash tools/setup.sh --build
step host-models env DERMAL_BUILD_DIR="$repo/build" /usr/bin/python3 tools/make_release_models.py build/release-models
rm -rf "$root/work/debian12-models" && cp -r build/release-models "$root/work/debian12-models"
step trixie-models in_root ". tools/onednn-cap.sh && DERMAL_BUILD_DIR=build /usr/bin/python3 tools/make_release_models.py /work/debian13-models"
rm -rf build/debian13-models && cp -r "$root/work/debian13-models" build/debian13-models
step debian12-files-on-13 in_root \
  ". tools/onednn-cap.sh && DERMAL_BUILD_DIR=build DERMAL_OTHER_RELEASE_MODELS=/work/debian12-models /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/cross_release"
step debian13-files-on-12 env DERMAL_BUILD_DIR="$repo/build" DERMAL_OTHER_RELEASE_MODELS="$repo/build/debian13-models" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/cross_release
for name in debian12-files-on-13 debian13-files-on-12; do
  echo "   $name: $(grep -E '[0-9]+ passed' "$logs/$name.log" | tail -n 1)"
done
