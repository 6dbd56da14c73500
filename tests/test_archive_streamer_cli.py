"""The CLI end to end on the real broker: real archive data, synthetic replay, SIGTERM, bad flags."""
import gzip
import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME
from confluent_kafka.admin import AdminClient, ConfigResource

from archive_streamer import config, synthetic
from archive_streamer.reader import created_at_ms
from conftest import REAL_HOUR, ROOT, SHARED_DATA, read_topic
from test_archive_streamer_helpers import run_cli, sent_count

SAMPLE_2021 = SHARED_DATA / "gharchive-2021-sample"


def valid_lines(path) -> list[bytes]:
    """Lines that are events (objects with created_at and repo), counted with the stdlib, not our reader."""
    out = []
    with gzip.open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if isinstance(d, dict) and isinstance(d.get("created_at"), str) and \
                    isinstance(d.get("repo"), dict) and d["repo"].get("name"):
                out.append(line)
    return out


@pytest.mark.kafka
@pytest.mark.skipif(not REAL_HOUR.exists(), reason="shared/data not present")
def test_real_hour_from_folder(kafka, topic_name):
    expected = valid_lines(REAL_HOUR)
    assert len(expected) == 8273
    topic = topic_name("as-real")
    r = run_cli("--source", str(REAL_HOUR.parent), "--speedup", "0", "--kafka", kafka,
                "--topic", topic, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sent_count(r.stderr) == 8273 and "skipped 0" in r.stderr
    msgs = read_topic(kafka, topic, expect=8273)
    assert Counter(m.value() for m in msgs) == Counter(expected)     # the original bytes
    assert sum(b'"type":"WatchEvent"' in m.value() for m in msgs) == 994
    for m in msgs[:500]:
        d = json.loads(m.value())
        assert m.key() == d["repo"]["name"].encode()
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, created_at_ms(d["created_at"]))
    # the topic was created with the defaults, and keeps its years-old records
    admin = AdminClient({"bootstrap.servers": kafka})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == config.DEFAULT_PARTITIONS
    res = ConfigResource("topic", topic)
    cfg = admin.describe_configs([res])[res].result(30)
    assert cfg["retention.ms"].value == "-1"


@pytest.mark.kafka
@pytest.mark.skipif(not SAMPLE_2021.exists(), reason="shared/data not present")
def test_2021_sample_replays_in_time_order(kafka, topic_name):
    files = sorted(SAMPLE_2021.glob("*.json.gz"), key=lambda p: int(p.name.split("-")[3].split(".")[0]))
    expected = [line for f in files for line in valid_lines(f)]
    topic = topic_name("as-2021")
    r = run_cli("--source", str(SAMPLE_2021), "--speedup", "0", "--kafka", kafka, "--topic", topic,
                "--partitions", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{len(files)} of {len(files)} replayed" in r.stderr
    msgs = read_topic(kafka, topic, expect=len(expected))
    assert [m.value() for m in msgs] == expected          # one partition: replay order, hour by hour
    hours = [m.timestamp()[1] // 3_600_000 for m in msgs]
    assert hours == sorted(hours)


@pytest.mark.kafka
def test_synthetic_replay_is_the_generator_output(kafka, topic_name):
    topic = topic_name("as-syn")
    r = run_cli("--source", "synthetic", "--seed", "11", "--start", "2019-06-01-22", "--hours", "3",
                "--events-per-hour", "400", "--speedup", "0", "--kafka", kafka, "--topic", topic,
                "--partitions", "2")
    assert r.returncode == 0, r.stderr
    expected = list(synthetic.generate_events(11, "2019-06-01-22", 3, 400))
    assert sent_count(r.stderr) == 1200
    msgs = read_topic(kafka, topic, expect=1200)
    assert Counter((m.key(), m.value(), m.timestamp()[1]) for m in msgs) == \
        Counter((e.repo.encode(), e.line, e.ts_ms) for e in expected)


@pytest.mark.kafka
def test_environment_variables_configure_the_run(kafka, topic_name):
    topic = topic_name("as-env")
    r = run_cli("--no-progress", env={"ARCHIVE_STREAMER_SOURCE": "synthetic", "ARCHIVE_STREAMER_HOURS": "2",
                                      "ARCHIVE_STREAMER_EVENTS_PER_HOUR": "50", "ARCHIVE_STREAMER_SPEEDUP": "0",
                                      "ARCHIVE_STREAMER_TOPIC": topic, "KAFKA_BOOTSTRAP": kafka})
    assert r.returncode == 0, r.stderr
    assert sent_count(r.stderr) == 100 and f"to {topic} at {kafka}" in r.stderr
    assert len(read_topic(kafka, topic, expect=100)) == 100


@pytest.mark.kafka
def test_sigterm_flushes_and_reports_what_was_sent(kafka, topic_name):
    topic = topic_name("as-term")
    # 3 hours of 2,000 events at speedup 720: 5 s of wall time per hour, 15 s in all.
    args = ["--source", "synthetic", "--seed", "4", "--start", "2015-02-01-0", "--hours", "3",
            "--events-per-hour", "2000", "--speedup", "720", "--kafka", kafka, "--topic", topic,
            "--no-progress"]
    p = subprocess.Popen([sys.executable, "-m", "archive_streamer", *args], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in p.stderr:                 # wait until it is replaying
            seen.append(line)
            if "hour 2015-02-01-0" in line:
                break
        time.sleep(3)
        p.send_signal(signal.SIGTERM)
        _, rest = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    stderr = "".join(seen) + rest
    assert p.returncode == 0, stderr
    assert "stopped by SIGTERM during hour 2015-02-01-" in stderr
    n = sent_count(stderr)
    assert 0 < n < 6000
    msgs = read_topic(kafka, topic, expect=n)
    assert len(msgs) == n
    # what was sent is exactly the first n events of the replay
    first = list(synthetic.generate_events(4, "2015-02-01-0", 3, 2000))[:n]
    assert Counter(m.value() for m in msgs) == Counter(e.line for e in first)


@pytest.mark.parametrize("args, message", [
    (["--start", "2015-01-01"], "not an archive hour '2015-01-01'"),
    (["--start", "2015-01-01-24"], "hour must be 0..23"),
    (["--end", "2015-01-01-x"], "not an archive hour"),
    (["--hours", "0"], "invalid positive integer value"),
    (["--hours", "2", "--end", "2015-01-02-0"], "not allowed with argument"),
    (["--start", "2015-01-02-0", "--end", "2015-01-01-0"], "is before --start"),
    (["--speedup", "-1"], "invalid speedup"),
    (["--source", "/no/such/folder"], "neither a URL, a folder"),
    (["--source", "synthetic", "--start", "2099-01-01-0"], "is in the future"),
])
def test_bad_flags_exit_2_with_one_line(args, message):
    r = run_cli(*args, "--kafka", "127.0.0.1:1", timeout=30)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("archive-streamer: error:") and message in last, r.stderr


def test_unreachable_kafka_exits_3_after_a_bounded_wait():
    with socket.socket() as s:                  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    r = run_cli("--source", "synthetic", "--kafka", f"127.0.0.1:{port}", "--kafka-wait", "2", timeout=60)
    assert r.returncode == 3
    assert time.monotonic() - t < 30
    lines = r.stderr.strip().splitlines()
    assert lines == [f"archive-streamer: error: Kafka at 127.0.0.1:{port} did not answer within 2 s "
                     f"(Failed to get metadata: Local: Broker transport failure)"] or \
        (len(lines) == 1 and "did not answer within 2 s" in lines[0]), r.stderr


def test_console_script_and_help():
    exe = ROOT / ".venv" / "bin" / "archive-streamer"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "archive_streamer"]
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for flag in ("--source", "--start", "--hours", "--end", "--speedup", "--kafka", "--topic", "--seed",
                 "--cache-dir", "--partitions", "--events-per-hour", "--no-progress"):
        assert flag in r.stdout
