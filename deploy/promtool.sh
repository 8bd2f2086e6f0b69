#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus's rule checker), for the tests of deploy/prometheus.
# Uses the one on PATH when there is one; otherwise unpacks it from Debian's `prometheus` package
# into ~/.cache/harbour/promtool (downloaded once, not installed: no Prometheus service is set up).
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/harbour/promtool"
if [ ! -x "$cache/usr/bin/promtool" ]; then
  mkdir -p "$cache"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  chmod a+rwx "$work" # apt-get download runs as _apt
  (cd "$work" && apt-get download -qq prometheus >&2)
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$cache/usr/bin"
  cp "$work/root/usr/bin/promtool" "$cache/usr/bin/promtool"
fi
echo "$cache/usr/bin/promtool"
