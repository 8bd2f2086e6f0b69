#!/usr/bin/env bash
# A local Redis for tests and for trying the Redis sink.
#
#   deploy/redis.sh start   # prints `export HARBOUR_REDIS_URL=redis://127.0.0.1:PORT/`; eval it
#   deploy/redis.sh stop    # stops the server this script started and removes its data
#
# Debian's redis-server (installed when missing), on a spare loopback port, with its data in a
# temporary directory.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"

STATE="${HARBOUR_REDIS_STATE:-${TMPDIR:-/tmp}/harbour-redis.state}"

need() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
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
  stop_service "$STATE" harbour-redis
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
