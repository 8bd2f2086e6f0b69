#!/usr/bin/env bash
# The whole test suite: the README's test command.
#
# Installs what the build and the services need when missing (Debian packages: a C toolchain,
# pkg-config and OpenSSL headers for librdkafka; Java and Maven for Kafka; clickhouse-server;
# redis-server; promtool, unpacked from Debian's prometheus package), starts Apache Kafka
# (deploy/kafka.sh: KRaft), ClickHouse (deploy/clickhouse.sh) and Redis (deploy/redis.sh), each
# on spare loopback ports with its data in a temporary directory, runs every test of the
# workspace, checks the ClickHouse DDL and the desk dashboard's queries on a current release
# (deploy/clickhouse/check_current.py, chDB from PyPI), validates the Kubernetes manifests
# (kubernetes-validate from PyPI), and stops what it started. Safe to run on
# a fresh Debian machine with rustup's cargo on PATH.
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

# This run's services, whatever a developer started by hand: state files of its own, and no
# address inherited from the shell (a failed start then fails the run instead of testing the
# other service).
state="$(mktemp -d "${TMPDIR:-/tmp}/harbour-test-services.XXXXXX")"
export HARBOUR_KAFKA_STATE="$state/kafka.state" HARBOUR_CLICKHOUSE_STATE="$state/clickhouse.state" \
  HARBOUR_REDIS_STATE="$state/redis.state"
unset HARBOUR_KAFKA_BOOTSTRAP HARBOUR_CLICKHOUSE_URL HARBOUR_REDIS_URL
cleanup() {
  bash "$root/deploy/kafka.sh" stop || true
  bash "$root/deploy/clickhouse.sh" stop || true
  bash "$root/deploy/redis.sh" stop || true
  rm -rf "$state"
}
trap cleanup EXIT
out="$(bash deploy/kafka.sh start)"; eval "$out"
echo "kafka at $HARBOUR_KAFKA_BOOTSTRAP" >&2
out="$(bash deploy/clickhouse.sh start)"; eval "$out"
echo "clickhouse at $HARBOUR_CLICKHOUSE_URL" >&2
out="$(bash deploy/redis.sh start)"; eval "$out"
echo "redis at $HARBOUR_REDIS_URL" >&2
# promtool checks and unit-tests the Prometheus rules (pipeline/tests/deploy.rs).
HARBOUR_PROMTOOL="$(bash deploy/promtool.sh)"
export HARBOUR_PROMTOOL

# Build first, then run with a ceiling: a test that hangs (a service that never answers, a
# pipeline that never reaches the end) fails the run with the name of the test still running,
# instead of running into CI's own limit. The whole suite takes a few minutes here.
cargo test --workspace --locked --no-run "$@"
timeout --signal=TERM --kill-after=30s "${HARBOUR_TEST_TIMEOUT:-30m}" cargo test --workspace --locked "$@"

# The ClickHouse migrations and docs queries on a current ClickHouse too (chDB, the ClickHouse
# engine as a library, from PyPI), column types compared with the 18.16 server started above.
venv="${XDG_CACHE_HOME:-$HOME/.cache}/harbour/chdb-venv"
if ! "$venv/bin/python" -c "import chdb" >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "chdb-core==26.9.0"
fi
"$venv/bin/python" deploy/clickhouse/check_current.py

# The Kubernetes manifests against the API's schemas (kubernetes-validate from PyPI, strict:
# unknown fields fail too).
kvenv="${XDG_CACHE_HOME:-$HOME/.cache}/harbour/k8s-validate-venv"
if ! "$kvenv/bin/python" -c "import kubernetes_validate" >/dev/null 2>&1; then
  rm -rf "$kvenv"
  python3 -m venv "$kvenv"
  "$kvenv/bin/pip" install --quiet "kubernetes-validate==1.37.0"
fi
"$kvenv/bin/kubernetes-validate" --strict --quiet deploy/k8s/namespace.yaml deploy/k8s/volume.yaml \
  deploy/k8s/deployment.yaml deploy/k8s/service.yaml
echo "deploy/k8s: manifests valid against the Kubernetes API schemas" >&2
