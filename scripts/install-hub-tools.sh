#!/usr/bin/env bash
# Debian packages the cogkit hub and playground tests drive for real: Node.js + npm (the
# official replicate npm client), PostgreSQL (the hub's second database; the tests start
# their own server with initdb + pg_ctl in a temp dir) and Chromium (the playground's
# browser tests, through the playwright package; no browser download).
# Needs root and apt; idempotent (a no-op when everything is installed or present).
set -euo pipefail
missing=""
command -v node >/dev/null || missing="$missing nodejs"
command -v npm >/dev/null || missing="$missing npm"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v chromium >/dev/null || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-hub-tools: need root and apt-get to install:$missing" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-hub-tools: installed$missing"
