#!/usr/bin/env bash
# The whole test suite: the README's test command.
#
# Installs what the build and the services need when missing (Debian packages: a C toolchain,
# pkg-config and OpenSSL headers for librdkafka; Java and Maven for Kafka; clickhouse-server;
# redis-server), starts Apache Kafka (deploy/kafka.sh: KRaft), ClickHouse (deploy/clickhouse.sh)
# and Redis (deploy/redis.sh), each on
# spare loopback ports with its data in a temporary directory, runs every test of the workspace,
# and stops what it started. Safe to run on a fresh Debian machine with rustup's cargo on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
  fi
fi

bash deploy/deps.sh

cleanup() {
  bash "$root/deploy/kafka.sh" stop || true
  bash "$root/deploy/clickhouse.sh" stop || true
  bash "$root/deploy/redis.sh" stop || true
}
trap cleanup EXIT
eval "$(bash deploy/kafka.sh start)"
echo "kafka at $HARBOUR_KAFKA_BOOTSTRAP" >&2
eval "$(bash deploy/clickhouse.sh start)"
echo "clickhouse at $HARBOUR_CLICKHOUSE_URL" >&2
eval "$(bash deploy/redis.sh start)"
echo "redis at $HARBOUR_REDIS_URL" >&2

# Build first, then run with a ceiling: a test that hangs (a service that never answers, a
# pipeline that never reaches the end) fails the run with the name of the test still running,
# instead of running into CI's own limit. The whole suite takes a few minutes here.
cargo test --workspace --locked --no-run "$@"
timeout --signal=TERM --kill-after=30s "${HARBOUR_TEST_TIMEOUT:-30m}" cargo test --workspace --locked "$@"
