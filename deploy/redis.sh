#!/usr/bin/env bash
# A local Redis for tests and for trying the Redis sink.
#
#   deploy/redis.sh start   # prints `export HARBOUR_REDIS_URL=redis://127.0.0.1:PORT/`; eval it
#   deploy/redis.sh stop    # stops the server this script started and removes its data
#
# Debian's redis-server (installed when missing), on a spare loopback port, with its data in a
# temporary directory.
set -euo pipefail

STATE="${HARBOUR_REDIS_STATE:-${TMPDIR:-/tmp}/harbour-redis.state}"

need() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server from Debian" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >&2
  fi
}

spare_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  need
  local dir port
  dir="$(mktemp -d "${TMPDIR:-/tmp}/harbour-redis.XXXXXX")"
  port="$(spare_port)"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly yes \
    --appendfsync everysec --daemonize no --logfile "$dir/redis.log" >/dev/null 2>&1 &
  echo "$! $dir redis://127.0.0.1:$port/" > "$STATE"
  for _ in $(seq 1 80); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
      echo "export HARBOUR_REDIS_URL=redis://127.0.0.1:$port/"
      return 0
    fi
    sleep 0.1
  done
  echo "redis did not start; its log: $dir/redis.log" >&2
  stop
  return 1
}

stop() {
  [ -f "$STATE" ] || return 0
  local pid dir
  read -r pid dir _ < "$STATE"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  case "$dir" in "${TMPDIR:-/tmp}"/harbour-redis.*) rm -rf "$dir" ;; esac
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
