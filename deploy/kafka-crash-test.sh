#!/usr/bin/env bash
# The Kafka crash test, for users: starts a local Apache Kafka (deploy/kafka.sh), produces a
# generated day, runs `harbour kafka run`, kills it with SIGKILL at 12 random moments while it
# works (into Parquet, ClickHouse and Redis, started here too), restarts it each time, and checks
# that every sink ends equal to an uninterrupted
# file replay of the day and that the committed offsets are at the end. Stops the broker after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/deps.sh
cleanup() {
  bash deploy/kafka.sh stop || true
  bash deploy/clickhouse.sh stop || true
  bash deploy/redis.sh stop || true
}
trap cleanup EXIT
eval "$(bash deploy/kafka.sh start)"
eval "$(bash deploy/clickhouse.sh start)"
eval "$(bash deploy/redis.sh start)"
cargo test --release --locked -p harbour --test kafka sigkill -- --nocapture
