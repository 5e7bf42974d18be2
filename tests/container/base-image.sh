#!/usr/bin/env bash
# Makes the base image the Dockerfile starts from, without an image registry:
#   bash tests/container/base-image.sh [bookworm|trixie]    # tags debian:<release>-slim
# debootstrap's minbase variant, then what Debian's official -slim images also
# do: no documentation, manual pages or translations (kept out of later
# installs too, by dpkg's path excludes), no apt lists or cached packages, and
# the release's main, -updates and -security suites. The tag is the official
# image's name, so the Dockerfile builds here exactly as a user builds it.
set -euo pipefail
release=${1:-bookworm}
tag=debian:$release-slim
root=$(mktemp -d /var/tmp/dermal-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

echo "== debootstrap --variant=minbase $release (log: $root.log)"
if ! debootstrap --variant=minbase "$release" "$root" http://deb.debian.org/debian > "$root.log" 2>&1; then
  tail -n 20 "$root.log"
  exit 1
fi
rm -f "$root.log"

cat > "$root/etc/dpkg/dpkg.cfg.d/slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
DPKG
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$root"/usr/share/{man,groff,info,lintian,locale}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*
rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

tar -C "$root" -c . | docker import - "$tag" > /dev/null
echo "== $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
