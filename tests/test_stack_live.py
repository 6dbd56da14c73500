"""The whole local stack for real: `scripts/stack.sh start` (what `make start` runs) brings up the
streamer (synthetic source), two workers and the dashboard on a private one-node broker; leaders
appear on /api/leaders and keep changing; the broker restarted by hand (kafka.sh stop, 5 s, start)
under the stack: the health card says so and is whole again within seconds, the page keeps updating
and no service was restarted; a worker `kill -9`'d again and again is restarted each time while the
page keeps updating, the crash loop shows on the dashboard's Workers card and in the log, and the
worker is back in the group once left alone; `scripts/stack.sh stop` ends every process and leaves
the broker running (it did not start it).

The run is isolated from a developer's own `make start` and from other tests: its own state dir,
a free dashboard port, topics and application id with a random suffix.  Skipped, with the reason,
until the services it needs exist."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, alive, free_port, wait_for
from kafka_cluster import KafkaCluster

STACK = ROOT / "scripts" / "stack.sh"
VENV = Path(sys.prefix)
LEADERS_WITHIN_S = 120
CHANGE_WITHIN_S = 60
CRASH_LOOP_S = 90          # kill -9 secondary for at most this long (until its absence shows)
BROKER_DOWN_S = 5          # the broker restarted by hand is down this long (the issue: 5-10 s)
HEALTH_BACK_S = 30         # ... and the health card is whole again within this (~5 s measured)


def missing_parts() -> list[str]:
    missing = []
    for rel in ("archive_streamer/__main__.py", "dashboard/__main__.py", "wallaroo/runtime/cli.py"):
        if not (ROOT / rel).is_file():
            missing.append(rel)
    if not any("def application_setup" in p.read_text(errors="replace")
               for p in (ROOT / "star_leaders").glob("*.py")):
        missing.append("star_leaders.application_setup")
    for script in ("honcho", "machida", "archive-streamer", "star-leaders-dashboard"):
        if not (VENV / "bin" / script).exists():
            missing.append(f"{VENV}/bin/{script} (make env)")
    return missing


MISSING = missing_parts()
pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(bool(MISSING), reason=f"stack services not written yet: {', '.join(MISSING)}"),
]


def api(port: int, path: str):
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def leaders(port: int):
    return api(port, "/api/leaders")


def worker_pid(root: int, name: str) -> int | None:
    """The running `machida ... --name NAME` under `root` (not its supervisor, whose command names it too)."""
    for pid in tree(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "supervise" in words or "--name" not in words:
            continue
        i = words.index("--name")
        if any(w.endswith("machida") for w in words[:2]) and words[i + 1:i + 2] == [name]:
            return pid
    return None


def tree(pid: int) -> set[int]:
    """pid and all its live descendants."""
    out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = {pid}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


@pytest.fixture
def broker(tmp_path):
    """A one-node broker of our own (tests/kafka_cluster.py), so the test can restart it by hand."""
    with KafkaCluster(tmp_path / "kafka-run", nodes=1) as cluster:
        cluster.start()
        yield cluster


@pytest.mark.timeout(900)
def test_stack_start_shows_changing_leaders_heals_and_stop_ends_it(broker, tmp_path):
    kafka = broker.bootstrap
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    state = tmp_path / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAR_LEADERS_")}
    env.update({
        "STAR_LEADERS_MODE": "local",
        "STAR_LEADERS_STATE_DIR": str(state),
        "STAR_LEADERS_VENV": str(VENV),
        "STAR_LEADERS_PORT": str(port),
        "STAR_LEADERS_PRIMARY_QUERY_PORT": str(free_port()),
        "STAR_LEADERS_SECONDARY_QUERY_PORT": str(free_port()),
        "STAR_LEADERS_KAFKA": kafka,
        # kafka/kafka.sh (the stack's `make kafka`, the test's restart by hand) acts on that broker
        **{k: broker.env[k] for k in ("KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "KAFKA_RUN_DIR")},
        "STAR_LEADERS_SOURCE": "synthetic",
        "STAR_LEADERS_EVENTS_TOPIC": f"gharchive-stack-{suffix}",
        "STAR_LEADERS_LEADERBOARD_TOPIC": f"leaderboard-stack-{suffix}",
        "STAR_LEADERS_APP_ID": f"star-leaders-stack-{suffix}",
        "STAR_LEADERS_START_TIMEOUT": "120",
        "STAR_LEADERS_RESTART_DELAY_MAX": "2",     # a crash loop without long pauses
    })

    def stack(*args, timeout=200):
        return subprocess.run(["bash", str(STACK), *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=timeout)

    def log_text() -> str:
        try:
            return (state / "stack.log").read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log_tail() -> str:
        return "\n".join(log_text().splitlines()[-60:])

    try:
        t0 = time.monotonic()
        r = stack("start")
        assert r.returncode == 0, f"start failed:\n{r.stdout}\n{r.stderr}"
        assert f"http://127.0.0.1:{port}/" in r.stdout
        assert not (state / "broker-started-by-stack").exists(), "the broker was up: the stack must not own it"
        honcho = int((state / "honcho.pid").read_text())

        # leaders appear ...
        first = None
        while time.monotonic() - t0 < LEADERS_WITHIN_S:
            snap = leaders(port)
            if snap and snap.get("leaders"):
                first = snap
                break
            assert alive(honcho), f"the stack died:\n{log_tail()}"
            time.sleep(1)
        assert first, f"no leaders within {LEADERS_WITHIN_S} s of start:\n{log_tail()}"
        print(f"first leaders after {time.monotonic() - t0:.1f} s: {first['leaders'][:3]}")

        # ... and keep changing
        t1, changed = time.monotonic(), None
        while time.monotonic() - t1 < CHANGE_WITHIN_S:
            snap = leaders(port)
            if snap and snap != first:
                changed = snap
                break
            time.sleep(1)
        assert changed, f"leaders did not change within {CHANGE_WITHIN_S} s:\n{log_tail()}"

        # the search box's answer: any leader's card, from the workers' query ports
        top = changed["leaders"][0]["repo"]
        card = wait_for(lambda: (lambda c: c if c and c.get("repo") == top else None)(api(port, f"/api/repos/{top}")),
                        timeout_s=30, what=f"a card for {top}:\n{log_tail()}")
        assert card["stars"] >= 1 and len(card["hourly"]) == 24 and sum(card["hourly"]) == card["stars"], card
        assert isinstance(card["rank"], int) and card["rank"] >= 1, card

        # ---- the broker restarted by hand under the stack (`make kafka-stop`, 6 s, `make kafka`)
        broker.stop(1)
        stopped = time.monotonic()
        wait_for(lambda: (api(port, "/api/health") or {}).get("kafka_connected") is False, timeout_s=30,
                 what=f"the health card to say Kafka is down:\n{log_tail()}")
        time.sleep(max(0.0, stopped + BROKER_DOWN_S - time.monotonic()))
        broker.start(1)                        # returns once the broker answers
        back = time.monotonic()
        wait_for(lambda: (lambda h: h.get("kafka_connected") and h.get("error") is None)(api(port, "/api/health") or {}),
                 timeout_s=HEALTH_BACK_S, what=f"the health card whole again:\n{log_tail()}")
        health_s = time.monotonic() - back
        after_outage = leaders(port)
        wait_for(lambda: (lambda d: d and d != after_outage)(leaders(port)), timeout_s=CHANGE_WITHIN_S,
                 what=f"leaders changing after the broker restart:\n{log_tail()}")
        print(f"broker restart: health whole {health_s:.1f} s and leaders moving {time.monotonic() - back:.1f} s "
              f"after the broker answered")
        assert alive(honcho)
        assert ": exited (" not in log_text(), \
            f"a service was restarted through the broker restart:\n{log_tail()}"

        # ---- a worker in a crash loop: kill -9 each incarnation of secondary as soon as it runs
        wait_for(lambda: (api(port, "/api/health") or {}).get("workers") == 2, timeout_s=120,
                 what=f"both workers in the group:\n{log_tail()}")
        killed, saw_missing, t2 = [], None, time.monotonic()
        before_kills = leaders(port)
        while time.monotonic() - t2 < CRASH_LOOP_S and (len(killed) < 3 or saw_missing is None):
            pid = wait_for(lambda: (lambda p: p if p and p not in killed else None)(worker_pid(honcho, "secondary")),
                           timeout_s=60, what=f"secondary restarted after kill {len(killed)}:\n{log_tail()}")
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            wait_for(lambda: "secondary: exited (SIGKILL) after" in log_text() and
                     f"restart {len(killed)} in" in log_text(), timeout_s=30,
                     what=f"the log line of restart {len(killed)}")
            h = api(port, "/api/health") or {}
            if h.get("workers") == 1 and h.get("expected_workers") == 2 and saw_missing is None:
                saw_missing = h
            assert alive(honcho), f"the stack went down with its worker:\n{log_tail()}"
        print(f"{len(killed)} kills in {time.monotonic() - t2:.0f} s; health during the loop: {saw_missing}")
        assert len(killed) >= 3
        assert saw_missing, f"the Workers card never showed the missing worker:\n{log_tail()}"
        assert saw_missing["worker_names"] == ["primary"]
        assert sum("secondary: exited (SIGKILL)" in line for line in log_text().splitlines()) == len(killed)
        # the page kept updating (primary took over), and secondary is back once left alone
        wait_for(lambda: (lambda d: d and d != before_kills)(leaders(port)), timeout_s=CHANGE_WITHIN_S,
                 what=f"leaders changing while secondary crash-loops:\n{log_tail()}")
        back = wait_for(lambda: (lambda h: h if h and h.get("workers") == 2 else None)(api(port, "/api/health")),
                        timeout_s=120, what=f"secondary back in the group:\n{log_tail()}")
        assert back["worker_names"] == ["primary", "secondary"]
        after = leaders(port)
        wait_for(lambda: (lambda d: d and d != after)(leaders(port)), timeout_s=CHANGE_WITHIN_S,
                 what="leaders changing after the crash loop")

        # a second start does not start a second stack
        r = stack("start")
        assert r.returncode == 0 and "already running" in r.stdout, r.stdout + r.stderr
        assert int((state / "honcho.pid").read_text()) == honcho

        pids = tree(honcho)
        assert len(pids) >= 5, f"expected honcho and four services, found {pids}"
        r = stack("stop", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.2)
        left = [p for p in pids if alive(p)]
        assert not left, f"processes left after stop: {left}"
        assert leaders(port) is None, "the dashboard still answers after stop"
        assert subprocess.run([str(ROOT / "kafka" / "kafka.sh"), "status"], capture_output=True,
                              env=env).returncode == 0, "stop must leave a broker it did not start running"
    finally:
        if (state / "honcho.pid").exists():
            stack("stop", timeout=60)
        try:
            from confluent_kafka.admin import AdminClient
            admin = AdminClient({"bootstrap.servers": kafka})
            mine = [t for t in admin.list_topics(timeout=10).topics if suffix in t]
            if mine:
                for f in admin.delete_topics(mine).values():
                    f.result(30)
        except Exception as e:  # cleanup only
            print(f"topic cleanup failed: {e}")


def test_reset_deletes_exactly_the_stacks_own_topics_and_group(kafka, tmp_path):
    """`start` (STAR_LEADERS_RESET=1) and `reset` delete this stack's topics and group, nothing else."""
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, NewTopic
    from wallaroo.runtime import topics

    suffix = uuid.uuid4().hex[:8]
    app_id = f"sl-reset-{suffix}"
    events, board = f"ev-reset-{suffix}", f"lb-reset-{suffix}"
    import star_leaders
    app = star_leaders.application_setup(["machida"])
    app = app.build() if hasattr(app, "build") else app
    from wallaroo.runtime import operations
    from stack_contract.metrics import metrics_topic
    internal = [topics.dead_letter_topic(app_id), operations.control_topic(app_id), metrics_topic(app_id)]
    for s in app.state_names():
        internal += [topics.repartition_topic(app_id, s), topics.changelog_topic(app_id, s)]
    ours = [events, board, *internal]
    # neighbours that share prefixes with ours: another app id that starts with ours, another topic
    others = [f"{app_id}-x-other", f"{app_id}x-dead-letters", f"{events}-2", f"x{board}"]
    admin = AdminClient({"bootstrap.servers": kafka})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in ours + others]).values():
        f.result(30)
    c = Consumer({"bootstrap.servers": kafka, "group.id": app_id, "enable.auto.commit": False})
    from confluent_kafka import TopicPartition
    c.commit(offsets=[TopicPartition(events, 0, 0)], asynchronous=False)
    c.close()
    other_group = f"{app_id}-2"
    c = Consumer({"bootstrap.servers": kafka, "group.id": other_group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(events, 0, 0)], asynchronous=False)
    c.close()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STAR_LEADERS_")}
        env.update({"STAR_LEADERS_STATE_DIR": str(tmp_path / "stack"), "STAR_LEADERS_VENV": str(VENV),
                    "STAR_LEADERS_KAFKA": kafka, "STAR_LEADERS_EVENTS_TOPIC": events,
                    "STAR_LEADERS_LEADERBOARD_TOPIC": board, "STAR_LEADERS_APP_ID": app_id})
        r = subprocess.run(["bash", str(STACK), "reset"], capture_output=True, text=True, env=env, cwd=ROOT,
                           timeout=120)
        assert r.returncode == 0 and "warning" not in r.stdout, r.stdout + r.stderr
        left = set(admin.list_topics(timeout=10).topics)
        assert not set(ours) & left, f"not deleted: {set(ours) & left}"
        assert set(others) <= left, f"deleted topics that are not the stack's: {set(others) - left}"
        groups = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
        assert app_id not in groups and other_group in groups
    finally:
        stale = [t for t in admin.list_topics(timeout=10).topics if suffix in t]
        if stale:
            for f in admin.delete_topics(stale).values():
                try:
                    f.result(30)
                except Exception:
                    pass
        try:
            admin.delete_consumer_groups([other_group])[other_group].result(30)
        except Exception:
            pass
