"""`make bench-peers`: star_leaders beside the same star count in Quix Streams, on one topic, in turns.

One topic of 2018-scale synthetic events is made once.  Each round runs, one after the other (the
order alternates between rounds), one `machida` worker of star_leaders and one process of the Quix
Streams job in benchmarks/peers/quix_star_count.py, each under a fresh consumer group with fresh
state, exactly-once on both, committing at the same interval.  Both are timed the same way: from
their group's first commit to the commit that covers the end of the source topic and of the job's
repartition topic (all state work done), read from the broker.  Each run's output is checked:
star_leaders' final leaderboard against tests/reference.py, the Quix job's one output per star and
its count per repository-hour against the stars in the topic.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from archive_streamer.produce import ensure_topic, send_events
from star_leaders import config
from wallaroo.runtime.topics import dead_letter_topic, repartition_topic

from benchmarks.common import (DAY_EVENTS, DAY_HOURS, ROOT, Children, Probe, Tally, day_events,
                               default_bootstrap, delete_topics, leaderboard_of, machida, read_all,
                               require_broker, run_id, time_until_committed, topics_with_prefix)

HERE = Path(__file__).resolve().parent
QUIX_JOB = HERE / "quix_star_count.py"
QUIX_PYTHON = HERE / ".venv" / "bin" / "python"
EVENTS_PER_HOUR = DAY_EVENTS // DAY_HOURS       # 52,000: a 2018 hour


def quix_versions(python: Path) -> str:
    if not python.exists():
        sys.exit(f"peers: no Quix Streams virtualenv at {python.parent.parent}: `make bench-peers` makes "
                 f"it from {HERE / 'requirements.txt'}")
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, confluent_kafka; "
                          "print(m.version('quixstreams'), m.version('confluent-kafka'), "
                          "confluent_kafka.libversion()[0])"],
                         capture_output=True, text=True, check=True).stdout.split()
    return f"Quix Streams {out[0]} (confluent-kafka {out[1]}, librdkafka {out[2]})"


class Workload:
    def __init__(self, bootstrap, topic, tally):
        with Probe(bootstrap) as probe:
            self.tps = probe.partitions(topic)
            self.total = sum(probe.ends(self.tps))
        if self.total != tally.events:
            raise RuntimeError(f"the topic holds {self.total} records, {tally.events} were sent")
        self.topic, self.tally = topic, tally
        self.reference = tally.reference()


def _once_found(find):
    """`find()` until it returns something, then that (the completion check polls 20 times a second)."""
    found = []

    def get():
        if not found:
            found.extend(find())
        return found
    return get


def run_ours(children, args, wl):
    """One star_leaders worker over the topic: (events/s, what was checked, problems)."""
    app_id = run_id("peers-ours")
    try:
        # WARNING, as the Quix job logs: what goes wrong is still in the log.
        worker = children.start(machida(args.kafka, app_id, wl.topic, "peers", args.commit_ms),
                                log=args.logs / f"{app_id}.log")
        try:
            with Probe(args.kafka, app_id) as probe:
                rate = time_until_committed(probe, wl.tps, wl.total,
                                            lambda: [repartition_topic(app_id, config.STATE_NAME)],
                                            worker, children)
        finally:
            children.stop(worker)
        return (rate, *check_ours(args, wl, app_id))
    finally:
        if not args.keep_topics:
            delete_topics(args.kafka, topics_with_prefix(args.kafka, f"{app_id}-"))


def check_ours(args, wl, app_id):
    records = read_all(args.kafka, f"{app_id}-leaderboard")
    board = leaderboard_of(records)
    problems = []
    if board != wl.reference:
        problems.append(f"final leaderboard differs from the reference: {board} != {wl.reference}")
    dead = len(read_all(args.kafka, dead_letter_topic(app_id)))
    if dead:
        problems.append(f"{dead} dead letters")
    return f"final leaderboard = reference, {len(records):,} leaderboard records", problems


def run_quix(children, args, wl):
    """One Quix Streams process over the topic: (events/s, what was checked, problems)."""
    group = run_id("peers-quix")
    output = f"{group}-output"
    state = Path(tempfile.mkdtemp(prefix=f"{group}-state-"))
    log = args.logs / f"{group}.log"
    try:
        job = children.start([str(args.quix_python), str(QUIX_JOB), "--broker", args.kafka,
                              "--source-topic", wl.topic, "--output-topic", output,
                              "--consumer-group", group, "--state-dir", str(state),
                              "--commit-interval", str(args.commit_ms / 1000), "--decode", args.quix_decode],
                             log=log,
                             # an import-time deprecation notice from one of Quix's dependencies
                             env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"})
        try:
            with Probe(args.kafka, group) as probe:
                repartition = _once_found(lambda: topics_with_prefix(args.kafka, f"repartition__{group}--"))
                rate = time_until_committed(probe, wl.tps, wl.total, repartition, job, children)
        finally:
            children.stop(job)
        return (rate, *check_quix(args, wl, output, log))
    finally:
        shutil.rmtree(state, ignore_errors=True)
        if not args.keep_topics:
            delete_topics(args.kafka, [output] + topics_with_prefix(args.kafka, f"repartition__{group}--")
                          + topics_with_prefix(args.kafka, f"changelog__{group}--"))


def check_quix(args, wl, output, log):
    reports = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith('{"late_stars"')]
    late = json.loads(reports[-1])["late_stars"] if reports else None
    records = read_all(args.kafka, output)
    problems = []
    if late is None:
        problems.append(f"the job did not report its late stars (did it stop cleanly? see {log})")
    elif len(records) + late != wl.tally.stars:
        problems.append(f"{len(records):,} outputs + {late} late for {wl.tally.stars:,} stars")
    elif late:
        problems.append(f"{late} stars dropped as late (raise --grace-minutes)")
    counted = Counter()        # (repo, window start) -> the window's last (largest) count
    for m in records:
        window = json.loads(m.value())
        key = (m.key().decode(), window["start"])
        counted[key] = max(counted[key], window["value"])
    if counted != wl.tally.star_hours:
        wrong = sum(1 for k in counted.keys() | wl.tally.star_hours.keys()
                    if counted[k] != wl.tally.star_hours[k])
        problems.append(f"{wrong} repository-hours counted wrong")
    return (f"{len(records):,} outputs for {wl.tally.stars:,} stars, {late} late, "
            f"count per repository-hour = stars in the topic"), problems


def main(argv=None):
    try:
        compare(argv)
    except KeyboardInterrupt:
        sys.exit("peers: interrupted (its processes are stopped, its topics deleted)")


def compare(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", default=default_bootstrap())
    p.add_argument("--events", type=int, default=int(os.environ.get("BENCH_PEERS_EVENTS") or 312_000),
                   help="events in the topic (default $BENCH_PEERS_EVENTS or 312,000)")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_PEERS_ROUNDS") or 2),
                   help="rounds, each running both once (default $BENCH_PEERS_ROUNDS or 2)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--commit-ms", type=int, default=1000,
                   help="both: star_leaders' checkpoint interval and Quix's commit_interval (default 1000)")
    p.add_argument("--quix-python", type=Path, default=QUIX_PYTHON)
    p.add_argument("--quix-decode", choices=("stars-only", "json"), default="stars-only",
                   help="stars-only (default): the Quix job parses only lines that can hold a star, as "
                        "star_leaders' decoder skips lines that cannot interest it; json: every line")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep-topics", action="store_true", help="keep each run's topics to look at")
    p.add_argument("--logs", type=Path, default=ROOT / ".cache" / "bench" / "logs",
                   help="where each run's log goes")
    args = p.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    require_broker(args.kafka)
    quix = quix_versions(args.quix_python)

    topic = run_id("peers-gharchive")
    rates = {"ours": [], "quix": []}
    failures = []
    with Children() as children:
        try:
            ensure_topic(args.kafka, topic, args.partitions, 1)
            tally = Tally()
            hours = -(-args.events // EVENTS_PER_HOUR)
            send_events(tally.count(day_events(args.events, hours=hours, seed=args.seed)), args.kafka, topic)
            wl = Workload(args.kafka, topic, tally)
            print(f"peers: topic {topic}: {tally.describe()} ({args.partitions} partitions; "
                  f"2018-scale synthetic hours of {EVENTS_PER_HOUR:,} events, long tail of repositories)")
            print(f"peers: both: the same topic, one process, exactly-once, a commit every "
                  f"{args.commit_ms} ms, a fresh consumer group and fresh state per run, one run at a time, "
                  f"order alternating between rounds; timed from the group's first commit to the commit "
                  f"of the end of the source and repartition topics")
            print("peers: ours: star_leaders, one machida worker (transactions; decoder parses only lines "
                  "that may be stars/forks/PRs; state: 24-hour window per repository, top 10, recent "
                  "forks/PRs, repeated ids dropped)")
            print(f"peers: quix: {quix}, one Application: filter stars, group_by repository, hourly "
                  f"tumbling_window count().current() in RocksDB, to_topic: one output per star "
                  f"(decode: {args.quix_decode})", flush=True)
            runners = {"ours": run_ours, "quix": run_quix}
            for r in range(args.rounds):
                for name in (("ours", "quix") if r % 2 == 0 else ("quix", "ours")):
                    rate, checked, problems = runners[name](children, args, wl)
                    rates[name].append(rate)
                    verdict = checked if not problems else "WRONG OUTPUT: " + "; ".join(problems)
                    print(f"peers: round {r + 1}: {name}: {rate:,.0f} events/s ({verdict})", flush=True)
                    failures += [f"{name} round {r + 1}: {x}" for x in problems]
        finally:
            if not args.keep_topics:
                delete_topics(args.kafka, [topic])
    ours, theirs = statistics.median(rates["ours"]), statistics.median(rates["quix"])
    print(f"peers: ours, median of {len(rates['ours'])}: {ours:,.0f} events/s")
    print(f"peers: quix, median of {len(rates['quix'])}: {theirs:,.0f} events/s")
    print(f"peers: ratio ours / Quix Streams (medians): {ours / theirs:.2f}")
    # This machine's speed moves by tens of percent from minute to minute; a round's two runs are
    # back to back, so its own ratio shows how steady the comparison was.
    print("peers: round ratios: " + ", ".join(f"{a / b:.2f}" for a, b in zip(rates["ours"], rates["quix"])))
    if failures:
        sys.exit("peers: some outputs were wrong:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
