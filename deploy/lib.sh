# Shared by deploy/kafka.sh, deploy/clickhouse.sh and deploy/redis.sh (sourced, not run).

# Installs Debian packages (with sudo when not root).
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing from Debian: $*" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >&2
}

# A free loopback TCP port.
spare_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# stop_service STATE PREFIX: stops the process recorded in STATE ("pid dir ...") and removes its
# directory when it is a temporary directory named PREFIX.*.
stop_service() {
  local state="$1" prefix="$2" pid dir
  [ -f "$state" ] || return 0
  read -r pid dir _ < "$state"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  case "$dir" in "${TMPDIR:-/tmp}/$prefix".*) rm -rf "$dir" ;; esac
  rm -f "$state"
}
