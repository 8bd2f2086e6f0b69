#!/usr/bin/env bash
# A local ClickHouse server for tests and for trying the ClickHouse sink.
#
#   deploy/clickhouse.sh start   # prints `export HARBOUR_CLICKHOUSE_URL=http://127.0.0.1:PORT`; eval it
#   deploy/clickhouse.sh stop    # stops the server this script started and removes its data
#
# Uses Debian's clickhouse-server package (installed when missing; an 18.16 release on bookworm),
# with its configuration, data and logs in a temporary directory, on spare loopback ports.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"

STATE="${HARBOUR_CLICKHOUSE_STATE:-${TMPDIR:-/tmp}/harbour-clickhouse.state}"

need() {
  command -v clickhouse-server >/dev/null 2>&1 || apt_install clickhouse-server
}

# Warns (on stderr) when `$1` is on ext4 without a journal: there the kernel's inode allocation
# skips every recently freed inode one page-cache lookup at a time, and ClickHouse, which makes
# and deletes a directory of files per insert and merge, spends a quarter of its inserts' time
# there (measured on a VM whose root is such a file system: freshness p99 1.8-2.5 s instead of
# 0.5 s on a journaled ext4 image on the same disk). Fine for tests; benchmark elsewhere.
warn_unjournaled() {
  local dev fstype
  read -r dev fstype < <(findmnt -no SOURCE,FSTYPE -T "$1" 2>/dev/null) || true
  if [ "${fstype:-}" = ext4 ] && [ -b "${dev:-}" ] && [ -d /proc/fs ] \
    && ! compgen -G "/proc/fs/jbd2/$(basename "$(readlink -f "$dev")")-*" >/dev/null; then
    echo "deploy/clickhouse.sh: $1 is on ext4 without a journal ($dev): ClickHouse inserts slow down there after deletions; set TMPDIR to another file system to benchmark" >&2
  fi
}

start() {
  need
  local dir http tcp interserver
  dir="$(mktemp -d "${TMPDIR:-/tmp}/harbour-clickhouse.XXXXXX")"
  warn_unjournaled "$dir"
  http="$(spare_port)"; tcp="$(spare_port)"; interserver="$(spare_port)"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
  cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>100M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$interserver</interserver_http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
  nohup clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  echo "$! $dir http://127.0.0.1:$http" > "$STATE"
  for _ in $(seq 1 120); do
    if [ "$(curl -fsS "http://127.0.0.1:$http/ping" 2>/dev/null)" = "Ok." ]; then
      echo "export HARBOUR_CLICKHOUSE_URL=http://127.0.0.1:$http"
      return 0
    fi
    if ! kill -0 "$(cut -d' ' -f1 "$STATE")" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "clickhouse did not start; its logs: $dir/log" >&2
  tail -20 "$dir/log/stdout.log" "$dir/log/error.log" >&2 2>/dev/null || true
  stop
  return 1
}

stop() {
  stop_service "$STATE" harbour-clickhouse
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
