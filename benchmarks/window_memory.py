"""A worker's memory over a full 24-hour window at 2025 volume (~200,000 events an hour), in process.

star_leaders' task (the worker's own processing code, state included; no Kafka, so no client buffers)
over generated hours (`--hours`, default 26: the window fills, then slides), all state partitions in
this one process, as one worker alone holds them; a checkpoint every `--checkpoint-every` events (the
outputs flushed, the changelog values made, as a worker's checkpoint does).  Prints the RSS after each
hour, then where the state's memory is.  `.venv/bin/python -m benchmarks.window_memory --hours 6` for
a quick look (about 10 s an hour here)."""
import argparse
import resource
import sys
import time

import star_leaders
from archive_streamer.synthetic import generate_events
from star_leaders import config
from wallaroo.runtime.serde import Serde
from wallaroo.runtime.task import Task
from wallaroo.testing import LocalCollector, LocalMessage, LocalResult, load_application


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def deep_mb(obj, seen) -> float:
    """Bytes of `obj` and what it holds (dicts, lists, tuples, sets), each object counted once."""
    total, todo = 0, [obj]
    while todo:
        o = todo.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            todo.extend(o.keys())
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
    return total / 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=int, default=26)
    p.add_argument("--events-per-hour", type=int, default=200_000)
    p.add_argument("--long-tail", type=int, default=1_000_000)
    p.add_argument("--checkpoint-every", type=int, default=20_000,
                   help="events between checkpoints (a worker's second at ~20,000 events/s)")
    args = p.parse_args(argv)
    app, module = load_application(star_leaders, ["machida"])
    collector = LocalCollector(LocalResult())
    task = Task(app, "window-memory", Serde(module, app), 4, collector, metrics=True)
    store = next(iter(task.stores.values()))
    for p_ in range(4):
        store.adopt(p_, {})
    queue, repartition = collector.queue, task.process_repartition
    print(f"memory: {args.hours} hours of {args.events_per_hour:,} events; RSS at start {rss_mb():.0f} MB", flush=True)
    n, hour, first, t0 = 0, None, None, time.monotonic()
    for e in generate_events(seed=11, start_hour="2025-06-01-0", hours=args.hours,
                             events_per_hour=args.events_per_hour, long_tail=args.long_tail):
        h = e.ts_ms // 3_600_000
        if hour is not None and h != hour:
            objs = [o for part in store.partitions.values() for o in part.values()]
            print(f"memory: after hour {h - first}: {n:,} events, RSS {rss_mb():.0f} MB, star ids in the window "
                  f"{sum(len(ids) for o in objs for ids in o.seen.values()):,}, {time.monotonic() - t0:.0f} s", flush=True)
        first = h if first is None else first
        hour = h
        task.process_source(LocalMessage(config.SOURCE_TOPIC, 0, n, None, e.line, None, e.ts_ms))
        n += 1
        while queue:
            repartition(queue.popleft())
        if n % args.checkpoint_every == 0:
            started = time.perf_counter()
            task.flush_outputs()
            list(task.changelog_records())
            collector.result.outputs.clear()
            task.metrics.committed(started)
    seen = set()
    objs = [o for part in store.partitions.values() for o in part.values()]
    parts = {slot: sum(deep_mb(getattr(o, slot), seen) for o in objs) for slot in type(objs[0]).__slots__}
    parts["values at the last checkpoint"] = deep_mb(store.saved, seen)
    print(f"memory: end: {n:,} events, RSS {rss_mb():.0f} MB, peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; state: "
          + ", ".join(f"{k} {v:.0f} MB" for k, v in parts.items() if v >= 0.5))


if __name__ == "__main__":
    main()
