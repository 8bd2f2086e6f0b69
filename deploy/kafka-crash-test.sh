#!/usr/bin/env bash
# The Kafka crash test, for users: starts a local Apache Kafka (deploy/kafka.sh), produces a
# generated day, runs `harbour kafka run`, kills it with SIGKILL at 12 random moments while it
# works (into Parquet, ClickHouse and Redis, started here too), restarts it each time, and checks
# that every sink ends equal to an uninterrupted
# file replay of the day and that the committed offsets are at the end. Stops the broker after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh
# This run's services, whatever a developer started by hand: state files of its own, and no
# address inherited from the shell (a failed start then fails the run instead of testing the
# other service).
state="$(mktemp -d "${TMPDIR:-/tmp}/harbour-test-services.XXXXXX")"
export HARBOUR_KAFKA_STATE="$state/kafka.state" HARBOUR_CLICKHOUSE_STATE="$state/clickhouse.state" \
  HARBOUR_REDIS_STATE="$state/redis.state"
unset HARBOUR_KAFKA_BOOTSTRAP HARBOUR_CLICKHOUSE_URL HARBOUR_REDIS_URL
cleanup() {
  bash deploy/kafka.sh stop || true
  bash deploy/clickhouse.sh stop || true
  bash deploy/redis.sh stop || true
  rm -rf "$state"
}
trap cleanup EXIT
out="$(bash deploy/kafka.sh start)"; eval "$out"
out="$(bash deploy/clickhouse.sh start)"; eval "$out"
out="$(bash deploy/redis.sh start)"; eval "$out"
cargo test --release --locked -p harbour --test kafka sigkill -- --nocapture
