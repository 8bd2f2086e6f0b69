#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft mode) for tests and for trying the Kafka path.
#
#   deploy/kafka.sh start   # prints `export HARBOUR_KAFKA_BOOTSTRAP=127.0.0.1:PORT`; eval it
#   deploy/kafka.sh stop    # stops the broker this script started and removes its data
#
# The broker comes from Maven Central (org.apache.kafka:kafka_2.13, fetched with
# `mvn dependency:copy-dependencies`) and runs on the machine's Java (17+). Java and Maven are
# installed from Debian when missing. Jars are cached in ~/.cache/harbour/kafka-<version>; data lives
# in a temporary directory; both ports are spare loopback ports.
# HARBOUR_KAFKA_JAVA_OPTS adds JVM options (a collector, `-Xlog:gc:file=…`) for experiments.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "$0")/lib.sh"

KAFKA_VERSION="${HARBOUR_KAFKA_VERSION:-4.1.1}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/harbour/kafka-$KAFKA_VERSION"
STATE="${HARBOUR_KAFKA_STATE:-${TMPDIR:-/tmp}/harbour-kafka.state}"

need() {
  if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    apt_install default-jre-headless maven
  fi
}

fetch() {
  if [ -f "$CACHE/.complete" ]; then return; fi
  mkdir -p "$CACHE"
  cat > "$CACHE/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>harbour.local</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
POM
  echo "fetching Apache Kafka $KAFKA_VERSION from Maven Central" >&2
  (cd "$CACHE" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=libs >&2)
  touch "$CACHE/.complete"
}

start() {
  need
  fetch
  local dir port cport id
  dir="$(mktemp -d "${TMPDIR:-/tmp}/harbour-kafka.XXXXXX")"
  port="$(spare_port)"
  cport="$(spare_port)"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# small internal topics (50 partitions each by default): a fresh test broker creates them in
# moments, and the first transactional producer or group commit does not wait for them
transaction.state.log.num.partitions=4
offsets.topic.num.partitions=8
group.initial.rebalance.delay.ms=0
num.partitions=4
auto.create.topics.enable=true
PROPS
  id="$(java -cp "$CACHE/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
  java -cp "$CACHE/libs/*" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1
  # HARBOUR_KAFKA_JAVA_OPTS: further JVM options (a collector, GC logging), split on spaces.
  local jopts=()
  read -r -a jopts <<<"${HARBOUR_KAFKA_JAVA_OPTS:-}"
  nohup java -Xmx512m "${jopts[@]}" -cp "$CACHE/libs/*" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  echo "$! $dir 127.0.0.1:$port" > "$STATE"
  for _ in $(seq 1 120); do
    if grep -q "Transition from STARTING to STARTED" "$dir/kafka.log" 2>/dev/null; then
      echo "export HARBOUR_KAFKA_BOOTSTRAP=127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cut -d' ' -f1 "$STATE")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "kafka did not start; its log: $dir/kafka.log" >&2
  tail -20 "$dir/kafka.log" >&2 || true
  stop
  return 1
}

stop() {
  stop_service "$STATE" harbour-kafka
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
