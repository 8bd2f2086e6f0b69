#!/usr/bin/env bash
# Installs the Debian packages Harbour's build and local services need, when missing:
# a C toolchain, pkg-config, OpenSSL (headers, and the tool a TLS test runs) and zlib headers (librdkafka is built from source by the
# rdkafka crate), python3, python3-venv and curl (service scripts; the current-ClickHouse check), Java and Maven (deploy/kafka.sh),
# clickhouse-server (deploy/clickhouse.sh), redis-server and redis-tools (deploy/redis.sh).
set -euo pipefail
want=(build-essential pkg-config libssl-dev openssl zlib1g-dev python3 python3-venv curl default-jre-headless maven clickhouse-server redis-server redis-tools)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A Java runtime other than Debian's default is fine.
if command -v java >/dev/null 2>&1; then
  missing=("${missing[@]/default-jre-headless}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck source=deploy/lib.sh
  . "$(dirname "$0")/lib.sh"
  apt_install "${missing[@]}"
fi
