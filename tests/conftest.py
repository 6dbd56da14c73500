"""Shared fixtures and helpers: the real local Kafka broker (started if absent), topics, workers, ports,
waiting, browser pages and GH Archive lines."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"   # beside the checkout (CI copies shared/ there too)
REAL_HOUR = SHARED_DATA / "gharchive" / "2015-01-01-12.json.gz"
BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
CHROMIUM = "/usr/bin/chromium"          # Debian's (make test-tools); Playwright's own download is not used
ARTIFACTS = ROOT / "test-artifacts"     # screenshots (gitignored)


@pytest.fixture(scope="session")
def kafka():
    """Bootstrap address of a broker that answers; starts `kafka/kafka.sh` when none does."""
    script = ROOT / "kafka" / "kafka.sh"
    if subprocess.run([str(script), "status"], capture_output=True).returncode != 0:
        subprocess.run([str(script), "start"], check=True)
    return BOOTSTRAP


@pytest.fixture
def topic_name():
    """Makes topic names unique to one test, so tests never see each other's records."""
    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"
    return make


@pytest.fixture
def admin(kafka):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": kafka})


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict | None = None,
                 replication: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    futures = admin.create_topics([NewTopic(name, partitions, replication, config=config or {})])
    futures[name].result(30)


def read_topic(bootstrap: str, topic: str, *, committed_only: bool = True, idle_s: float = 3.0,
               expect: int | None = None, timeout_s: float = 120.0):
    """Every record of `topic` from the beginning (read_committed by default), as Message objects.

    Stops when `expect` records arrived, or when nothing new came for `idle_s`; never longer than `timeout_s`."""
    import time
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed" if committed_only else "read_uncommitted"})
    start = time.monotonic()
    while True:  # the topic may not exist yet (a worker creates its sink on start)
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and md.error is None and md.partitions:
            break
        if time.monotonic() - start > timeout_s:
            c.close()
            return []
        time.sleep(0.2)
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out, last = [], time.monotonic()
    try:
        while time.monotonic() - start < timeout_s:
            if expect is not None and len(out) >= expect:
                # linger briefly so duplicates (which would make the count wrong) are seen too
                extra = c.consume(1000, 1.0)
                out.extend(m for m in extra if not m.error())
                break
            batch = c.consume(1000, 0.5)
            msgs = [m for m in batch if not m.error()]
            if msgs:
                out.extend(msgs)
                last = time.monotonic()
            elif expect is None and time.monotonic() - last > idle_s:
                break
    finally:
        c.close()
    return out


@pytest.fixture
def python():
    return sys.executable


APPS = Path(__file__).resolve().parent / "apps"
# The test applications are top-level modules, as machida imports them (cwd=APPS), and their pickled
# state names them so (wordcount.WordCounts): tests import them by that same name.
sys.path.insert(0, str(APPS))


class Workers:
    """Starts `machida` worker processes and makes sure none outlives the test."""

    def __init__(self, bootstrap, log_dir):
        self.bootstrap = bootstrap
        self.log_dir = Path(log_dir)
        self.procs = []

    def start(self, module, source, sink, name, app_id, *extra, cwd=APPS):
        import subprocess
        log = open(self.log_dir / f"{name}.log", "ab")
        cmd = [sys.executable, "-m", "wallaroo.runtime.cli", "--application-module", module,
               "--kafka_source_topic", source, "--kafka_source_brokers", self.bootstrap,
               "--kafka_sink_topic", sink, "--kafka_sink_brokers", self.bootstrap,
               "--name", name, "--application-id", app_id, *extra]
        proc = subprocess.Popen(cmd, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = self.log_dir / f"{name}.log"
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def workers(kafka, tmp_path):
    w = Workers(kafka, tmp_path)
    yield w
    w.stop_all()


def group_assignments(bootstrap, group):
    """{member client id: [(topic, partition)]} for a consumer group, from the broker; {} while the
    broker cannot describe the group yet (coordinator loading, group still forming)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        desc = admin.describe_consumer_groups([group])[group].result(20)
    except (KafkaException, TimeoutError):
        return {}
    return {m.client_id: [(tp.topic, tp.partition) for tp in m.assignment.topic_partitions]
            for m in desc.members}


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (make test-tools)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def new_page(chromium):
    """A page of `chromium` and the list that collects its script errors and console errors."""
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Polls predicate() until it returns something truthy, and returns that.  Tries once more at the
    deadline (a slow predicate still gets its last look), then fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last value: {value!r:.500}")
        time.sleep(0.2)


def event_line(kind, eid, repo, created_at, *, actor="someone", number=1, action="opened", title=None,
               url=None, message="fix") -> bytes:
    """One GH Archive line shaped like the real ones (with the payload fields star_leaders reads)."""
    event = {"id": str(eid), "type": kind,
             "actor": {"id": 1, "login": actor, "gravatar_id": "", "url": f"https://api.github.com/users/{actor}"},
             "repo": {"id": 2, "name": repo, "url": f"https://api.github.com/repos/{repo}"},
             "payload": {"action": "started"} if kind == "WatchEvent" else {},
             "public": True, "created_at": created_at}
    if kind == "ForkEvent":
        full = f"{actor}/{repo.split('/')[1]}"
        event["payload"] = {"forkee": {"id": 3, "name": repo.split("/")[1], "full_name": full,
                                       "html_url": f"https://github.com/{full}", "private": False}}
    elif kind == "PullRequestEvent":
        event["payload"] = {"action": action, "number": number,
                            "pull_request": {"title": f"PR {number}" if title is None else title, "number": number,
                                             "html_url": url or f"https://github.com/{repo}/pull/{number}"}}
    elif kind == "PushEvent":
        event["payload"] = {"size": 1, "commits": [{"message": message}]}
    return json.dumps(event).encode()
