#!/usr/bin/env bash
# A one-node Apache Kafka (KRaft, combined broker+controller) on 127.0.0.1:9092, built from Maven
# Central so it runs without Docker.  Usage: kafka/kafka.sh fetch|start|stop|status
# Idempotent: `start` on a running broker just confirms it answers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
libs="$here/libs"
run="${KAFKA_RUN_DIR:-$here/run}"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-9093}"
pidfile="$run/kafka.pid"

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  echo "kafka: fetching Apache Kafka jars from Maven Central into $libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

answers() {  # a TCP connect is not enough: ask for metadata
  python3 - "$port" <<'PY' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    # ApiVersions request v0: api_key 18, version 0, correlation 1, client id "probe"
    body = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < size:
        chunk = s.recv(size - len(data))
        if not chunk: break
        data += chunk
    sys.exit(0 if len(data) >= 6 and struct.unpack(">h", data[4:6])[0] == 0 else 1)
except Exception:
    sys.exit(1)
PY
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

start() {
  fetch
  if answers; then echo "kafka: already answering on 127.0.0.1:$port"; return; fi
  mkdir -p "$run/data"
  if ! running; then
    cat > "$run/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$run/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Lets tests use short session timeouts so a killed worker's partitions move quickly.
group.min.session.timeout.ms=1000
# Records carry GH Archive event times (2015...) as timestamps: time-based retention would delete a
# replay as soon as it lands. Bound topics by size instead.
log.retention.ms=-1
log.retention.bytes=1073741824
PROPS
    cat > "$run/log4j2.properties" <<PROPS
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $run/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = warn
logger.org.name = org.apache.kafka
logger.org.level = warn
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
PROPS
    if [ ! -f "$run/data/meta.properties" ]; then
      cid=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)
      java -cp "$libs/*" -Dlog4j2.configurationFile="$run/log4j2.properties" kafka.tools.StorageTool \
        format -t "$cid" -c "$run/server.properties" --ignore-formatted >/dev/null
    fi
    nohup java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$run/log4j2.properties" -cp "$libs/*" kafka.Kafka "$run/server.properties" \
      > "$run/stdout.log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
  fi
  for _ in $(seq 1 120); do
    if answers; then echo "kafka: ready on 127.0.0.1:$port (logs in $run)"; return; fi
    if ! running; then echo "kafka: broker exited; see $run/stdout.log and $run/server.log" >&2; tail -20 "$run/stdout.log" >&2; exit 1; fi
    sleep 0.5
  done
  echo "kafka: broker did not answer within 60 s; see $run/server.log" >&2; exit 1
}

stop() {
  if ! running; then echo "kafka: not running"; rm -f "$pidfile"; return; fi
  pid=$(cat "$pidfile"); kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "kafka: stopped"; return; }; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true; rm -f "$pidfile"; echo "kafka: killed after 30 s"
}

case "${1:-start}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if answers; then echo "kafka: answering on 127.0.0.1:$port"; else echo "kafka: not answering"; exit 1; fi ;;
  clean) stop; rm -rf "$run" ;;
  *) echo "usage: $0 fetch|start|stop|status|clean" >&2; exit 2 ;;
esac
