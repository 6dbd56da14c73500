#!/usr/bin/env bash
# Apache Kafka (KRaft, combined broker+controller nodes) built from Maven Central, so it runs without
# Docker.  Usage: kafka/kafka.sh fetch|start|stop|kill|status|bootstrap|clean [NODE]
#
# One node by default (`make kafka`): 127.0.0.1:$KAFKA_PORT (9092), its controller on
# $KAFKA_CONTROLLER_PORT (9093), state in kafka/run.
# KAFKA_NODES=N: a cluster of N nodes from the same jars; node i listens on 127.0.0.1:P and its
# controller on P+1, P = $KAFKA_CLUSTER_PORT (19092) + 2(i-1); state in kafka/run-cluster/node<i>.
# Replication factor min(N,3), min.insync.replicas RF-1 (3 nodes: RF 3, min ISR 2).
# KAFKA_RUN_DIR replaces the run dir in both modes; KAFKA_START_TIMEOUT (120 s) bounds `start`'s wait.
# KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS replace the JVM's heap and other options, for every node started.
# NODE (a number) limits start, stop (SIGTERM), kill (SIGKILL) and status to that node.
# Idempotent: `start` on a running broker just confirms it answers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(cd "$here/.." && pwd -P)
libs="$here/libs"
nodes="${KAFKA_NODES:-1}"
marker=".created-by-kafka.sh"   # `clean` deletes a run dir outside the checkout only if it holds this

case "$nodes" in ''|*[!0-9]*|0*) echo "kafka: KAFKA_NODES must be a positive number, not '$nodes'" >&2; exit 2 ;; esac
if [ "$nodes" = 1 ]; then
  run="${KAFKA_RUN_DIR:-$here/run}"
  rf=1
else
  run="${KAFKA_RUN_DIR:-$here/run-cluster}"
  cluster_port="${KAFKA_CLUSTER_PORT:-19092}"
  rf=$(( nodes < 3 ? nodes : 3 ))
fi
min_isr=$(( rf > 1 ? rf - 1 : 1 ))

# node_id, node_dir, port, cport, conf, pidfile of node $1.  One node keeps the layout it always had.
select_node() {
  node_id=$1
  if [ "$nodes" = 1 ]; then
    node_dir="$run"; port="${KAFKA_PORT:-9092}"; cport="${KAFKA_CONTROLLER_PORT:-9093}"
    name="kafka"
  else
    node_dir="$run/node$node_id"; port=$(( cluster_port + 2 * (node_id - 1) )); cport=$(( port + 1 ))
    name="kafka node $node_id"
  fi
  conf="$node_dir/server.properties"
  pidfile="$node_dir/kafka.pid"
}

voters() {
  local i out=""
  for i in $(seq 1 "$nodes"); do select_node "$i"; out+="${out:+,}$i@127.0.0.1:$cport"; done
  echo "$out"
}

bootstrap() {
  local i out=""
  for i in $(seq 1 "$nodes"); do select_node "$i"; out+="${out:+,}127.0.0.1:$port"; done
  echo "$out"
}

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  echo "kafka: fetching Apache Kafka jars from Maven Central into $libs"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

answers() {  # a TCP connect is not enough: ask for metadata
  python3 - "$1" <<'PY' 2>/dev/null
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

# Whether process $1 is the broker of config $2: `kafka.Kafka <conf>` among its arguments.  A pidfile
# can outlive its broker and name a process that reused the pid; that one must never be signalled.
is_broker() {
  local pid=$1 want=$2 arg main=0 config=0
  local -a args=()
  if [ -r "/proc/$pid/cmdline" ]; then
    mapfile -d '' args < "/proc/$pid/cmdline" 2>/dev/null || return 1
  else  # no /proc (macOS): ps gives the arguments joined by spaces
    read -r -a args <<< "$(ps -o args= -p "$pid" 2>/dev/null)" || return 1
  fi
  for arg in "${args[@]}"; do
    [ "$arg" = kafka.Kafka ] && main=1
    [ "$arg" = "$want" ] && config=1
  done
  [ $main = 1 ] && [ $config = 1 ]
}

# Prints the pid of the selected node's broker when it runs.  A pidfile naming anything else is removed.
broker_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  case "$pid" in ''|*[!0-9]*) echo "$name: removing $pidfile: no pid in it" >&2; rm -f "$pidfile"; return 1 ;; esac
  if is_broker "$pid" "$conf"; then echo "$pid"; return 0; fi
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: $pidfile names pid $pid, which is not this broker (kafka.Kafka $conf): leaving it alone, removing the stale pidfile" >&2
  fi
  rm -f "$pidfile"
  return 1
}

# The run dir, marked as ours when this script creates it (so `clean` may delete it later).
make_run_dir() {
  if [ ! -e "$run" ]; then
    mkdir -p "$run"
    echo "created by kafka/kafka.sh; 'kafka/kafka.sh clean' deletes this directory" > "$run/$marker"
  fi
}

write_config() {
  mkdir -p "$node_dir/data"
  cat > "$node_dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$node_dir/data
num.partitions=1
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
# Lets tests use short session timeouts so a killed worker's partitions move quickly.
group.min.session.timeout.ms=1000
# Records carry GH Archive event times (2015...) as timestamps: time-based retention would delete a
# replay as soon as it lands. Bound topics by size instead.
log.retention.ms=-1
log.retention.bytes=1073741824
PROPS
  if [ "$nodes" != 1 ]; then
    # Topics created without an explicit replication factor get the cluster's, and acks=all writes
    # need two live replicas, so one node can go without losing an acknowledged record.
    cat >> "$node_dir/server.properties" <<CLUSTER
default.replication.factor=$rf
min.insync.replicas=$min_isr
CLUSTER
  fi
  cat > "$node_dir/log4j2.properties" <<PROPS
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $node_dir/server.log
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
}

cluster_id() {  # one id for every node of the run dir, made once
  if [ ! -s "$run/cluster.id" ]; then java -cp "$libs/*" kafka.tools.StorageTool random-uuid > "$run/cluster.id"; fi
  cat "$run/cluster.id"
}

format_storage() {  # $1: cluster id
  java -cp "$libs/*" -Dlog4j2.configurationFile="$node_dir/log4j2.properties" kafka.tools.StorageTool \
    format -t "$1" -c "$conf" --ignore-formatted >/dev/null
}

# Every node's JVM gets KAFKA_HEAP_OPTS and KAFKA_JVM_OPTS (as Kafka's own scripts name them), split
# on spaces; unset, the defaults below.  Tests' clusters set smaller ones (tests/kafka_cluster.py).
launch() {
  local -a heap jvm
  read -r -a heap <<< "${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  read -r -a jvm <<< "${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"
  nohup java ${heap[@]+"${heap[@]}"} ${jvm[@]+"${jvm[@]}"} -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$node_dir/log4j2.properties" -cp "$libs/*" kafka.Kafka "$conf" \
    > "$node_dir/stdout.log" 2>&1 < /dev/null &
  echo $! > "$pidfile"
}

# Node numbers from the optional NODE argument (checked by check_node_arg): that one, or all.
selection() { if [ -z "${1:-}" ]; then seq 1 "$nodes"; else echo "$1"; fi; }

check_node_arg() {
  [ -z "${1:-}" ] && return
  case "$1" in *[!0-9]*|0*) echo "kafka: NODE must be a number from 1 to $nodes, not '$1'" >&2; exit 2 ;; esac
  if [ "$1" -gt "$nodes" ]; then echo "kafka: no node $1: KAFKA_NODES=$nodes" >&2; exit 2; fi
}

start() {
  local i cid="" fmt
  local -a waiting=() launching=() formatting=()
  fetch
  make_run_dir
  for i in $(selection "${1:-}"); do
    select_node "$i"
    if answers "$port"; then echo "$name: already answering on 127.0.0.1:$port"; continue; fi
    waiting+=("$i")
    broker_pid >/dev/null && continue   # started, not answering yet
    write_config
    launching+=("$i")
  done
  # Storage formats in parallel (a JVM each), then every node is launched before any is waited for:
  # a node answers only once the controller quorum has formed.
  for i in ${launching[@]+"${launching[@]}"}; do
    select_node "$i"
    [ -f "$node_dir/data/meta.properties" ] && continue
    if [ "$nodes" = 1 ]; then cid=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid)
    else cid=${cid:-$(cluster_id)}; fi
    format_storage "$cid" & formatting+=("$!")
  done
  for fmt in ${formatting[@]+"${formatting[@]}"}; do wait "$fmt"; done
  for i in ${launching[@]+"${launching[@]}"}; do select_node "$i"; launch; done
  for i in ${waiting[@]+"${waiting[@]}"}; do wait_ready "$i"; done
  if [ "$nodes" != 1 ] && [ -z "${1:-}" ]; then echo "kafka: $nodes nodes ready; bootstrap $(bootstrap)"; fi
}

wait_ready() {  # a loaded 2-core machine can take a minute and more to bring up three JVMs
  local deadline=$(( SECONDS + ${KAFKA_START_TIMEOUT:-120} ))
  select_node "$1"
  while [ $SECONDS -lt $deadline ]; do
    if answers "$port"; then echo "$name: ready on 127.0.0.1:$port (logs in $node_dir)"; return; fi
    if ! broker_pid >/dev/null; then
      echo "$name: broker exited; see $node_dir/stdout.log and $node_dir/server.log" >&2
      tail -20 "$node_dir/stdout.log" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "$name: broker did not answer within ${KAFKA_START_TIMEOUT:-120} s; see $node_dir/server.log" >&2; exit 1
}

stop() {  # SIGTERM to every selected node at once, then wait for each (SIGKILL after 30 s)
  local i pid
  local -a stopping=()
  for i in $(selection "${1:-}"); do
    select_node "$i"
    if pid=$(broker_pid); then kill "$pid"; stopping+=("$i:$pid"); else echo "$name: not running"; fi
  done
  for entry in ${stopping[@]+"${stopping[@]}"}; do
    i=${entry%%:*}; pid=${entry#*:}
    select_node "$i"
    if wait_gone "$pid" 60; then echo "$name: stopped"
    else kill -9 "$pid" 2>/dev/null || true; wait_gone "$pid" 20 || true; echo "$name: killed after 30 s"; fi
    rm -f "$pidfile"
  done
}

kill_nodes() {  # SIGKILL: a crash, as tests need it
  local i pid
  for i in $(selection "${1:-}"); do
    select_node "$i"
    if pid=$(broker_pid); then
      kill -9 "$pid"; wait_gone "$pid" 20 || true; rm -f "$pidfile"; echo "$name: killed (pid $pid)"
    else echo "$name: not running"; fi
  done
}

wait_gone() {  # $1 pid, $2 tries of 0.5 s; a zombie has no cmdline, so it counts as gone
  for _ in $(seq 1 "$2"); do is_broker "$1" "$conf" || return 0; sleep 0.5; done
  return 1
}

status() {  # exit status 1 when a selected node does not answer
  local i rc=0 pid
  for i in $(selection "${1:-}"); do
    select_node "$i"
    if [ "$nodes" = 1 ]; then pid=""
    elif pid=$(broker_pid 2>/dev/null); then pid=" (pid $pid)"
    else pid=" (no process of this run dir)"; fi
    if answers "$port"; then echo "$name: answering on 127.0.0.1:$port$pid"
    else echo "$name: not answering$pid"; rc=1; fi
  done
  return $rc
}

# `clean` deletes the run dir only when it is this script's: inside the checkout and holding broker
# state, or marked as created by this script.  Never /, $HOME, the checkout or a folder holding it.
clean() {
  if [ ! -e "$run" ]; then echo "kafka: nothing to clean ($run does not exist)"; return; fi
  local real home
  real=$(cd "$run" && pwd -P)
  home=$(cd "${HOME:-/}" 2>/dev/null && pwd -P || echo /)
  local refuse=""
  case "$checkout/" in "${real%/}/"*) refuse="it holds the checkout $checkout" ;; esac
  if [ "$real" = / ] || [ "$real" = "$home" ]; then refuse="it is / or your home"
  elif [ -z "$refuse" ] && [ ! -f "$real/$marker" ]; then
    case "$real/" in
      "$checkout/"*)
        if [ ! -f "$real/server.properties" ] && [ ! -d "$real/data" ] && [ ! -d "$real/node1" ]; then
          refuse="it holds no broker state (no server.properties, data/ or node1/)"
        fi ;;
      *) refuse="it is outside the checkout $checkout and this script did not create it (no $marker)" ;;
    esac
  fi
  if [ -n "$refuse" ]; then
    echo "kafka: refusing to delete KAFKA_RUN_DIR=$run: $refuse; nothing deleted" >&2; exit 1
  fi
  local dir
  if [ "$nodes" != 1 ]; then   # stop every node there, also of a cluster started with a larger KAFKA_NODES
    for dir in "$real"/node*; do
      dir=${dir##*/node}
      case "$dir" in ''|*[!0-9]*|0*) ;; *) if [ "$dir" -gt "$nodes" ]; then nodes=$dir; fi ;; esac
    done
  fi
  stop
  rm -rf -- "$real"
  echo "kafka: deleted $real"
}

check_node_arg "${2:-}"
case "${1:-start}" in
  fetch) fetch ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  kill) kill_nodes "${2:-}" ;;
  status) status "${2:-}" ;;
  bootstrap) bootstrap ;;
  clean) clean ;;
  *) echo "usage: [KAFKA_NODES=N] $0 fetch|start|stop|kill|status|bootstrap|clean [NODE]" >&2; exit 2 ;;
esac
