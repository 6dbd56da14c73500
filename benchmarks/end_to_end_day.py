"""`make bench`, end to end: a 2018-scale day from hour files, the streamer and two workers on this machine.

The day (1,248,000 events by default, $BENCH_DAY_EVENTS for a quick run) is generated once into
.cache/bench/ as 24 GH Archive hour files, with a long tail of repositories (~10^5 with a star, fork
or pull request), together with the leaderboard it must end with (tests/reference.py).  Each run,
under a fresh topic and application id: two `machida` workers of star_leaders are started and get
their partitions, then `archive-streamer --source <folder> --speedup 0` replays the folder.
Measured per run:
- end to end: events / (first event in the topic .. the commit covering the end of the source and
  of the repartition topic, i.e. all state work committed); the streamer alone (until it exits);
- CPU seconds of the streamer, each worker and the broker; each worker's peak RSS;
- the changelog: bytes in the broker's log directory and records;
- restore: after the two workers stop, a third starts alone and restores every state partition
  (its log's restore time, and its start to its first commit of one more record);
- the final leaderboard (merged as the dashboard merges it) against the reference, and how many
  leaderboard records the day made.
Median of 3 runs ($BENCH_DAY_RUNS); the rates are printed as lines ending in `events/s`.
"""
import argparse
import gzip
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from archive_streamer.hours import file_name
from archive_streamer.produce import ensure_topic
from star_leaders import config
from wallaroo.runtime.topics import changelog_topic, dead_letter_topic, repartition_topic

from benchmarks.common import (DAY_EVENTS, LONG_TAIL, QUIET, ROOT, Children, Probe, Tally,
                               day_events, default_bootstrap, delete_topics, leaderboard_of, machida,
                               read_all, require_broker, run_id, topics_with_prefix)

CACHE = ROOT / ".cache" / "bench"
RESTORED = re.compile(r"restored state .* in ([0-9.]+) s")
TIMEOUT_S = 1800


def prepare_day(events: int, seed: int, long_tail: int, cache: Path) -> tuple[Path, dict]:
    """The day's folder of hour files and what is known about it; generated on first use."""
    folder = cache / f"day-{events}-seed{seed}-tail{long_tail}"
    meta_file = folder / "day.json"
    if meta_file.exists():
        return folder, json.loads(meta_file.read_text())
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    print(f"day: generating {events:,} events into {folder} (once; later runs reuse it)", flush=True)
    started = time.monotonic()
    tally = Tally()
    # The generator keeps an hour's events in their hour, so grouping by it gives the hour files.
    for hour_index, hour_events in itertools.groupby(
            tally.count(day_events(events, seed=seed, long_tail=long_tail)),
            key=lambda e: e.ts_ms // 3_600_000):
        hour = datetime.fromtimestamp(hour_index * 3600, tz=timezone.utc)
        with gzip.open(partial / file_name(hour), "wb", compresslevel=6) as f:
            for event in hour_events:
                f.write(event.line + b"\n")
    meta = {"events": tally.events, "description": tally.describe(), "stars": tally.stars,
            "reference": tally.reference(), "seed": seed, "long_tail": long_tail,
            "files": len(list(partial.glob("*.json.gz")))}
    (partial / "day.json").write_text(json.dumps(meta))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    print(f"day: generated in {time.monotonic() - started:.0f} s", flush=True)
    return folder, meta


def broker_run_dir() -> Path:
    return Path(os.environ.get("KAFKA_RUN_DIR") or ROOT / "kafka" / "run")


def broker_cpu_seconds() -> float | None:
    """CPU seconds of the local broker (kafka/kafka.sh's), or None if it is not ours to see."""
    try:
        pid = int((broker_run_dir() / "kafka.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")     # utime + stime


def bytes_on_disk(topic: str) -> int | None:
    """Bytes of `topic`'s log segments in the local broker's log directory, or None if not there
    (index files are left out: the broker preallocates them at 10 MB each)."""
    dirs = list((broker_run_dir() / "data").glob(f"{topic}-*"))
    dirs = [d for d in dirs if d.name[len(topic) + 1:].isdigit()]
    if not dirs:
        return None
    return sum(f.stat().st_size for d in dirs for f in d.glob("*.log"))


def wait_for_group(bootstrap: str, group: str, members: int, children, procs, timeout_s=180) -> None:
    """Until `group` is stable with `members` members that all have partitions."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if children.exited(proc):
                raise RuntimeError(f"a worker exited with {proc.returncode} while starting")
        try:
            desc = admin.describe_consumer_groups([group])[group].result(10)
            if (desc.state == ConsumerGroupState.STABLE and len(desc.members) == members
                    and all(m.assignment.topic_partitions for m in desc.members)):
                return
        except Exception:  # noqa: BLE001 - the group does not exist yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not form a stable group of {members} within {timeout_s} s")


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_once(children, args, folder: Path, meta: dict, logs: Path) -> dict:
    app_id = run_id("day")
    topic = f"{app_id}-gharchive"
    repartition = repartition_topic(app_id, config.STATE_NAME)
    changelog = changelog_topic(app_id, config.STATE_NAME)
    out = {}
    try:
        ensure_topic(args.kafka, topic, args.partitions, 1)
        workers = [children.start(machida(args.kafka, app_id, topic, f"worker-{i}", args.checkpoint_ms),
                                  log=logs / f"{app_id}-worker-{i}.log")
                   for i in (1, 2)]
        wait_for_group(args.kafka, app_id, 2, children, workers)
        with Probe(args.kafka, app_id) as probe:
            tps = probe.partitions(topic)
            streamer_log = logs / f"{app_id}-streamer.log"
            broker_cpu0 = broker_cpu_seconds()
            launched = time.monotonic()
            streamer = children.start(
                [sys.executable, "-m", "archive_streamer", "--source", str(folder), "--speedup", "0",
                 "--kafka", args.kafka, "--topic", topic, "--no-progress"], log=streamer_log)
            first = streamer_end = None
            while True:
                now = time.monotonic()
                if now - launched > TIMEOUT_S:
                    raise RuntimeError(f"not done within {TIMEOUT_S} s")
                if first is None:
                    if sum(probe.ends(tps)) > 0:
                        first = now
                    else:
                        time.sleep(0.01)
                        continue
                if streamer_end is None and children.exited(streamer):
                    streamer_end = now
                    if streamer.returncode != 0:
                        raise RuntimeError(f"archive-streamer exited with {streamer.returncode}:\n"
                                           f"{tail(streamer_log)}")
                for w in workers:
                    if children.exited(w):
                        raise RuntimeError(f"a worker exited with {w.returncode} mid-run")
                if streamer_end is not None:
                    ends = sum(probe.ends(tps))
                    if sum(probe.committed(tps)) >= ends and probe.caught_up(repartition):
                        done = now
                        break
                time.sleep(0.05)
            broker_cpu1 = broker_cpu_seconds()
            if ends != meta["events"]:
                raise RuntimeError(f"the streamer wrote {ends:,} records for {meta['events']:,} events:\n"
                                   f"{tail(streamer_log)}")
        out["e2e_s"] = done - first
        out["e2e"] = meta["events"] / (done - first)
        out["streamer_s"] = streamer_end - launched
        out["streamer"] = meta["events"] / (streamer_end - first)
        for w in workers:
            children.stop(w)
        out["cpu"] = {"streamer": children.cpu_seconds(streamer),
                      **{f"worker-{i}": children.cpu_seconds(w) for i, w in enumerate(workers, 1)}}
        if broker_cpu0 is not None and broker_cpu1 is not None:
            out["cpu"]["broker"] = broker_cpu1 - broker_cpu0
        out["rss_mb"] = [children.peak_rss_mb(w) for w in workers]

        records = read_all(args.kafka, f"{app_id}-leaderboard")
        out["leaderboard_records"] = len(records)
        out["exact"] = leaderboard_of(records) == meta["reference"]
        out["dead_letters"] = len(read_all(args.kafka, dead_letter_topic(app_id)))
        out["changelog_bytes"] = bytes_on_disk(changelog)
        out.update(measure_restore(children, args, app_id, topic, logs))
        out["share_restore_s"] = share_restore(args.kafka, app_id, list(range(args.partitions // 2)))["total_s"]
        return out
    finally:
        if not args.keep_topics:
            delete_topics(args.kafka, topics_with_prefix(args.kafka, f"{app_id}-"))


def measure_restore(children, args, app_id: str, topic: str, logs: Path) -> dict:
    """A third worker, alone, restores every state partition; it then commits one more record
    (a repeat of an event, which the state counts as a duplicate) so its start can be timed from
    outside too."""
    last = read_last(args.kafka, topic)
    producer = Producer({"bootstrap.servers": args.kafka, **QUIET})
    producer.produce(topic, last.value(), last.key(), partition=last.partition(),
                     timestamp=last.timestamp()[1])
    producer.flush(30)
    log_path = logs / f"{app_id}-restore.log"
    with Probe(args.kafka, app_id) as probe:
        tps = probe.partitions(topic)
        target = sum(probe.ends(tps))
        started = time.monotonic()
        worker = children.start(machida(args.kafka, app_id, topic, "restore", args.checkpoint_ms,
                                        log_level="INFO"), log=log_path)
        while sum(probe.committed(tps)) < target:
            if children.exited(worker):
                raise RuntimeError(f"the restoring worker exited with {worker.returncode}:\n{tail(log_path)}")
            if time.monotonic() - started > 600:
                raise RuntimeError("the restoring worker did not commit within 600 s")
            time.sleep(0.05)
        first_commit = time.monotonic() - started
    children.stop(worker)
    logged = [float(x) for x in RESTORED.findall(log_path.read_text(errors="replace"))]
    return {"restore_log_s": sum(logged) if logged else None, "restart_to_commit_s": first_commit}


def share_restore(bootstrap: str, app_id: str, partitions: list[int]) -> dict:
    """What a worker joining a two-worker group does on assignment, in-process: read its share of the
    changelog (wallaroo.runtime.state.restore) and decode it into live objects (StateStore.adopt)."""
    import star_leaders
    from wallaroo.runtime.serde import Serde
    from wallaroo.runtime.state import StateStore, restore
    changelog = changelog_topic(app_id, config.STATE_NAME)
    codec = Serde(star_leaders).state_codec(config.STATE_NAME, star_leaders.RepoMetadata)
    store = StateStore(config.STATE_NAME, star_leaders.RepoMetadata, changelog, codec)
    t0 = time.perf_counter()
    tables = restore(bootstrap, changelog, partitions)
    t1 = time.perf_counter()
    for p, table in tables.items():
        store.adopt(p, table)
    t2 = time.perf_counter()
    return {"read_s": t1 - t0, "decode_s": t2 - t1, "total_s": t2 - t0,
            "keys": sum(len(t) for t in tables.values()),
            "objects": sum(len(t) for t in store.partitions.values()),
            "bytes": sum(len(v) for t in tables.values() for v in t.values())}


def restore_only(args) -> None:
    """--restore-only APP_ID: the share restore of a day kept with --keep-topics, --runs times."""
    half = list(range(args.partitions // 2))
    runs = [share_restore(args.kafka, args.restore_only, half) for _ in range(args.runs)]
    for i, r in enumerate(runs, 1):
        print(f"day: share restore {i}: partitions {half} of {args.partitions}: {r['objects']:,} objects "
              f"({r['bytes'] / 1e6:.1f} MB) read {r['read_s']:.2f} s + decoded {r['decode_s']:.2f} s = {r['total_s']:.2f} s")
    med = statistics.median
    print(f"day: median of {len(runs)}: one worker's share restores in {med(r['total_s'] for r in runs):.2f} s "
          f"(read {med(r['read_s'] for r in runs):.2f} s, decode {med(r['decode_s'] for r in runs):.2f} s)")


def read_last(bootstrap: str, topic: str):
    """The last record of partition 0 of `topic` (the streamer's records are not transactional)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": run_id("day-read"), "enable.auto.commit": False,
                  **QUIET})
    try:
        end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[1]
        c.assign([TopicPartition(topic, 0, end - 1)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and m.error() is None:
                return m
        raise RuntimeError(f"could not read the last record of {topic}[0]")
    finally:
        c.close()


def describe(run: dict) -> str:
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in run["cpu"].items())
    disk = "n/a" if run["changelog_bytes"] is None else f"{run['changelog_bytes'] / 1e6:.1f} MB on disk"
    logged = "n/a" if run["restore_log_s"] is None else f"{run['restore_log_s']:.2f} s"
    board = "exact" if run["exact"] else "WRONG"
    return (f"CPU s: {cpu}; worker peak RSS {' / '.join(f'{r:.0f}' for r in run['rss_mb'])} MB; "
            f"changelog {disk}; restore {logged} (worker log), "
            f"{run['restart_to_commit_s']:.1f} s from start to first commit; one worker's share "
            f"{run['share_restore_s']:.2f} s (in-process); leaderboard {board}, "
            f"{run['leaderboard_records']:,} records; {run['dead_letters']} dead letters")


def main(argv=None):
    try:
        replay_day(argv)
    except KeyboardInterrupt:
        sys.exit("day: interrupted (its processes are stopped, its topics deleted)")


def replay_day(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", default=default_bootstrap())
    p.add_argument("--events", type=int, default=int(os.environ.get("BENCH_DAY_EVENTS") or DAY_EVENTS),
                   help=f"events in the day (default $BENCH_DAY_EVENTS or {DAY_EVENTS:,})")
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_DAY_RUNS") or 3),
                   help="runs (default $BENCH_DAY_RUNS or 3)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--checkpoint-ms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--long-tail", type=int, default=LONG_TAIL,
                   help=f"rare repositories beside the popular ones (default {LONG_TAIL:,})")
    p.add_argument("--cache-dir", type=Path, default=CACHE)
    p.add_argument("--keep-topics", action="store_true", help="keep each run's topics to look at")
    p.add_argument("--restore-only", metavar="APP_ID",
                   help="only time the restore of one worker's share (the first half of the partitions) of a "
                        "day kept with --keep-topics under this application id, --runs times")
    args = p.parse_args(argv)
    require_broker(args.kafka)
    if args.restore_only:
        restore_only(args)
        return

    folder, meta = prepare_day(args.events, args.seed, args.long_tail, args.cache_dir)
    logs = args.cache_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"day: {meta['description']}, in {meta['files']} hour files in {folder}")
    print(f"day: each run: a fresh topic ({args.partitions} partitions) and application id; two machida "
          f"workers of star_leaders (checkpoint every {args.checkpoint_ms} ms) in their group first, then "
          f"archive-streamer --source <folder> --speedup 0; all on this machine with the broker "
          f"(logs in {logs})", flush=True)
    runs = []
    with Children() as children:
        for i in range(args.runs):
            run = run_once(children, args, folder, meta, logs)
            runs.append(run)
            print(f"day: run {i + 1}: {describe(run)}")
            print(f"day: run {i + 1}: streamer alone {run['streamer']:,.0f} events/s "
                  f"({run['streamer_s']:.1f} s)")
            print(f"day: run {i + 1}: end to end {run['e2e']:,.0f} events/s "
                  f"({run['e2e_s']:.1f} s from the first event to all state work committed)", flush=True)
    n = len(runs)
    med = statistics.median
    cpu = {k: med(r["cpu"][k] for r in runs) for k in runs[0]["cpu"]}
    print(f"day: median of {n}: CPU s " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
          + f"; worker peak RSS {med(max(r['rss_mb']) for r in runs):.0f} MB (the larger of the two)"
          + (f"; changelog {med(r['changelog_bytes'] for r in runs) / 1e6:.1f} MB"
             if all(r["changelog_bytes"] is not None for r in runs) else "")
          + (f"; restore {med(r['restore_log_s'] for r in runs):.2f} s"
             if all(r["restore_log_s"] is not None for r in runs) else "")
          + f"; one worker's share {med(r['share_restore_s'] for r in runs):.2f} s"
          + f"; leaderboard records {med(r['leaderboard_records'] for r in runs):,.0f}")
    print(f"day: median of {n}: streamer alone {med(r['streamer'] for r in runs):,.0f} events/s")
    print(f"day: median of {n}: end to end, streamer + two workers + broker on this machine: "
          f"{med(r['e2e'] for r in runs):,.0f} events/s")
    wrong = [i + 1 for i, r in enumerate(runs) if not r["exact"] or r["dead_letters"]]
    if wrong:
        sys.exit(f"day: runs {wrong} ended with a wrong leaderboard or dead letters")


if __name__ == "__main__":
    main()
