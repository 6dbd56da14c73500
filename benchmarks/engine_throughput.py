"""`make bench`: source events per second for one worker, transactions on, against the local broker.

The workload is the star_leaders application on synthetic GitHub-like events (~2 KB of JSON each,
~85% of types the application filters out, the rest into its partitioned state), produced once into a
fresh topic. Each run starts one `machida` worker under a fresh application id and times it from its
first checkpoint to the checkpoint that commits the last source offset and the last record of its
repartition topic (the group's committed offsets, read from the broker): all state work done.
Start-up and the broker's own warm-up are not counted. Runs alternate metrics on (the default) and
`--no-metrics`, the order swapped every round, so the cost of metrics is measured in one go; the same
comparison is made on the task alone (in process, no Kafka, CPU time), which the machine's load
disturbs less.
"""
import argparse
import os
import statistics
import sys
import time

from archive_streamer.produce import ensure_topic, send_events
from archive_streamer.synthetic import generate_events
from star_leaders import config
from wallaroo.runtime.serde import Serde
from wallaroo.runtime.task import Task
from wallaroo.runtime.topics import repartition_topic
from wallaroo.testing import LocalCollector, LocalMessage, LocalResult, load_application

from benchmarks.common import (Children, Probe, default_bootstrap, delete_topics, event_kind, machida,
                               require_broker, run_id, time_until_committed, topics_with_prefix)


def run_once(children, bootstrap, topic, tps, total, checkpoint_ms, extra=()):
    """One worker under a fresh application id over the whole topic: (its events per second, the CPU
    seconds the worker process used, start-up included)."""
    app_id = run_id("bench")
    worker = children.start(machida(bootstrap, app_id, topic, "bench", checkpoint_ms) + list(extra))
    try:
        with Probe(bootstrap, app_id) as probe:
            rate = time_until_committed(probe, tps, total,
                                        lambda: [repartition_topic(app_id, config.STATE_NAME)],
                                        worker, children, timeout_s=600)
    finally:
        children.stop(worker)
        delete_topics(bootstrap, topics_with_prefix(bootstrap, f"{app_id}-"))
    return rate, children.cpu_seconds(worker) if worker.pid in children.usage else float("nan")


def task_alone(lines, metrics, partitions=4):
    """CPU seconds star_leaders' task takes over `lines` in process (the runtime's own processing code,
    state included, no Kafka), with or without metrics; a checkpoint boundary every 20,000 lines."""
    import star_leaders
    app, module = load_application(star_leaders, ["machida"])
    collector = LocalCollector(LocalResult())
    task = Task(app, "bench", Serde(module, app), partitions, collector, metrics=metrics)
    for store in task.stores.values():
        for p in range(partitions):
            store.adopt(p, {})
    messages = [LocalMessage(config.SOURCE_TOPIC, 0, i, None, line, None, None) for i, line in enumerate(lines)]
    queue, repartition = collector.queue, task.process_repartition
    started = time.process_time()
    for i, m in enumerate(messages):
        task.process_source(m)
        while queue:
            repartition(queue.popleft())
        if metrics and i % 20_000 == 0:
            task.metrics.committed(time.perf_counter())
    return time.process_time() - started


def main(argv=None):
    try:
        measure(argv)
    except KeyboardInterrupt:
        sys.exit("bench: interrupted (its processes are stopped, its topics deleted)")


def measure(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", default=default_bootstrap())
    p.add_argument("--events", type=int, default=int(os.environ.get("BENCH_ENGINE_EVENTS") or 300_000),
                   help="events in the topic (default $BENCH_ENGINE_EVENTS or 300,000)")
    p.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_ENGINE_RUNS") or 3),
                   help="runs with metrics on, and as many off (default $BENCH_ENGINE_RUNS or 3)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--checkpoint-interval-ms", type=int, default=1000)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    require_broker(args.kafka)

    topic = run_id("bench-gharchive")
    with Children() as children:
        try:
            ensure_topic(args.kafka, topic, args.partitions, 1)
            hours = -(-args.events // 20_000)
            events = list(generate_events(seed=args.seed, start_hour="2018-06-01-0", hours=hours,
                                          events_per_hour=20_000))[:args.events]
            interesting = sum(1 for e in events if event_kind(e.line))
            size = sum(len(e.line) for e in events) / len(events)
            send_events(events, args.kafka, topic, speedup=0)
            print(f"bench: {len(events):,} synthetic events in {topic} ({args.partitions} partitions), "
                  f"{size:,.0f} bytes on average, {100 - 100 * interesting / len(events):.1f}% filtered out")
            with Probe(args.kafka) as probe:
                tps = probe.partitions(topic)
            # The fastest of several alternating runs: the one the machine's other work disturbed least.
            lines = [e.line for e in events[:30_000]]
            alone = {"on": [], "off": []}
            for i in range(6):
                for metrics in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    alone[metrics].append(task_alone(lines, metrics == "on"))
            on, off = min(alone["on"]), min(alone["off"])
            print(f"bench: the task alone (in process, {len(lines):,} events, fastest of 6 alternating runs), "
                  f"metrics cost {100 * (on - off) / off:+.1f}% ({1e9 * (on - off) / len(lines):.0f} ns per event): "
                  f"{len(lines) / on:,.0f} on, {len(lines) / off:,.0f} off events/s")
            # Wall-clock rates swing with whatever else the machine runs; events per CPU second of the
            # worker process (start-up included, alike for both) show the cost of metrics more steadily.
            rates, per_cpu = {"on": [], "off": []}, {"on": [], "off": []}
            for i in range(args.runs):
                for metrics in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    extra = ["--no-metrics"] if metrics == "off" else []
                    rate, cpu = run_once(children, args.kafka, topic, tps, len(events), args.checkpoint_interval_ms,
                                         extra)
                    rates[metrics].append(rate)
                    per_cpu[metrics].append(len(events) / cpu)
                    print(f"bench: run {i + 1}, metrics {metrics}: {len(events) / cpu:,.0f} events per worker CPU "
                          f"second; {rate:,.0f} events/s", flush=True)
            on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
            cpu_on, cpu_off = statistics.median(per_cpu["on"]), statistics.median(per_cpu["off"])
            print(f"bench: metrics cost {100 * (cpu_off - cpu_on) / cpu_off:+.1f}% in events per worker CPU second "
                  f"({cpu_on:,.0f} on, {cpu_off:,.0f} off), {100 * (off - on) / off:+.1f}% in events/s")
            print(f"bench: metrics off (--no-metrics), median of {args.runs} runs: {off:.0f} events/s")
            print(f"bench: one worker, transactions on, checkpoint every {args.checkpoint_interval_ms} ms, "
                  f"median of {args.runs} runs: {on:.0f} events/s")
        finally:
            delete_topics(args.kafka, [topic])


if __name__ == "__main__":
    main()
