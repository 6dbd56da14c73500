"""The acceptance test: the whole stack on the real broker, as separate processes.

    hour files --(python -m archive_streamer --speedup 0)--> gharchive topic
        --(two machida workers running star_leaders)--> leaderboard topic --(python -m dashboard)--> /api/leaders

When the replay has been consumed, `/api/leaders` must equal an independent batch computation over the
same files (tests/reference.py): the top 10 by distinct WatchEvent ids in the 24 hourly buckets ending
at the newest event's hour, counts, hourly buckets and order exactly.

Cases: (a) three synthetic days followed by quiet hours in which only two repositories (sharing one
repartition partition) get events, so the windows of almost every state partition, and of one whole
worker, can only slide through watermarks; (b) the real hour in shared/data/gharchive; (c) (a)
again with one worker killed by SIGKILL in the middle of the replay; (d) (a) with three workers, two
of them removed by `machida shrink --count 2` in the middle of the replay.
"""
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archive_streamer import synthetic
from conftest import ROOT, SHARED_DATA, event_line, free_port, group_assignments, wait_for
from reference import batch_leaders, comparable, event_time_ms
from star_leaders import config as app_config
from star_leaders import partition_of
from test_archive_streamer_helpers import write_hour

pytestmark = pytest.mark.kafka

REAL_FOLDER = SHARED_DATA / "gharchive"
FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000"]
SOURCE_PARTITIONS = 4
KILL_AFTER = 10_000            # source offsets w2 commits before it is killed

SYN_START = datetime(2015, 1, 5, tzinfo=timezone.utc)
SYN_HOURS = 72                 # three days: the 24-hour window slides 48 times
SYN_EVENTS_PER_HOUR = 1500
SYN_SEED = 7
QUIET_HOURS = 8                # then only QUIET_REPOS get events: the other partitions are idle


# ------------------------------------------------------------------------------------------- data

def quiet_repos():
    """Two repositories in different state partitions of the same repartition partition (the
    partition key i goes to Kafka partition i % SOURCE_PARTITIONS), so in the quiet hours 30 of 32
    state partitions and 3 of 4 repartition partitions get no record."""
    a = "quiet-owner/alpha"
    i = 0
    while True:
        b = f"quiet-owner/beta{i}"
        if partition_of(b) != partition_of(a) and \
                partition_of(b) % SOURCE_PARTITIONS == partition_of(a) % SOURCE_PARTITIONS:
            return a, b
        i += 1


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_folder(folder: Path) -> list[bytes]:
    """Every line of the folder's hour files, read with the stdlib (not archive_streamer's reader)."""
    lines = []
    for path in Path(folder).glob("*.json.gz"):
        with gzip.open(path, "rb") as f:
            lines.extend(line.rstrip(b"\n") for line in f)
    return lines


def write_synthetic_with_quiet_end(folder: Path):
    """SYN_HOURS synthetic hours, then QUIET_HOURS hours in which only the two quiet repositories get
    events.  Returns (synthetic lines, quiet lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    syn_lines = []
    for h in range(SYN_HOURS):
        hour = SYN_START + timedelta(hours=h)
        lines = [e.line for e in synthetic.generate_hour(SYN_SEED, hour, SYN_EVENTS_PER_HOUR)]
        write_hour(folder, hour, lines)
        syn_lines.extend(lines)
    a, b = quiet_repos()
    quiet_lines = []
    for q in range(QUIET_HOURS):
        hour = SYN_START + timedelta(hours=SYN_HOURS + q)
        lines = []
        for n in range(6):      # alpha: 6 stars an hour, beta: 2 (and one repeated id)
            lines.append(event_line("WatchEvent", f"q{q}-a{n}", a, iso(hour + timedelta(minutes=5 + 9 * n))))
        for n in range(2):
            lines.append(event_line("WatchEvent", f"q{q}-b{n}", b, iso(hour + timedelta(minutes=7 + 20 * n))))
        lines.append(lines[-1])
        lines.append(event_line("PushEvent", f"q{q}-push", b, iso(hour + timedelta(minutes=50))))
        lines.append(event_line("PullRequestEvent", f"q{q}-pr", a, iso(hour + timedelta(minutes=55)), number=q + 1))
        write_hour(folder, hour, lines)
        quiet_lines.extend(lines)
    return syn_lines, quiet_lines


# --------------------------------------------------------------------------------- the processes

def clean_env():
    """This environment without the variables that would change the CLIs' defaults (e.g. an
    ARCHIVE_STREAMER_HOURS left set would replay only part of the folder)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ARCHIVE_STREAMER_", "DASHBOARD_", "GHARCHIVE_", "KAFKA_BOOTSTRAP"))}


class Dashboard:
    def __init__(self, proc, url, log_path):
        self.proc, self.url, self.log_path = proc, url, log_path

    def get(self, path):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never via a proxy
        with opener.open(self.url + path, timeout=10) as r:
            return json.loads(r.read())


@contextmanager
def dashboard(kafka, topic, source_topic, group, log_dir: Path, *extra):
    """`python -m dashboard` as a subprocess on a free port; yields a Dashboard once it answers."""
    log_path = log_dir / "dashboard.log"
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--kafka", kafka, "--topic", topic,
                                 "--source-topic", source_topic, "--group", group, "--port", str(port),
                                 *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    d = Dashboard(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"dashboard exited: {log_path.read_text()}"
            try:
                d.get("/api/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"dashboard did not answer: {log_path.read_text()}") from None
                time.sleep(0.2)
        yield d
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def start_replay(kafka, folder, topic, log_dir: Path, *extra):
    """The real CLI, as a subprocess; its stderr (summary) goes to a log file."""
    log_path = log_dir / "archive_streamer.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "archive_streamer", "--source", str(folder),
                             "--kafka", kafka, "--topic", topic, "--partitions", str(SOURCE_PARTITIONS),
                             "--no-progress", *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=clean_env())
    log.close()
    proc.log_path = log_path
    return proc


def finish_replay(proc, timeout_s=120):
    try:
        rc = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"archive_streamer did not finish: {proc.log_path.read_text()[-3000:]}") from None
    out = proc.log_path.read_text()
    assert rc == 0, out[-3000:]
    m = re.search(r"^archive-streamer: sent (\d+) events", out, re.M)
    assert m, out[-3000:]
    return int(m.group(1))


def start_workers(workers, source, sink, app_id, names=("w1", "w2")):
    return [workers.start("star_leaders", source, sink, name, app_id, *FAST, cwd=ROOT) for name in names]


def both_assigned(kafka, app_id, source, names=("w1", "w2")):
    """{client id: source partitions} once every named worker owns a source partition, else None."""
    owned = {cid: sorted(p for t, p in tps if t == source)
             for cid, tps in group_assignments(kafka, app_id).items()}
    if all(owned.get(f"{app_id}-{n}") for n in names):
        return owned
    return None


def source_progress(kafka, group, topic):
    """(committed offsets, end offsets) of `group` on every partition of `topic`."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient
    c = Consumer({"bootstrap.servers": kafka, "group.id": f"e2e-probe-{uuid.uuid4().hex}"})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()
    admin = AdminClient({"bootstrap.servers": kafka})
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in parts])
    res = admin.list_consumer_group_offsets([req])[group].result(20)
    committed = {tp.partition: tp.offset for tp in res.topic_partitions}
    return committed, ends


def wait_until_consumed(kafka, group, topic, timeout_s, procs=()):
    """Until the group's committed offsets on `topic` reach its end offsets."""
    deadline = time.monotonic() + timeout_s
    while True:
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}: {p.log_path.read_text()[-3000:]}"
        committed, ends = source_progress(kafka, group, topic)
        if all(committed.get(p, -1) >= end for p, end in ends.items()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} did not consume {topic} within {timeout_s} s: "
                                 f"committed {committed}, end offsets {ends}")
        time.sleep(0.3)


def wait_for_leaders(dash, expected, timeout_s, procs=()):
    """Polls /api/leaders until comparable(api) == comparable(expected); on timeout fails showing both."""
    want = comparable(expected)
    deadline = time.monotonic() + timeout_s
    got = None
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}: {p.log_path.read_text()[-3000:]}"
        api = dash.get("/api/leaders")
        got = comparable({"event_time": api["event_time"],
                          "leaders": [{"repo": ld["repo"], "stars": ld["stars"], "hourly": ld["hourly"]}
                                      for ld in api["leaders"]]})
        if got == want:
            return api
        time.sleep(0.5)
    raise AssertionError("dashboard never matched the batch reference\n"
                         f"api:       {json.dumps(got)}\nreference: {json.dumps(want)}\n"
                         + describe_difference(got, want))


def describe_difference(got, want):
    if got is None:
        return ""
    lines = [f"event hour api {got['event_hour']} reference {want['event_hour']}"]
    for i in range(max(len(got["leaders"]), len(want["leaders"]))):
        g = got["leaders"][i] if i < len(got["leaders"]) else None
        w = want["leaders"][i] if i < len(want["leaders"]) else None
        mark = "  " if g == w else "!="
        lines.append(f"{mark} #{i + 1} api {g and (g['repo'], g['stars'])} reference {w and (w['repo'], w['stars'])}")
    return "\n".join(lines)


def wait_for_takeover(w1, timeout_s=60):
    """Waits until w1's last rebalance gave it every partition.  The leaderboard can be exact before
    that: when the others had done all the input before they left, w1 may still be restoring their state
    when the test looks."""
    def owns_all():
        log = w1.log_path.read_text()
        last = log[log.rindex("w1: revoking"):]
        return re.search(r"w1: assigned \S+-repartition \[0, 1, 2, 3\]; \S+ \[0, 1, 2, 3\]", last)
    try:
        wait_for(owns_all, timeout_s, "w1 to own every partition after its last rebalance")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{w1.log_path.read_text()[-3000:]}") from None


def assert_clean_logs(procs):
    for p in procs:
        log = p.log_path.read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "dead letter from" not in log, log[-3000:]
        assert not re.search(r"dead letters [1-9]", log), log[-3000:]


# ------------------------------------------------------------------------------------------ tests

@pytest.fixture
def stack(kafka, topic_name, workers, tmp_path):
    """Runs the stack; the test body gets a function (folder, expected, **kw) -> api."""
    def run(folder, expected, *, kill_midway=False, shrink_midway=False, expect_sent=None, timeout_s=120):
        source, sink, app_id = topic_name("e2e-gharchive"), topic_name("e2e-leaderboard"), topic_name("e2e-app")
        names = ("w1", "w2", "w3") if shrink_midway else ("w1", "w2")
        procs = start_workers(workers, source, sink, app_id, names)
        at_kill = {}
        with dashboard(kafka, sink, source, app_id, tmp_path) as dash:
            replay = start_replay(kafka, folder, source, tmp_path, "--speedup", "0")
            try:
                assignment = wait_for(lambda: both_assigned(kafka, app_id, source, names), 90,
                                      "every worker to own source partitions")
                if shrink_midway:       # machida shrink --count 2: w2 and w3 checkpoint, leave and exit 0
                    wait_for(lambda: sum(max(0, c) for c in source_progress(kafka, app_id, source)[0].values())
                             >= KILL_AFTER, 90, f"the group to commit {KILL_AFTER} source offsets")
                    done = subprocess.run([sys.executable, "-m", "wallaroo.runtime.cli", "shrink", "--count", "2",
                                           "--application-id", app_id, "--bootstrap-servers", kafka],
                                          capture_output=True, text=True, timeout=180)
                    assert done.returncode == 0 and "w2, w3 left" in done.stdout, done.stdout + done.stderr
                    at_kill["replay_running"] = replay.poll() is None
                    for proc in procs[1:]:
                        assert proc.wait(60) == 0, proc.log_path.read_text()[-3000:]
                if kill_midway:
                    mine = assignment[f"{app_id}-w2"]

                    def w2_committed():     # about a fifth of the synthetic input of its partitions
                        committed, _ = source_progress(kafka, app_id, source)
                        return sum(max(0, committed.get(p, -1)) for p in mine) >= KILL_AFTER
                    wait_for(w2_committed, 90, f"w2 to commit {KILL_AFTER} offsets on its partitions")
                    procs[1].send_signal(signal.SIGKILL)
                    procs[1].wait(10)
                    at_kill["replay_running"] = replay.poll() is None
                    at_kill["committed"] = {p: source_progress(kafka, app_id, source)[0].get(p, -1) for p in mine}
                sent = finish_replay(replay)
            finally:
                if replay.poll() is None:
                    replay.kill()
                    replay.wait(10)
            if expect_sent is not None:
                assert sent == expect_sent
            live = procs[:1] if kill_midway or shrink_midway else procs
            if kill_midway:     # w2 had committed some of its input, and had some left to do
                ends = source_progress(kafka, app_id, source)[1]
                at_kill["ends"] = {p: ends[p] for p in at_kill["committed"]}
                assert any(0 < c < ends[p] for p, c in at_kill["committed"].items()), at_kill
            wait_until_consumed(kafka, app_id, source, timeout_s, live)
            api = wait_for_leaders(dash, expected, timeout_s, live)
            # the dashboard follows the right group: its lag comes down to 0
            health = wait_for(lambda: (h := dash.get("/api/health"))["consumer_lag"] == 0 and h, 20,
                              "the dashboard to report a consumer lag of 0")
            assert health["kafka_connected"] and health["group"] == app_id
        assert_clean_logs(live)
        return {"api": api, "assignment": assignment, "procs": procs, "health": health, "app_id": app_id,
                "at_kill": at_kill, "sink": sink}
    return run


@pytest.fixture(scope="module")
def synthetic_days(tmp_path_factory):
    """The synthetic folder (written once per module) and its batch reference, checked to be a case
    where idle partitions matter."""
    folder = tmp_path_factory.mktemp("e2e") / "hours"
    syn_lines, quiet_lines = write_synthetic_with_quiet_end(folder)
    lines = read_folder(folder)
    assert len(lines) == len(syn_lines) + len(quiet_lines)
    expected = batch_leaders(lines)
    assert len(expected["leaders"]) == app_config.TOP_N

    # Idle partitions, derived from the data: in the final hours only two repositories get events.
    last_synthetic_ms = max(event_time_ms(line) for line in syn_lines)
    final = [json.loads(line) for line in lines if event_time_ms(line) > last_synthetic_ms]
    active = {partition_of(e["repo"]["name"]) for e in final}
    assert len(final) == len(quiet_lines) and len(active) == 2, active
    assert app_config.PARTITION_COUNT - len(active) == 30
    assert len({p % SOURCE_PARTITIONS for p in active}) == 1    # 3 of 4 repartition partitions idle too
    # The leaders mix both: repos of idle partitions, whose windows only watermarks can slide ...
    idle_leaders = [ld for ld in expected["leaders"] if partition_of(ld["repo"]) not in active]
    assert len(idle_leaders) >= 5 and any(partition_of(ld["repo"]) in active for ld in expected["leaders"])
    # ... and a stream whose idle partitions kept the window of the last synthetic hour would differ.
    stale = batch_leaders(syn_lines)["leaders"] + batch_leaders(quiet_lines)["leaders"]
    stale = {"event_time": expected["event_time"],
             "leaders": sorted(stale, key=lambda d: (-d["stars"], d["repo"]))[:app_config.TOP_N]}
    assert comparable(stale)["leaders"] != comparable(expected)["leaders"]
    return folder, lines, expected


def test_synthetic_days_with_idle_partitions_match_batch(synthetic_days, stack):
    folder, lines, expected = synthetic_days
    run = stack(folder, expected, expect_sent=len(lines))
    assert run["api"]["leaders"], "no leaders"
    for ld in run["api"]["leaders"]:
        assert len(ld["hourly"]) == 24 and sum(ld["hourly"]) == ld["stars"]
    alpha = next(ld for ld in run["api"]["leaders"] if ld["repo"] == quiet_repos()[0])
    assert [e["type"] for e in alpha["recent_events"]] == ["PullRequestEvent"] * 3
    assert [e["number"] for e in alpha["recent_events"]] == [QUIET_HOURS, QUIET_HOURS - 1, QUIET_HOURS - 2]


@pytest.mark.skipif(not REAL_FOLDER.exists(), reason="shared/data not present")
def test_real_hour_matches_batch(stack):
    lines = read_folder(REAL_FOLDER)
    expected = batch_leaders(lines)
    assert expected["event_time"].startswith("2015-01-01T12") and len(expected["leaders"]) == app_config.TOP_N
    run = stack(REAL_FOLDER, expected, expect_sent=8273)
    assert run["api"]["leaders"]


def test_worker_killed_midway_keeps_the_result_exact(synthetic_days, stack):
    """SIGKILL one of the two workers in the middle of the replay: the survivor takes over its
    partitions (state from the changelog, input from the committed offsets) and the result is still
    exactly the batch result."""
    folder, lines, expected = synthetic_days
    run = stack(folder, expected, kill_midway=True, expect_sent=len(lines))
    w1, w2 = run["procs"]
    assert w2.returncode == -signal.SIGKILL
    print("at the kill:", run["at_kill"])
    # After its last rebalance (the one the kill caused) w1 owns every partition.  (Whether it restores
    # state objects of w2's partitions depends on whether w2 had checkpointed any: it may have spent
    # its few seconds on source records alone.)
    wait_for_takeover(w1)


def test_shrink_three_to_one_midway_keeps_the_result_exact(synthetic_days, stack, kafka):
    """`machida shrink --count 2` while three workers replay: w2 and w3 checkpoint, leave and exit 0,
    w1 takes over their partitions and state, the leaderboard is exactly the batch result, and no
    board was emitted twice (a state partition emits only when its board changes)."""
    from conftest import read_topic
    folder, lines, expected = synthetic_days
    run = stack(folder, expected, shrink_midway=True, expect_sent=len(lines))
    print("at the shrink:", run["at_kill"])
    assert [p.returncode for p in run["procs"][1:]] == [0, 0]
    wait_for_takeover(run["procs"][0])
    boards = {}
    for m in read_topic(kafka, run["sink"], idle_s=2):
        previous = boards.get(m.key())
        assert m.value() != previous, f"board of {m.key()!r} emitted twice in a row: {m.value()[:200]!r}"
        boards[m.key()] = m.value()
