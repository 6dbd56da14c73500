"""What the benchmarks share: the broker check, child processes that never outlive a run, progress
read from the broker (a group's committed offsets), and 2018-scale synthetic events."""
import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from archive_streamer import config as streamer_config
from archive_streamer.produce import KafkaUnavailable, wait_for_broker
from archive_streamer.synthetic import generate_events
from tests.reference import batch_leaders, comparable, merge_partitions

ROOT = Path(__file__).resolve().parent.parent
# librdkafka's informational lines (level 6, e.g. on closing an admin client) are noise here.
QUIET = {"log_level": 4}

# A 2018 day as the issue measured it: 1,248,000 events in 24 hour files, stars, forks and pull
# requests spread over ~10^5 repositories (the generator's long tail gives that; see its docstring).
DAY_START = "2018-06-01-0"
DAY_EVENTS = 1_248_000
DAY_HOURS = 24
LONG_TAIL = 1_000_000
INTERESTING = (b'"type":"WatchEvent"', b'"type":"ForkEvent"', b'"type":"PullRequestEvent"')
STAR = INTERESTING[0]


def default_bootstrap() -> str:
    """KAFKA_BOOTSTRAP, else 127.0.0.1:$KAFKA_PORT: the broker `make kafka` started."""
    return streamer_config.default_kafka()


def require_broker(bootstrap: str, wait_s: float = 10.0) -> None:
    """Exit with a clear message when no broker answers at `bootstrap`."""
    try:
        wait_for_broker(bootstrap, wait_s)
    except KafkaUnavailable as e:
        sys.exit(f"bench: {e}.\nbench: start one with `make kafka` (it listens on $KAFKA_PORT, "
                 f"default 9092), or point --kafka / KAFKA_BOOTSTRAP at yours.")


def run_id(prefix: str) -> str:
    """A name no earlier run used: topics and groups of a run never mix with another's."""
    return f"{prefix}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"


def event_kind(line: bytes) -> bytes | None:
    """The INTERESTING marker a synthetic line carries ("type" comes second, after "id"), or None."""
    head = line[:80]
    for marker in INTERESTING:
        if marker in head:
            return marker
    return None


def day_events(events: int, hours: int = DAY_HOURS, start: str = DAY_START, seed: int = 7,
               long_tail: int = LONG_TAIL):
    """`events` synthetic events spread evenly over `hours` hours: the last hour may be short."""
    per_hour = -(-events // hours)
    n = 0
    for event in generate_events(seed=seed, start_hour=start, hours=hours, events_per_hour=per_hour,
                                 long_tail=long_tail):
        if n == events:
            return
        n += 1
        yield event


class Tally:
    """What a benchmark must know of the events it made: how many of which, and the right answers
    (star_leaders' final leaderboard as tests/reference.py computes it; stars per repository-hour)."""

    def __init__(self):
        self.events = self.bytes = self.interesting = 0
        self.repos = set()              # repositories with a star, fork or pull request
        self.star_hours = Counter()     # (repo, hour start in ms) -> stars, repeated ids included
        self._star_lines = []
        self._newest = None             # (ts_ms, line): the reference's event time comes from it

    def count(self, events):
        """Pass `events` through, counting them."""
        for event in events:
            self.events += 1
            self.bytes += len(event.line)
            if self._newest is None or event.ts_ms > self._newest[0]:
                self._newest = (event.ts_ms, event.line)
            kind = event_kind(event.line)
            if kind is not None:
                self.interesting += 1
                self.repos.add(event.repo)
                if kind == STAR:
                    self.star_hours[(event.repo, event.ts_ms // 3_600_000 * 3_600_000)] += 1
                    self._star_lines.append(event.line)
            yield event

    @property
    def stars(self) -> int:
        return sum(self.star_hours.values())

    def reference(self) -> dict:
        """The leaderboard star_leaders must end with (only stars and the newest event matter)."""
        lines = self._star_lines + ([self._newest[1]] if self._newest else [])
        return comparable(batch_leaders(lines))

    def describe(self) -> str:
        return (f"{self.events:,} events, {self.bytes / max(self.events, 1):,.0f} bytes on average, "
                f"{100 * self.interesting / max(self.events, 1):.1f}% stars/forks/PRs over "
                f"{len(self.repos):,} repositories, {self.stars:,} stars")


def leaderboard_of(records) -> dict:
    """The global top 10 the dashboard would show from star_leaders' sink records."""
    return comparable(merge_partitions(records))


# ------------------------------------------------------------------------------ child processes

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # A harness killed with SIGKILL cannot clean up: the kernel sends its children SIGTERM instead.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """The processes of a benchmark.  Each runs in its own session (Ctrl-C reaches the harness
    only, which then stops them in order) and gets SIGTERM if the harness dies.  `with Children()`
    ends whatever is still running on the way out, also on Ctrl-C or SIGTERM."""

    def __init__(self):
        self.procs = []
        self.usage = {}      # pid -> resource usage of the reaped process (CPU seconds, peak RSS)

    def __enter__(self):
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.returncode is None:
                self.stop(proc, timeout_s=20)
        signal.signal(signal.SIGTERM, self._old_term)
        return False

    def start(self, args, log: Path | None = None, **kwargs) -> subprocess.Popen:
        """Start `args` (from the repository root); `log`: a file for its stdout and stderr."""
        if log is not None:
            with open(log, "wb") as out:
                proc = subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent,
                                        cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        else:
            proc = subprocess.Popen(args, start_new_session=True, preexec_fn=_die_with_parent,
                                    cwd=ROOT, **kwargs)
        self.procs.append(proc)
        return proc

    def reap(self, proc, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for `proc` to exit; record its resource usage.  True if it did."""
        deadline = time.monotonic() + timeout_s
        while proc.returncode is None:
            try:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            except ChildProcessError:       # reaped elsewhere (Popen.poll): no usage to record
                proc.poll()
                break
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.usage[proc.pid] = usage
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def exited(self, proc) -> bool:
        return self.reap(proc, 0)

    def stop(self, proc, timeout_s: float = 60) -> int:
        """SIGTERM (a worker checkpoints and leaves its group), SIGKILL if that takes too long."""
        if proc.returncode is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not self.reap(proc, timeout_s):
                proc.kill()
                self.reap(proc, 10)
        return proc.returncode

    def cpu_seconds(self, proc) -> float:
        u = self.usage[proc.pid]
        return u.ru_utime + u.ru_stime

    def peak_rss_mb(self, proc) -> float:
        return self.usage[proc.pid].ru_maxrss / 1024      # Linux reports KiB


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------- progress from the broker

class Probe:
    """A group's committed offsets and topics' end offsets, read from the broker without joining
    the group.  Two clients: the high watermark takes a read_uncommitted one; the last stable
    offset (below the oldest open transaction) a read_committed one."""

    def __init__(self, bootstrap: str, group: str = "bench-probe"):
        common = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **QUIET}
        self._high = Consumer({**common, "isolation.level": "read_uncommitted"})
        self._stable = Consumer({**common, "isolation.level": "read_committed"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._high.close()
        self._stable.close()
        return False

    def partitions(self, topic: str) -> list[TopicPartition]:
        md = self._high.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return []
        return [TopicPartition(topic, p) for p in sorted(md.partitions)]

    def ends(self, tps) -> list[int]:
        return [self._high.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]

    def stable_ends(self, tps) -> list[int]:
        return [self._stable.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]

    def committed(self, tps) -> list[int]:
        return [max(tp.offset, 0) for tp in self._high.committed(tps, timeout=10)]

    def caught_up(self, topic: str) -> bool:
        """Whether the group has committed everything in `topic`, a topic only transactions write.

        Once no transaction is open on a partition (stable end = high watermark), it ends in commit
        markers, one per producer that wrote it last.  Our workers commit that end (the EOF's offset,
        Checkpointer.reached_end); a consumer that commits the offset after its last record stops
        short of it, by one marker when one producer writes the topic (the Quix Streams peer).  (The
        stable end alone would let the check pass while the last transaction's markers are still
        being written: its records unread.)"""
        tps = self.partitions(topic)
        if not tps:
            return False
        done, stable, high = self.committed(tps), self.stable_ends(tps), self.ends(tps)
        return all(s == h and d >= h - 1 for d, s, h in zip(done, stable, high))


def time_until_committed(probe: Probe, source_tps, total: int, internal_topics, proc, children,
                         timeout_s: float = 900):
    """Time one consumer group over a topic already holding `total` records: from its first commit
    to the commit that covers the whole source and every topic `internal_topics()` names (its
    repartition topic: the state work).  Start-up is not counted.  Returns events per second."""
    t0 = n0 = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = sum(probe.committed(source_tps))
        now = time.monotonic()
        if t0 is None and n > 0:
            t0, n0 = now, n
        if n >= total:
            topics = internal_topics()
            if topics and all(probe.caught_up(t) for t in topics):
                if n0 >= total:
                    raise RuntimeError("the first commit already covered everything: use more events")
                return (total - n0) / (now - t0)
        if children.exited(proc):
            raise RuntimeError(f"{proc.args[0]} ... exited with {proc.returncode} before the end")
        time.sleep(0.05)
    raise RuntimeError(f"not done within {timeout_s:.0f} s")


def delete_topics(bootstrap: str, topics) -> None:
    """Best effort: a benchmark's topics hold gigabytes that nothing reads again."""
    topics = [t for t in topics if t]
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(60)
        except KafkaException as e:
            if "UNKNOWN_TOPIC" not in str(e):
                print(f"bench: could not delete topic {topic}: {e}", file=sys.stderr)


def topics_with_prefix(bootstrap: str, prefix: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))


def machida(bootstrap: str, app_id: str, source_topic: str, name: str, checkpoint_ms: int,
            log_level: str = "WARNING") -> list[str]:
    """The command line of one star_leaders worker (its sink topic is `<app_id>-leaderboard`)."""
    return [sys.executable, "-m", "wallaroo.runtime.cli", "--application-module", "star_leaders",
            "--kafka_source_topic", source_topic, "--kafka_source_brokers", bootstrap,
            "--kafka_sink_topic", f"{app_id}-leaderboard", "--kafka_sink_brokers", bootstrap,
            "--name", name, "--application-id", app_id, "--checkpoint-interval-ms", str(checkpoint_ms),
            "--log-level", log_level]


def read_all(bootstrap: str, topic: str) -> list:
    """Every committed record of `topic`, in order per partition (read_committed: what a
    downstream reader of an exactly-once job sees).  Call it when the writers are done."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True, **QUIET})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return []
        tps = [TopicPartition(topic, p) for p in md.partitions]
        pending = {tp.partition for tp in tps
                   if c.get_watermark_offsets(tp, timeout=10, cached=False)[1] > 0}
        c.assign([TopicPartition(topic, p, 0) for p in pending])
        out, deadline = [], time.monotonic() + 300
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not read {topic} to its end within 300 s")
            for m in c.consume(1000, 0.5):
                err = m.error()
                if err is None:
                    out.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {err}")
        return out
    finally:
        c.close()
