"""`make bench`: source events per second for one worker, transactions on, against the local broker.

The workload is the star_leaders application on synthetic GitHub-like events (~2 KB of JSON each,
~85% of types the application filters out, the rest into its partitioned state), produced once into a
fresh topic. Each run starts one `machida` worker under a fresh application id and times it from its
first checkpoint to the checkpoint that commits the last source offset and the last record of its
repartition topic (the group's committed offsets, read from the broker): all state work done.
Start-up and the broker's own warm-up are not counted.
"""
import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from archive_streamer.produce import ensure_topic, send_events
from archive_streamer.synthetic import generate_events
from star_leaders import config
from wallaroo.runtime.topics import repartition_topic

ROOT = Path(__file__).resolve().parent.parent


def committed_total(consumer, tps):
    return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))


def state_caught_up(consumer, app_id):
    """Whether the worker has committed everything in its repartition topic, i.e. finished the state
    work for what it consumed (source offsets alone would let state work lag behind the clock)."""
    topic = repartition_topic(app_id, config.STATE_NAME)
    md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or not md.partitions:
        return False
    tps = [TopicPartition(topic, p) for p in md.partitions]
    ends = [consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1] for tp in tps]
    done = [max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10)]
    # The last record of a partition is a transaction marker, which consumers skip past.
    return all(d >= e - 1 for d, e in zip(done, ends))


def run_once(bootstrap, topic, tps, total, checkpoint_ms):
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "wallaroo.runtime.cli", "--application-module", "star_leaders",
         "--kafka_source_topic", topic, "--kafka_source_brokers", bootstrap,
         "--kafka_sink_topic", f"{app_id}-leaderboard", "--kafka_sink_brokers", bootstrap,
         "--name", "bench", "--application-id", app_id, "--checkpoint-interval-ms", str(checkpoint_ms),
         "--log-level", "WARNING"], cwd=ROOT)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id, "enable.auto.commit": False})
    try:
        t0 = n0 = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = committed_total(probe, tps)
            now = time.monotonic()
            if t0 is None and n > 0:
                t0, n0 = now, n
            if n >= total and state_caught_up(probe, app_id):
                if n0 >= total:
                    raise RuntimeError("the first checkpoint already covered everything: use more --events")
                return (total - n0) / (now - t0)
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}")
            time.sleep(0.05)
        raise RuntimeError("worker did not finish within 600 s")
    finally:
        probe.close()
        worker.terminate()
        worker.wait(60)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", default="127.0.0.1:9092")
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--checkpoint-interval-ms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)

    topic = f"bench-gharchive-{uuid.uuid4().hex[:8]}"
    ensure_topic(args.kafka, topic, args.partitions, 1)
    hours = -(-args.events // 20_000)
    events = list(generate_events(seed=args.seed, start_hour="2018-06-01-0", hours=hours,
                                  events_per_hour=20_000))[:args.events]
    interesting = sum(1 for e in events if b'"type":"WatchEvent"' in e.line or b'"type":"ForkEvent"' in e.line
                      or b'"type":"PullRequestEvent"' in e.line)
    size = sum(len(e.line) for e in events) / len(events)
    send_events(events, args.kafka, topic, speedup=0)
    print(f"bench: {len(events):,} synthetic events in {topic} ({args.partitions} partitions), "
          f"{size:,.0f} bytes on average, {100 - 100 * interesting / len(events):.1f}% filtered out")
    tps = [TopicPartition(topic, p) for p in range(args.partitions)]
    rates = []
    for i in range(args.runs):
        rate = run_once(args.kafka, topic, tps, len(events), args.checkpoint_interval_ms)
        rates.append(rate)
        print(f"bench: run {i + 1}: {rate:,.0f} events/s")
    print(f"bench: one worker, transactions on, checkpoint every {args.checkpoint_interval_ms} ms, "
          f"median of {len(rates)} runs: {statistics.median(rates):.0f} events/s")


if __name__ == "__main__":
    main()
