#!/usr/bin/env bash
# Debian packages to build, push and run images without a Docker daemon: podman and
# buildah (build/run), skopeo (push/inspect), runc (the runtime that works on cgroup
# "hybrid" hosts, where crun fails), docker-registry (a local registry for tests) and
# mmdebstrap (a Debian base image built from the mirror, no image pull).
# Needs root and apt; idempotent (a no-op when everything is installed).
set -euo pipefail
PACKAGES="podman buildah skopeo runc docker-registry mmdebstrap uidmap"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-container-tools: need root and apt-get to install:$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-container-tools: installed$missing"
