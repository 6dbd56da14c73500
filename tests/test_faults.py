"""What a deployment does to the engine: the broker restarting under the workers, a cluster node dying,
workers racing their own topic creation, the group growing and shrinking mid-stream (the cluster
losing a node is in test_kafka_cluster.py, which shares its 3-node cluster). The broker
restarts run the real pipeline (archive_streamer, star_leaders, the dashboard) against the batch
reference; the others run word count (tests/apps/wordcount.py) and check every output exactly once and
the exact final state."""
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from confluent_kafka import Consumer, TopicPartition

from archive_streamer import synthetic
from conftest import ARTIFACTS, Workers, create_topic, read_topic, wait_for
from kafka_cluster import KafkaCluster
from reference import TOP_N, batch_leaders
from test_archive_streamer_helpers import write_hour
from test_end_to_end import (SOURCE_PARTITIONS, assert_clean_logs, both_assigned, dashboard, finish_replay,
                             read_folder, start_replay, start_workers, wait_for_leaders, wait_until_consumed)
from test_wallaroo_kafka import FAST, assert_exactly_once, produce, word_lines

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(600)]


def committed_total(bootstrap, group, topic, partitions):
    """Sum of the group's committed offsets on `topic` (-1 while Kafka does not answer)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)
        return sum(max(tp.offset, 0) for tp in tps)
    except Exception:  # noqa: BLE001 - the broker is down: no answer is an answer
        return -1
    finally:
        c.close()


def diagnose(bootstrap, group, topic_list, partitions):
    """Committed offset, last stable offset and high watermark per partition (for a failure message)."""
    out = {}
    for iso in ("read_committed", "read_uncommitted"):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": iso})
        for t in topic_list:
            for p in range(partitions):
                tp = TopicPartition(t, p)
                try:
                    out.setdefault(f"{t}[{p}]", {})[iso] = c.get_watermark_offsets(tp, timeout=10)[1]
                    if iso == "read_committed":
                        out[f"{t}[{p}]"]["committed"] = c.committed([tp], timeout=10)[0].offset
                except Exception as e:  # noqa: BLE001
                    out.setdefault(f"{t}[{p}]", {})[iso] = str(e)
        c.close()
    return out


def as_stored(bootstrap, topic, lines):
    """The input as the source topic holds it. Exactly-once is the engine's promise about the records
    in its source; the test's own producer, retrying across a broker restart, is not part of it (it is
    idempotent, but the count of every line is checked here so a doubled input is named, not blamed)."""
    stored = [m.value() for m in read_topic(bootstrap, topic, expect=len(lines), timeout_s=60)]
    assert sorted(set(stored)) == sorted(set(lines)), "input lines are missing from the source topic"
    if len(stored) != len(lines):
        print(f"note: the source holds {len(stored)} records for {len(lines)} lines produced")
    return stored


def feeder(bootstrap, topic, lines, rate):
    t = threading.Thread(target=produce, args=(bootstrap, topic, lines), kwargs={"rate": rate}, daemon=True)
    t.start()
    return t


def record(name, data):
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(data, indent=1))


# The real pipeline through two broker outages: a day of synthetic hours replayed at a pace that
# takes about a minute, so both outages fall inside the replay with input still to come.
RESTART_HOURS = 24
RESTART_EVENTS_PER_HOUR = 1200
RESTART_SPEEDUP = 1800            # 24 archive hours in ~48 s
OUTAGES = ((6, 0.15), (8, 0.4))   # (seconds stopped, share of the input committed before the stop)


@pytest.fixture(scope="module")
def restart_day(tmp_path_factory):
    """The hour files (written once) and their batch reference (tests/reference.py)."""
    folder = tmp_path_factory.mktemp("restart") / "hours"
    start = datetime(2015, 3, 2, tzinfo=timezone.utc)
    for h in range(RESTART_HOURS):
        hour = start + timedelta(hours=h)
        write_hour(folder, hour, [e.line for e in synthetic.generate_hour(5, hour, RESTART_EVENTS_PER_HOUR)])
    lines = read_folder(folder)
    expected = batch_leaders(lines)
    assert len(expected["leaders"]) == TOP_N
    return folder, lines, expected


def test_broker_restarts_twice_under_the_real_pipeline(restart_day, tmp_path):
    """archive_streamer replaying hour files, two star_leaders workers and the dashboard on a private
    single-node broker, stopped for 6 s and then for 8 s mid-replay: none is restarted; the streamer
    exits 0 having written every event once; the dashboard's read_committed leaderboard equals the
    batch reference and its health recovers; no leaderboard record is doubled."""
    folder, lines, expected = restart_day
    with KafkaCluster(tmp_path / "kafka", nodes=1) as cluster:
        cluster.start()
        bootstrap = cluster.bootstrap
        source, sink, app_id = "gharchive", "leaderboard", "restart"
        create_topic(bootstrap, source, SOURCE_PARTITIONS)
        workers = Workers(bootstrap, tmp_path)
        try:
            procs = start_workers(workers, source, sink, app_id)
            with dashboard(bootstrap, sink, source, app_id, tmp_path) as dash:
                wait_for(lambda: both_assigned(bootstrap, app_id, source), 90, "both workers to own partitions")
                replay = start_replay(bootstrap, folder, source, tmp_path, "--speedup", str(RESTART_SPEEDUP))
                recoveries, all_back, health_back = [], [], []
                try:
                    for outage_s, share in OUTAGES:
                        wait_for(lambda: committed_total(bootstrap, app_id, source, SOURCE_PARTITIONS)
                                 >= share * len(lines), 120, f"{share:.0%} of the input committed")
                        assert replay.poll() is None, "the replay ended before the outage"
                        cluster.stop(1)
                        stopped = time.monotonic()
                        wait_for(lambda: dash_health(dash)["kafka_connected"] is False, outage_s + 30,
                                 "the dashboard to report Kafka unreachable")
                        time.sleep(max(0.0, stopped + outage_s - time.monotonic()))
                        cluster.start(1)            # returns once the broker answers
                        sampler = CommitSampler(bootstrap, app_id, source, SOURCE_PARTITIONS)
                        back = sampler.started
                        first, every = sampler.checkpoints(180)
                        recoveries.append(first)
                        all_back.append(every)
                        wait_for(lambda: dash_health(dash)["kafka_connected"], 60,
                                 "the dashboard's health to recover")
                        health_back.append(round(time.monotonic() - back, 1))
                    sent = finish_replay(replay, 300)
                finally:
                    if replay.poll() is None:
                        replay.kill()
                        replay.wait(10)
                # every event once in the source: the idempotent producer retried through both outages
                assert sent == len(lines)
                stored = [m.value() for m in read_topic(bootstrap, source, expect=len(lines), timeout_s=60)]
                assert len(stored) == len(lines) and sorted(stored) == sorted(lines), \
                    f"the source holds {len(stored)} records for {len(lines)} events"
                wait_until_consumed(bootstrap, app_id, source, 180, procs)
                wait_for_leaders(dash, expected, 120, procs)
                health = wait_for(lambda: (h := dash.get("/api/health"))["consumer_lag"] == 0 and h, 30,
                                  "the dashboard to report a consumer lag of 0")
                assert health["kafka_connected"] and health["error"] is None
                assert dash.proc.poll() is None, "the dashboard exited"
            assert [p.poll() for p in procs] == [None, None], "a worker died"
            assert_clean_logs(procs)
            assert_no_board_twice(bootstrap, sink)
            record("broker-restart-recovery.json", {"seconds_from_broker_back_to_checkpoint": recoveries,
                                                    "seconds_from_broker_back_to_every_partition_checkpointed": all_back,
                                                    "seconds_from_broker_back_to_dashboard_health": health_back})
            print(f"broker back -> first new checkpoint: {recoveries} s; -> every partition checkpointed: "
                  f"{all_back} s; -> dashboard health: {health_back} s")
        finally:
            workers.stop_all()


def committed_offsets(bootstrap, group, topic, partitions):
    """The group's committed offset of each partition of `topic` (None while Kafka does not answer)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        return [tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=5)]
    except Exception:  # noqa: BLE001 - the broker is down
        return None
    finally:
        c.close()


class CommitSampler:
    """Reads the group's committed offsets every 0.2 s, from its creation (just after the broker came
    back) on. Its first read is the state the outage left (nothing commits while the broker is down;
    a worker needs longer than that read to rejoin and commit), so the first checkpoint after the
    outage is the first read past it. (A baseline read before the stop would miss checkpoints
    committed while the broker shut down.)"""

    def __init__(self, bootstrap, group, topic, partitions):
        self.started = time.monotonic()
        self.samples = []          # (monotonic time the read started, offsets)
        self.partitions = partitions
        self._args = (bootstrap, group, topic, partitions)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            t = time.monotonic()
            offsets = committed_offsets(*self._args)
            if offsets is not None:
                self.samples.append((t, offsets))
            self._stop.wait(0.2)

    def checkpoints(self, timeout_s):
        """(seconds to the first partition's, seconds to every partition's) first commit."""
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.samples:
                    base = self.samples[0][1]
                    firsts = [next((t for t, o in self.samples if o[p] > base[p]), None)
                              for p in range(self.partitions)]
                    if all(f is not None for f in firsts):
                        return round(min(firsts) - self.started, 1), round(max(firsts) - self.started, 1)
                time.sleep(0.1)
            raise AssertionError(f"not every partition checkpointed within {timeout_s} s of the broker's return")
        finally:
            self._stop.set()
            self._thread.join(15)


def dash_health(dash):
    """/api/health, failing with the dashboard's exit status and log if it is gone."""
    if dash.proc.poll() is not None:
        raise AssertionError(f"the dashboard exited with {dash.proc.returncode}:\n"
                             f"{dash.log_path.read_text()[-3000:]}")
    return dash.get("/api/health")


def assert_no_board_twice(bootstrap, sink):
    """A state partition emits its board only when it changed, so the same board twice in a row in
    the read_committed sink is a record written twice."""
    boards = {}
    for m in read_topic(bootstrap, sink, idle_s=2):
        assert m.value() != boards.get(m.key()), f"board of {m.key()!r} emitted twice in a row"
        boards[m.key()] = m.value()
    assert boards, "no leaderboard records"


def test_workers_started_as_their_topics_are_created_never_crash(kafka, topic_name, workers):
    """Two workers of a fresh application start at once, on a broker busy with the suite's other
    topics: they race to create the internal topics and restore from changelogs whose leaders may not
    be elected yet. Repeated: none crashes, and each round is exact."""
    for round_ in range(4):
        src, sink, app_id = topic_name("race-in"), topic_name("race-out"), topic_name("race")
        create_topic(kafka, src, 4)
        lines = word_lines(400, seed=20 + round_)
        produce(kafka, src, lines)
        procs = [workers.start("wordcount", src, sink, name, app_id, *FAST) for name in ("w1", "w2")]
        assert_exactly_once(kafka, sink, app_id, lines)
        assert [p.poll() for p in procs] == [None, None], [p.log_path.read_text()[-2000:] for p in procs]
        for p in procs:
            assert "Traceback" not in p.log_path.read_text()
            p.kill()
            p.wait(10)


def wait_for_log(proc, text, timeout_s=60.0):
    """Poll a worker's log closely until `text` appears (a kill can then land inside what it marks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in proc.log_path.read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"{text!r} not in {proc.log_path} after {timeout_s} s")


def test_group_grows_and_shrinks_mid_stream(kafka, topic_name, workers):
    """1 -> 2 -> 3 -> 1 workers while input flows, the third killed -9 while it restores state."""
    src, sink, app_id = topic_name("scale-in"), topic_name("scale-out"), topic_name("scale")
    create_topic(kafka, src, 6)
    lines = word_lines(30_000, seed=21)
    feed = feeder(kafka, src, lines, rate=1000)

    def progress(n):
        wait_for(lambda: committed_total(kafka, app_id, src, 6) >= n, 120, f"{n} source records committed")
    w1 = workers.start("wordcount", src, sink, "w1", app_id, *FAST)
    progress(3000)
    w2 = workers.start("wordcount", src, sink, "w2", app_id, *FAST)
    progress(8000)
    w3 = workers.start("wordcount", src, sink, "w3", app_id, *FAST)
    wait_for_log(w3, "restoring state")
    w3.kill()                          # -9 inside its restore
    w3.wait(10)
    w3 = workers.start("wordcount", src, sink, "w3", app_id, *FAST)
    progress(15000)
    for w in (w2, w3):                 # back to one: w2 leaves cleanly, w3 is killed
        w.terminate() if w is w2 else w.kill()
        w.wait(60)
    feed.join(300)
    assert_exactly_once(kafka, sink, app_id, lines)
    assert w1.poll() is None
