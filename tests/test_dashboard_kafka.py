"""The dashboard against the real local broker: transactional input, SSE, topic appearing late,
health numbers, and the real `python -m dashboard` process."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ROOT, create_topic, free_port, wait_for
from dashboard.config import Config
from test_dashboard_helpers import SSE, expected_top, get_json, leader, produce_txn, record, serve

pytestmark = pytest.mark.kafka


def cfg(kafka, topic, **kw) -> Config:
    kw.setdefault("source_topic", f"no-source-{uuid.uuid4().hex[:8]}")
    kw.setdefault("group", f"no-group-{uuid.uuid4().hex[:8]}")
    return Config(kafka=kafka, topic=topic, health_interval=0.3, **kw)


def board(partition: int, n: int, base: int) -> list[dict]:
    return [leader(f"p{partition}/repo-{i}", base - 3 * i,
                   hourly=[i] * 23 + [base - 3 * i],
                   events=[{"type": "ForkEvent", "actor": f"u{i}", "created_at": "2015-01-01T12:00:00Z",
                            "url": f"https://github.com/u{i}/repo-{i}", "name": f"u{i}/repo-{i}"}])
            for i in range(n)]


def test_committed_transactions_become_the_global_top10(kafka, topic_name):
    topic = topic_name("dash-lb")
    create_topic(kafka, topic, partitions=2)
    started = time.time()
    boards = {p: board(p, 8, 100 + 2 * p) for p in range(4)}
    boards[1].append(leader("Zz/tie", 100))     # ties with p0/repo-0 and p2/... at 100 stars
    boards[3].append(leader("aa/tie", 100))
    produce_txn(kafka, topic, [(p, record(p, f"2015-01-01T1{p}:59:59Z", ls)) for p, ls in boards.items()],
                kafka_partitions=2)
    # an aborted transaction must never show: a huge leader for state partition 2 (Kafka partition 0)
    produce_txn(kafka, topic, [(2, record(2, "2015-01-02T00:59:59Z", [leader("aborted/repo", 10 ** 6)]))],
                abort=True, kafka_partitions=2)
    # then a committed replacement of partition 0 (also Kafka partition 0, after the aborted records)
    # and a malformed record
    boards[0] = [leader("p0/new", 101), leader("p0/newer", 1)]
    produce_txn(kafka, topic, [(0, record(0, "2015-01-01T13:30:00Z", boards[0])), (0, b"{not json")],
                kafka_partitions=2)

    expected = {"event_time": "2015-01-01T13:59:59Z", "leaders": expected_top(boards)}
    assert [l["repo"] for l in expected["leaders"]] == [
        "p3/repo-0", "p2/repo-0", "p3/repo-1", "p1/repo-0", "p0/new", "p2/repo-1",
        "Zz/tie", "aa/tie", "p3/repo-2", "p1/repo-1"]           # ties at 101 and 100: plain string order
    with serve(cfg(kafka, topic)) as (url, app):
        got = wait_for(lambda: (lambda d: d if any(l["repo"] == "p0/new" for l in d["leaders"]) else None)(
            get_json(url + "/api/leaders")), what="the committed replacement record")
        assert got == expected
        assert all(l["repo"] != "aborted/repo" for l in got["leaders"])
        health = wait_for(lambda: (lambda h: h if h["malformed_records"] == 1 else None)(
            get_json(url + "/api/health")), what="malformed record count")
        assert health["records"] == 5
        assert health["consumer_state"] == "consuming"
        assert health["kafka_connected"] is True and health["topic_exists"] is True
        assert health["source_topic_exists"] is False and health["consumer_lag"] is None
        # last_update = when the newest record was written (its Kafka timestamp), at second precision
        written = datetime.fromisoformat(health["last_update"]).timestamp()
        assert int(started) <= written <= time.time()


def test_stream_pushes_updates_to_concurrent_clients(kafka, topic_name):
    topic = topic_name("dash-sse")
    create_topic(kafka, topic)
    produce_txn(kafka, topic, [(0, record(0, "2015-01-01T10:59:59Z", [leader("first/repo", 5)]))])
    with serve(cfg(kafka, topic)) as (url, app):
        wait_for(lambda: get_json(url + "/api/leaders")["leaders"], what="first leaders")
        a, b = SSE(url), SSE(url)
        try:
            for s in (a, b):
                assert s.resp.status == 200
                assert s.resp.getheader("Content-Type").startswith("text/event-stream")
                first = s.next_leaders()
                assert [l["repo"] for l in first["leaders"]] == ["first/repo"]
                assert s.retry == 2000
            produce_txn(kafka, topic, [(1, record(1, "2015-01-01T11:59:59Z", [leader("second/repo", 9)]))])
            for s in (a, b):      # both open streams get the change, without polling
                doc = s.next_leaders(lambda d: len(d["leaders"]) == 2)
                assert doc == {"event_time": "2015-01-01T11:59:59Z",
                               "leaders": [leader("second/repo", 9), leader("first/repo", 5)]}
            # health is pushed on the stream too
            health = next(json_data for ev, json_data, _ in a.events() if ev == "health")
            assert '"kafka_connected":true' in health
        finally:
            a.close()
            b.close()


def test_stream_refuses_clients_beyond_the_cap(kafka, topic_name):
    with serve(cfg(kafka, topic_name("dash-cap"), max_streams=1)) as (url, app):
        a = SSE(url)
        try:
            assert a.resp.status == 200
            b = SSE(url)
            assert b.resp.status == 503
            b.close()
        finally:
            a.close()
        # the slot is released when the client goes away
        wait_for(lambda: (lambda s: (s.close(), s.resp.status)[1] == 200)(SSE(url)), timeout_s=30,
                 what="a free stream slot")


def test_starts_before_the_topic_exists(kafka, topic_name, admin):
    topic = topic_name("dash-late")
    with serve(cfg(kafka, topic)) as (url, app):
        h = wait_for(lambda: (lambda h: h if h["consumer_state"] == "waiting_for_topic" else None)(
            get_json(url + "/api/health")), what="waiting_for_topic")
        assert h["kafka_connected"] in (True, None)
        assert get_json(url + "/api/leaders") == {"event_time": None, "leaders": []}
        time.sleep(1.5)   # several metadata polls by both background threads
        assert topic not in admin.list_topics(timeout=10).topics, "the dashboard must not auto-create the topic"

        create_topic(kafka, topic)
        produce_txn(kafka, topic, [(0, record(0, "2015-01-01T05:59:59Z", [leader("late/repo", 3)]))])
        got = wait_for(lambda: (lambda d: d if d["leaders"] else None)(get_json(url + "/api/leaders")),
                       what="leaders after the topic appeared")
        assert got == {"event_time": "2015-01-01T05:59:59Z", "leaders": [leader("late/repo", 3)]}

        # a deleted topic takes its leaders with it, and the dashboard waits for it again
        admin.delete_topics([topic])[topic].result(30)
        wait_for(lambda: get_json(url + "/api/leaders") == {"event_time": None, "leaders": []}, timeout_s=90,
                 what="empty board after the topic was deleted")
        assert get_json(url + "/api/health")["consumer_state"] == "waiting_for_topic"


def test_starts_while_kafka_is_unreachable(topic_name):
    dead = f"127.0.0.1:{free_port()}"   # nothing listens here
    with serve(Config(kafka=dead, topic=topic_name("dash-nokafka"), health_interval=0.3)) as (url, app):
        h = wait_for(lambda: (lambda h: h if h["kafka_connected"] is False else None)(
            get_json(url + "/api/health")), what="kafka_connected false")
        assert h["consumer_state"] == "waiting_for_kafka"
        assert h["events_in_per_s"] is None and h["consumer_lag"] is None
        assert get_json(url + "/api/leaders") == {"event_time": None, "leaders": []}
        with __import__("urllib.request").request.urlopen(url + "/", timeout=10) as r:
            assert r.status == 200


class Forwarder(threading.Thread):
    """A TCP port that forwards to the broker once opened: "Kafka comes up later" for bootstrap.
    (The broker advertises 127.0.0.1:9092, so after bootstrap clients talk to it directly.)"""

    def __init__(self, port: int, target: tuple[str, int]):
        super().__init__(daemon=True)
        self.port, self.target = port, target
        self.sock = socket.create_server(("127.0.0.1", port))

    def run(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_kafka_coming_up_after_the_dashboard(kafka, topic_name):
    topic = topic_name("dash-later")
    create_topic(kafka, topic)
    produce_txn(kafka, topic, [(0, record(0, "2015-01-01T01:59:59Z", [leader("up/later", 8)]))])
    port = free_port()
    with serve(Config(kafka=f"127.0.0.1:{port}", topic=topic, health_interval=0.3)) as (url, app):
        wait_for(lambda: get_json(url + "/api/health")["kafka_connected"] is False, what="kafka down")
        assert app.extensions["dashboard"].consumer.state == "waiting_for_kafka"
        assert get_json(url + "/api/leaders")["leaders"] == []
        host, kport = kafka.split(":")
        fwd = Forwarder(port, (host, int(kport)))
        fwd.start()
        try:
            got = wait_for(lambda: (lambda d: d if d["leaders"] else None)(get_json(url + "/api/leaders")),
                           what="leaders once Kafka answered")
            assert got["leaders"] == [leader("up/later", 8)]
            wait_for(lambda: get_json(url + "/api/health")["kafka_connected"] is True, what="kafka up")
        finally:
            fwd.close()


def test_health_rates_and_lag(kafka, topic_name):
    source, out, group = topic_name("dash-src"), topic_name("dash-out"), f"dash-grp-{uuid.uuid4().hex[:8]}"
    create_topic(kafka, source, partitions=2)
    create_topic(kafka, out)
    p = Producer({"bootstrap.servers": kafka})
    for i in range(30):
        p.produce(source, value=b"e%d" % i, partition=i % 2)          # 15 per partition
    p.flush(30)
    with serve(cfg(kafka, out, source_topic=source, group=group)) as (url, app):
        h = wait_for(lambda: (lambda h: h if h["source_topic_exists"] else None)(get_json(url + "/api/health")),
                     what="source topic seen")
        assert h["consumer_lag"] is None                      # the group has committed nothing yet
        c = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(source, 0, 5)], asynchronous=False)
        c.close()
        # partition 0: 15 - 5; partition 1 never committed: counts from its earliest offset (0)
        wait_for(lambda: get_json(url + "/api/health")["consumer_lag"] == 10 + 15, what="lag 25")
        # rates: nothing produced for a while -> 0, then growth -> positive
        wait_for(lambda: get_json(url + "/api/health")["events_in_per_s"] == 0.0, what="rate 0")
        for i in range(40):
            p.produce(source, value=b"more", partition=i % 2)
        p.flush(30)
        produce_txn(kafka, out, [(0, record(0, None, [leader("x/y", 1)]))])
        h = wait_for(lambda: (lambda h: h if h["events_in_per_s"] and h["events_out_per_s"] else None)(
            get_json(url + "/api/health")), what="positive rates")
        assert h["events_in_per_s"] > 0 and h["events_out_per_s"] > 0
        assert h["consumer_lag"] == 10 + 15 + 40
        assert h["group"] == group and h["source_topic"] == source


def test_cli_serves_and_stops_on_sigterm(kafka, topic_name):
    topic = topic_name("dash-cli")
    create_topic(kafka, topic)
    produce_txn(kafka, topic, [(7, record(7, "2015-01-01T23:59:59Z", [leader("cli/repo", 42)]))])
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "--kafka", kafka, "--topic", topic,
                             "--port", str(port), "--health-interval", "0.5"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert re.search(rf"http://127\.0\.0\.1:{port}/", line), line
        url = f"http://127.0.0.1:{port}"
        got = wait_for(lambda: (lambda d: d if d["leaders"] else None)(get_json(url + "/api/leaders")),
                       what="leaders via the CLI")
        assert got == {"event_time": "2015-01-01T23:59:59Z", "leaders": [leader("cli/repo", 42)]}
        assert get_json(url + "/api/health")["topic"] == topic
        s = SSE(url)                      # an open stream must not block shutdown
        s.next_leaders()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    assert "development server" not in err


def test_console_script_help():
    exe = Path(sys.executable).with_name("star-leaders-dashboard")
    if not exe.exists():
        pytest.skip("package not installed with its console scripts")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--kafka", "--topic", "--source-topic", "--group", "--host", "--port"):
        assert flag in out.stdout
