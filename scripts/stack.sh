#!/usr/bin/env bash
# Runs the whole star-leaders stack: Kafka, the archive streamer, two star_leaders workers and the
# dashboard.  `make start|stop|tail` call this script.
#
# Usage: scripts/stack.sh start|stop|restart|status|tail|reset|env|supervise
#   start    Docker engine answering (`docker info`): `docker compose up -d --build` (docker-compose.yaml).
#            Otherwise local processes: the local broker (kafka/kafka.sh) and honcho running ./Procfile in
#            the background; waits until the dashboard answers, then prints its URL.  Starting twice
#            does not start two stacks.
#   stop     stops what `start` started: honcho and its processes, and the local broker only if this
#            stack started it (a broker that was already running, e.g. for tests, is left alone).
#   status   what runs;  tail  follows the stack's logs;  env  prints the settings below as `export` lines
#            (`eval "$(scripts/stack.sh env)" && .venv/bin/honcho start` runs the Procfile by hand);
#   reset    deletes the local stack's topics and consumer group (what `start` does first, see RESET).
#   supervise [--once] NAME COMMAND...   what the Procfile runs each service under (honcho stops the
#            whole stack when any of its processes exits, so none of them does):
#            COMMAND exits -> it is started again after a backoff (RESTART_DELAY, doubling up to
#            RESTART_DELAY_MAX; back to RESTART_DELAY after a run of RESTART_RESET_AFTER seconds), for as
#            long as the stack runs; every exit and restart is a log line.  --once: COMMAND is not
#            restarted, the supervisor idles after it (the streamer: a restart would replay from
#            STAR_LEADERS_START and send every event again).  SIGTERM/SIGINT end it and its COMMAND.
#
# Settings (environment variables).  This block is the one place for the local stack's defaults; the
# Docker stack reads the same variables in docker-compose.yaml, with the defaults noted there.  The
# topics' and the app id's defaults are the Python services' own (stack_contract; a test compares them).
#   STAR_LEADERS_SOURCE       synthetic         where events come from: `synthetic` (built-in generator,
#                                               works offline), a URL (https://data.gharchive.org for the
#                                               real GH Archive) or a folder of YYYY-MM-DD-H.json.gz files
#   STAR_LEADERS_START        2015-01-01-0      first archive hour, YYYY-MM-DD-H (UTC)
#   STAR_LEADERS_HOURS        72                archive hours to replay (three days; the streamer then idles)
#   STAR_LEADERS_SPEEDUP      24                archive seconds per wall second: one archive hour per 150 s
#   STAR_LEADERS_WARMUP_HOURS 23                the first hours go as fast as possible, so the 24-hour
#                                               window is full seconds after start; then 24x
#   STAR_LEADERS_KAFKA        127.0.0.1:$KAFKA_PORT  (KAFKA_PORT defaults to 9092) Kafka bootstrap
#                                               servers; the local broker is started only when this is
#                                               127.0.0.1:$KAFKA_PORT or localhost:$KAFKA_PORT
#   STAR_LEADERS_PORT         5000              dashboard port on 127.0.0.1
#   STAR_LEADERS_PRIMARY_QUERY_PORT 5101        query ports of the two workers on 127.0.0.1 (the
#   STAR_LEADERS_SECONDARY_QUERY_PORT 5102      dashboard's repository search asks them; README "Queries")
#   STAR_LEADERS_EVENTS_TOPIC gharchive         topic the streamer fills and the workers read
#   STAR_LEADERS_LEADERBOARD_TOPIC leaderboard  topic the workers write and the dashboard shows
#   STAR_LEADERS_APP_ID       star-leaders      the workers' consumer group and internal-topic prefix;
#                                               two stacks on one broker need different ids and topics
#   STAR_LEADERS_MODE         auto              auto | docker | local
#   STAR_LEADERS_STATE_DIR    .stack            pid file, logs and markers of the local stack
#   STAR_LEADERS_START_TIMEOUT 90               seconds `start` waits for the dashboard to answer
#   STAR_LEADERS_RESET        1                 1: every start is a fresh replay: the stack's own topics
#                                               (events, leaderboard, the app id's internal topics) and
#                                               consumer group are deleted first (Docker: the kafka-data
#                                               volume; the archive cache stays).  The streamer always
#                                               replays from STAR_LEADERS_START, and workers that kept
#                                               the previous run's state would ignore those old hours,
#                                               leaving the board frozen until the replay caught up.
#                                               0: keep them
#   STAR_LEADERS_VENV         .venv             the virtualenv whose honcho and services run
#   STAR_LEADERS_RESTART_DELAY 1                seconds before a service that exited is started again ...
#   STAR_LEADERS_RESTART_DELAY_MAX 30           ... doubling per quick exit up to this
#   STAR_LEADERS_RESTART_RESET_AFTER 60         a run at least this long counts as healthy: the delay
#                                               starts again from STAR_LEADERS_RESTART_DELAY
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

: "${KAFKA_PORT:=9092}"
export KAFKA_PORT
: "${STAR_LEADERS_MODE:=auto}"
: "${STAR_LEADERS_STATE_DIR:=$root/.stack}"
: "${STAR_LEADERS_START_TIMEOUT:=90}"
: "${STAR_LEADERS_RESET:=1}"
state=$STAR_LEADERS_STATE_DIR
pidfile=$state/honcho.pid
log=$state/stack.log
broker_marker=$state/broker-started-by-stack
mode_file=$state/mode
port_file=$state/port
venv=${STAR_LEADERS_VENV:-$root/.venv}
kafka_sh=$root/kafka/kafka.sh

# The local stack's settings (see the header).  Not applied to the Docker stack, whose defaults live in
# docker-compose.yaml (it streams the real archive by default).
local_settings() {
  : "${STAR_LEADERS_SOURCE:=synthetic}"
  : "${STAR_LEADERS_START:=2015-01-01-0}"
  : "${STAR_LEADERS_HOURS:=72}"
  : "${STAR_LEADERS_SPEEDUP:=24}"
  : "${STAR_LEADERS_WARMUP_HOURS:=23}"
  : "${STAR_LEADERS_KAFKA:=127.0.0.1:$KAFKA_PORT}"
  : "${STAR_LEADERS_PORT:=5000}"
  : "${STAR_LEADERS_PRIMARY_QUERY_PORT:=5101}"
  : "${STAR_LEADERS_SECONDARY_QUERY_PORT:=5102}"
  : "${STAR_LEADERS_EVENTS_TOPIC:=gharchive}"
  : "${STAR_LEADERS_LEADERBOARD_TOPIC:=leaderboard}"
  : "${STAR_LEADERS_APP_ID:=star-leaders}"
  restart_settings
  export STAR_LEADERS_SOURCE STAR_LEADERS_START STAR_LEADERS_HOURS STAR_LEADERS_SPEEDUP STAR_LEADERS_WARMUP_HOURS STAR_LEADERS_KAFKA \
    STAR_LEADERS_PORT STAR_LEADERS_PRIMARY_QUERY_PORT STAR_LEADERS_SECONDARY_QUERY_PORT STAR_LEADERS_EVENTS_TOPIC STAR_LEADERS_LEADERBOARD_TOPIC STAR_LEADERS_APP_ID STAR_LEADERS_RESET
}
restart_settings() {
  : "${STAR_LEADERS_RESTART_DELAY:=1}"
  : "${STAR_LEADERS_RESTART_DELAY_MAX:=30}"
  : "${STAR_LEADERS_RESTART_RESET_AFTER:=60}"
  export STAR_LEADERS_RESTART_DELAY STAR_LEADERS_RESTART_DELAY_MAX STAR_LEADERS_RESTART_RESET_AFTER
}
settings_names="STAR_LEADERS_SOURCE STAR_LEADERS_START STAR_LEADERS_HOURS STAR_LEADERS_SPEEDUP STAR_LEADERS_WARMUP_HOURS STAR_LEADERS_KAFKA
  STAR_LEADERS_PORT STAR_LEADERS_PRIMARY_QUERY_PORT STAR_LEADERS_SECONDARY_QUERY_PORT
  STAR_LEADERS_EVENTS_TOPIC STAR_LEADERS_LEADERBOARD_TOPIC STAR_LEADERS_APP_ID STAR_LEADERS_RESET
  STAR_LEADERS_RESTART_DELAY STAR_LEADERS_RESTART_DELAY_MAX STAR_LEADERS_RESTART_RESET_AFTER"

say() { echo "stack: $*"; }
die() { echo "stack: $*" >&2; exit 1; }

python_bin() { if [ -x "$venv/bin/python" ]; then echo "$venv/bin/python"; else echo python3; fi; }

# HTTP 200 from the dashboard's API?
answers() {
  "$(python_bin)" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via an http_proxy
try:
    with opener.open(f"http://127.0.0.1:{sys.argv[1]}/api/leaders", timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# Is anything listening on 127.0.0.1:PORT?
port_busy() {
  "$(python_bin)" - "$1" <<'PY' >/dev/null 2>&1
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}

# The recorded honcho pid, if that process is alive and is honcho (pid files go stale, pids get reused).
honcho_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(tr -dc 0-9 < "$pidfile")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  ps -o command= -p "$pid" 2>/dev/null | grep -q honcho || return 1
  echo "$pid"
}

descendants() {  # every live descendant pid of $1
  ps -A -o pid= -o ppid= | awk -v root="$1" '
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      changed = 1; mark[root] = 1
      while (changed) { changed = 0
        for (i in pids) { p = pids[i]; if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 } } }
      for (p in mark) if (p != root) print p
    }'
}

broker_is_local() {
  case "$STAR_LEADERS_KAFKA" in
    "127.0.0.1:$KAFKA_PORT" | "localhost:$KAFKA_PORT") return 0 ;;
    *) return 1 ;;
  esac
}

docker_answers() {
  command -v docker >/dev/null 2>&1 || return 1
  if command -v timeout >/dev/null 2>&1; then timeout 15 docker info >/dev/null 2>&1; else docker info >/dev/null 2>&1; fi
}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"
  elif command -v docker-compose >/dev/null 2>&1; then docker-compose "$@"
  else die "the Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed; install the compose plugin, or run without Docker: STAR_LEADERS_MODE=local make start"
  fi
}

use_docker() {
  case "$STAR_LEADERS_MODE" in
    docker) docker_answers || die "STAR_LEADERS_MODE=docker but no Docker engine answers (docker info)"; return 0 ;;
    local) return 1 ;;
    auto) docker_answers ;;
    *) die "STAR_LEADERS_MODE must be auto, docker or local, not '$STAR_LEADERS_MODE'" ;;
  esac
}

print_url() {
  say "dashboard: http://127.0.0.1:$1/"
  say "follow the logs with 'make tail' (scripts/stack.sh tail); stop with 'make stop' (scripts/stack.sh stop)"
}

wait_for_dashboard() {  # port, timeout seconds, pid to watch (or empty)
  local port=$1 limit=$2 watch=${3:-} waited=0
  while ! answers "$port"; do
    if [ -n "$watch" ] && ! kill -0 "$watch" 2>/dev/null; then
      echo "stack: the stack exited during start-up; last lines of $log:" >&2
      tail -n 40 "$log" >&2 || true
      rm -f "$pidfile"
      exit 1
    fi
    if [ "$waited" -ge "$limit" ]; then return 1; fi
    sleep 1; waited=$((waited + 1))
  done
}

# Delete this stack's topics and consumer group (exact names only: other stacks and tests share the
# broker).  The internal topic names come from the engine's own naming functions.
reset_topics() {
  say "fresh replay: deleting this stack's topics and consumer group on $STAR_LEADERS_KAFKA (STAR_LEADERS_RESET=0 keeps them)"
  "$(python_bin)" - "$STAR_LEADERS_KAFKA" "$STAR_LEADERS_EVENTS_TOPIC" "$STAR_LEADERS_LEADERBOARD_TOPIC" \
      "$STAR_LEADERS_APP_ID" <<'PY' || say "warning: could not reset the topics; the previous run's state is kept"
import sys, time
from confluent_kafka.admin import AdminClient
import star_leaders
from wallaroo.runtime import operations
from wallaroo.runtime import topics as T
from stack_contract.metrics import metrics_topic

bootstrap, events, board, app_id = sys.argv[1:5]
app = star_leaders.application_setup(["machida", "--kafka_source_topic", events, "--kafka_sink_topic", board])
app = app.build() if hasattr(app, "build") else app
names = {events, board, T.dead_letter_topic(app_id), operations.control_topic(app_id), metrics_topic(app_id)}
for state in app.state_names():
    names |= {T.repartition_topic(app_id, state), T.changelog_topic(app_id, state)}
admin = AdminClient({"bootstrap.servers": bootstrap})
doomed = sorted(names & set(admin.list_topics(timeout=10).topics))
if doomed:
    for f in admin.delete_topics(doomed, operation_timeout=30).values():
        f.result(60)
    deadline = time.monotonic() + 30
    while set(doomed) & set(admin.list_topics(timeout=10).topics) and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"stack: deleted {', '.join(doomed)}")
deadline = time.monotonic() + 30
while True:
    try:
        admin.delete_consumer_groups([app_id], request_timeout=15)[app_id].result(30)
        print(f"stack: deleted consumer group {app_id}")
    except Exception as e:
        if "GROUP_ID_NOT_FOUND" in str(e):     # no such group: nothing to forget
            break
        # a broker that just started is still electing/loading its group coordinator
        if "COORDINATOR" in str(e) and time.monotonic() < deadline:
            time.sleep(1)
            continue
        print(f"stack: warning: consumer group {app_id} not deleted: {e}")
    break
PY
}

start_docker() {
  local port=${STAR_LEADERS_PORT:-5000}
  mkdir -p "$state"
  if [ "${STAR_LEADERS_RESET:-1}" = 1 ] && [ -z "$(compose ps -q 2>/dev/null)" ]; then
    # Not running: a fresh replay needs an empty Kafka (see STAR_LEADERS_RESET); the cache volume stays.
    compose down --remove-orphans >/dev/null 2>&1 || true
    if docker volume rm star-leaders_kafka-data >/dev/null 2>&1; then say "fresh replay: removed the kafka-data volume"; fi
  fi
  say "Docker engine found: docker compose up -d --build"
  compose up -d --build
  echo docker > "$mode_file"
  echo "$port" > "$port_file"
  if ! wait_for_dashboard "$port" "$STAR_LEADERS_START_TIMEOUT" ""; then
    echo "stack: the dashboard did not answer on http://127.0.0.1:$port/ within ${STAR_LEADERS_START_TIMEOUT} s; last log lines:" >&2
    compose logs --tail 40 >&2 || true
    exit 1
  fi
  print_url "$port"
}

start_local() {
  local_settings
  mkdir -p "$state"
  local pid
  if pid=$(honcho_pid); then
    say "already running (honcho pid $pid)"
    print_url "$(cat "$port_file" 2>/dev/null || echo "$STAR_LEADERS_PORT")"
    return
  fi
  rm -f "$pidfile"
  [ -x "$venv/bin/honcho" ] || make -C "$root" env
  [ -x "$venv/bin/honcho" ] || die "$venv/bin/honcho is missing after 'make env'"
  if port_busy "$STAR_LEADERS_PORT"; then
    die "something already listens on 127.0.0.1:$STAR_LEADERS_PORT; stop it or pick another port: STAR_LEADERS_PORT=5001 make start"
  fi
  local q
  for q in PRIMARY SECONDARY; do
    local var=STAR_LEADERS_${q}_QUERY_PORT
    if port_busy "${!var}"; then
      die "something already listens on 127.0.0.1:${!var} (a worker's query port); stop it or pick another: $var=$(( ${!var} + 10 )) make start"
    fi
  done

  if broker_is_local; then
    if "$kafka_sh" status >/dev/null 2>&1; then
      # A marker left by an earlier run of this stack (that was not stopped) keeps the broker ours.
      [ -f "$broker_marker" ] || say "using the broker already running on 127.0.0.1:$KAFKA_PORT (stop leaves it running)"
    else
      "$kafka_sh" start
      touch "$broker_marker"
    fi
  else
    say "using the Kafka brokers at $STAR_LEADERS_KAFKA (no local broker started)"
  fi
  if [ "$STAR_LEADERS_RESET" = 1 ]; then reset_topics; fi

  [ -f "$log" ] && mv -f "$log" "$log.1"
  {
    echo "=== star-leaders stack starting $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for name in $settings_names; do echo "    $name=${!name}"; done
  } > "$log"
  # setsid: honcho leads its own process group, so `stop` can signal it without touching the caller
  # and Ctrl-C in the terminal that ran `make start` does not reach the stack.  honcho starts each
  # service in a session of its own and signals those when it gets SIGTERM.
  PATH="$venv/bin:$PATH" PYTHONUNBUFFERED=1 nohup setsid "$venv/bin/honcho" --no-colour \
    -f "$root/Procfile" -d "$root" start >> "$log" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$pidfile"
  echo local > "$mode_file"
  echo "$STAR_LEADERS_PORT" > "$port_file"
  say "started honcho (pid $pid): streamer, primary, secondary, dashboard; logs in $log"
  say "source=$STAR_LEADERS_SOURCE start=$STAR_LEADERS_START hours=$STAR_LEADERS_HOURS speedup=${STAR_LEADERS_SPEEDUP}x after ${STAR_LEADERS_WARMUP_HOURS} warm-up hours kafka=$STAR_LEADERS_KAFKA"
  if ! wait_for_dashboard "$STAR_LEADERS_PORT" "$STAR_LEADERS_START_TIMEOUT" "$pid"; then
    echo "stack: the dashboard did not answer on http://127.0.0.1:$STAR_LEADERS_PORT/api/leaders within ${STAR_LEADERS_START_TIMEOUT} s; last lines of $log:" >&2
    tail -n 40 "$log" >&2 || true
    echo "stack: the stack is still running; 'scripts/stack.sh stop' stops it" >&2
    exit 1
  fi
  print_url "$STAR_LEADERS_PORT"
}

stop_local() {
  local pid kids waited=0
  if pid=$(honcho_pid); then
    kids=$(descendants "$pid")
    say "stopping honcho (pid $pid) and its processes"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    # honcho gives its processes 5 s after SIGTERM before it SIGKILLs them
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 20 ]; do sleep 0.5; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      say "honcho did not exit within 10 s: killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    # Anything honcho left behind (it was killed, or a service ignored it) goes too.
    local left="" k
    for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086  # a list of pids
      kill -TERM $left 2>/dev/null || true
      sleep 3
      for k in $left; do if kill -0 "$k" 2>/dev/null; then kill -KILL "$k" 2>/dev/null || true; fi; done
    fi
    say "stopped"
  else
    say "no local stack running"
  fi
  rm -f "$pidfile"
  if [ -f "$broker_marker" ]; then
    "$kafka_sh" stop || true
    rm -f "$broker_marker"
  fi
}

stop() {
  if [ "$(cat "$mode_file" 2>/dev/null)" = docker ]; then
    if docker_answers; then compose down; else say "no Docker engine answers; nothing to stop there"; fi
    rm -f "$mode_file"
  fi
  stop_local
  rm -f "$mode_file" "$port_file"
}

status() {
  local pid port rc=0
  port=$(cat "$port_file" 2>/dev/null || echo "${STAR_LEADERS_PORT:-5000}")
  if [ "$(cat "$mode_file" 2>/dev/null)" = docker ]; then
    compose ps
  elif pid=$(honcho_pid); then
    say "local stack running (honcho pid $pid); logs in $log"
  else
    say "no local stack running"; rc=3
  fi
  if answers "$port"; then say "dashboard answering: http://127.0.0.1:$port/"; else say "dashboard not answering on port $port"; fi
  if [ -f "$broker_marker" ]; then say "local broker started by this stack"; fi
  return $rc
}

tail_logs() {
  if [ "$(cat "$mode_file" 2>/dev/null)" = docker ]; then compose logs -f --tail 100; return; fi
  [ -f "$log" ] || die "no log yet at $log: start the stack with 'make start'"
  exec tail -n 100 -F "$log"
}

# "status 1", or "SIGKILL" for a process a signal ended.
exit_reason() {
  local sig
  if [ "$1" -gt 128 ] && sig=$(kill -l "$(($1 - 128))" 2>/dev/null); then echo "SIG$sig"; else echo "status $1"; fi
}

# sleep SECONDS, cut short by SIGTERM/SIGINT (the trap runs once `wait` returns)
pause() {
  local pid
  sleep "$1" & pid=$!
  wait "$pid" || true
  kill "$pid" 2>/dev/null || true
}

supervise() {
  local once=0
  if [ "${1:-}" = --once ]; then once=1; shift; fi
  [ $# -ge 2 ] || { echo "usage: $0 supervise [--once] NAME COMMAND [ARGS...]" >&2; exit 2; }
  local name=$1; shift
  restart_settings
  local delay=$STAR_LEADERS_RESTART_DELAY max=$STAR_LEADERS_RESTART_DELAY_MAX healthy=$STAR_LEADERS_RESTART_RESET_AFTER
  local child="" stopping=0 restarts=0 started ran rc waited
  # honcho signals the process group, which COMMAND shares: it gets the signal itself.  Forward it only
  # if COMMAND is still there a while later (the signal went to this shell alone), so it is never
  # signalled twice (a second SIGTERM makes archive-streamer give up its flush).
  trap 'stopping=1' TERM INT
  while :; do
    started=$SECONDS
    "$@" &
    child=$!
    waited=0
    while kill -0 "$child" 2>/dev/null; do      # bash reaps its children: a gone one fails kill -0
      if [ "$stopping" = 0 ]; then
        # returns when COMMAND exits, or on a signal; bash's own "Killed" note goes (a line follows)
        wait "$child" 2>/dev/null || true
      else                                      # stopping: give COMMAND 10 s, then forward the signal
        if [ "$waited" -eq 20 ]; then kill -TERM "$child" 2>/dev/null || true; fi
        sleep 0.5
        waited=$((waited + 1))
      fi
    done
    rc=0; wait "$child" 2>/dev/null || rc=$?    # its exit status, kept by bash
    [ "$stopping" = 0 ] || exit 0
    ran=$((SECONDS - started))
    if [ "$once" = 1 ]; then
      if [ "$rc" = 0 ]; then
        echo "$name: finished after ${ran} s; not restarted (a restart replays from the first hour);" \
          "idling so the stack stays up"
      else
        echo "$name: FAILED ($(exit_reason "$rc")) after ${ran} s; not restarted (a restart replays from the" \
          "first hour and sends every event again); the rest of the stack keeps running:" \
          "'make stop' then 'make start' replays afresh"
      fi
      while [ "$stopping" = 0 ]; do pause 3600; done
      exit 0
    fi
    if [ "$ran" -ge "$healthy" ]; then delay=$STAR_LEADERS_RESTART_DELAY; fi
    restarts=$((restarts + 1))
    echo "$name: exited ($(exit_reason "$rc")) after ${ran} s; restart $restarts in ${delay} s"
    pause "$delay"
    [ "$stopping" = 0 ] || exit 0
    delay=$(( delay * 2 > max ? max : delay * 2 ))
  done
}

case "${1:-}" in
  start) if use_docker; then start_docker; else start_local; fi ;;
  stop) stop ;;
  restart) stop; if use_docker; then start_docker; else start_local; fi ;;
  status) status ;;
  tail) tail_logs ;;
  reset)  # what a fresh start deletes, on its own
    local_settings
    if honcho_pid >/dev/null; then die "the stack is running: stop it first"; fi
    reset_topics ;;
  env) local_settings; for name in $settings_names; do printf 'export %s=%q\n' "$name" "${!name}"; done ;;
  supervise) shift; supervise "$@" ;;
  *) echo "usage: $0 start|stop|restart|status|tail|reset|env|supervise" >&2; exit 2 ;;
esac
