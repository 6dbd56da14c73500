"""`make bench`: interactive queries (README "Queries"): queries per second and latency of one worker's
query port, for keys its own partitions hold and for keys it forwards to the other worker.

Two star_leaders workers with --query-port (and no rate limit: the capacity is measured) consume a
generated day (BENCH_QUERY_EVENTS events over 24 hours) into their state, then sit idle while N
client threads of this process ask worker a for `repo` answers as fast as they are answered (one
HTTP/1.0 connection per query, as the dashboard asks). Repositories are split by the worker that
answered them: "local owner" (a's partitions) and "forwarded" (b's, through a). Then the cost of a
whole repository card (1 + 32 queries, 8 at a time, as the dashboard sends them). Rounds alternate the
settings; queries/s is the median of the rounds, latencies are percentiles over all the round's queries.
"""
import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from archive_streamer.produce import ensure_topic, send_events
from stack_contract import QUERY_REPO, STATE_NAME
from stack_contract.repo_card import repo_card
from star_leaders import config
from wallaroo.runtime.topics import repartition_topic

from benchmarks.common import (Children, Probe, Tally, day_events, default_bootstrap, delete_topics, machida,
                               require_broker, run_id, topics_with_prefix)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port, method, arg):
    """(status, body) of one query, on a connection of its own."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", f"/query/{STATE_NAME}/{method}?arg=" + urllib.parse.quote(arg, safe=""))
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def load(port, repos, clients, seconds):
    """`clients` threads asking for `repos` in turn for `seconds`: (queries/s, latencies in s, errors)."""
    latencies, errors, stop = [], [0], threading.Event()

    def client(offset):
        mine, i = [], offset
        while not stop.is_set():
            t = time.perf_counter()
            status, _ = ask(port, QUERY_REPO, repos[i % len(repos)])
            if status == 200:
                mine.append(time.perf_counter() - t)
            else:
                errors[0] += 1
            i += clients
        latencies.extend(mine)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    return len(latencies) / (time.perf_counter() - started), latencies, errors[0]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))] * 1000


def wait_idle(probe, topic, tps, total, procs, children, timeout_s=600):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(probe.committed(tps)) >= total and probe.caught_up(topic):
            return
        for p in procs:
            if children.exited(p):
                raise RuntimeError(f"a worker exited with {p.returncode}")
        time.sleep(0.2)
    raise RuntimeError(f"the workers did not consume the day within {timeout_s} s")


def main(argv=None):
    try:
        measure(argv)
    except KeyboardInterrupt:
        sys.exit("bench: interrupted (its processes are stopped, its topics deleted)")


def measure(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", default=default_bootstrap())
    p.add_argument("--events", type=int, default=int(os.environ.get("BENCH_QUERY_EVENTS") or 200_000),
                   help="events of the generated day (default $BENCH_QUERY_EVENTS or 200,000)")
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_QUERY_SECONDS") or 4),
                   help="seconds of load per setting and round (default $BENCH_QUERY_SECONDS or 4)")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_QUERY_ROUNDS") or 3))
    p.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated (default 1,8,32)")
    args = p.parse_args(argv)
    require_broker(args.kafka)
    clients = [int(c) for c in args.clients.split(",")]

    app_id, topic = run_id("bench-q"), run_id("bench-q-src")
    with Children() as children:
        try:
            ensure_topic(args.kafka, topic, 4, 1)
            tally = Tally()
            send_events(tally.count(day_events(args.events)), args.kafka, topic, speedup=0)
            ports = {"a": free_port(), "b": free_port()}
            procs = [children.start(machida(args.kafka, app_id, topic, name, 1000) +
                                    ["--query-port", str(port), "--query-rate", "1e9"])
                     for name, port in ports.items()]
            with Probe(args.kafka, app_id) as probe:
                wait_idle(probe, repartition_topic(app_id, config.STATE_NAME), probe.partitions(topic),
                          args.events, procs, children)
            starred = sorted({repo for repo, _ in tally.star_hours})
            sample = starred[:: max(1, len(starred) // 2000)]
            owner = {}
            for repo in sample:
                status, body = ask(ports["a"], QUERY_REPO, repo)
                if status == 200:
                    owner[repo] = body["as_of"]["worker"]
            split = {"local owner": [r for r, w in owner.items() if w == "a"],
                     "forwarded": [r for r, w in owner.items() if w == "b"]}
            print(f"bench: queries: 2 workers, state of a generated day ({tally.describe()}); "
                  f"worker a asked for {len(split['local owner']):,} repositories it owns and "
                  f"{len(split['forwarded']):,} that worker b owns", flush=True)
            if not all(split.values()):
                raise RuntimeError(f"one worker owns every sampled repository: {len(owner)} answers")
            rates, lats = {}, {}
            settings = [(kind, n) for n in clients for kind in split]
            for r in range(args.rounds):
                for kind, n in (settings if r % 2 == 0 else settings[::-1]):
                    rate, latencies, errors = load(ports["a"], split[kind], n, args.seconds)
                    if errors:
                        raise RuntimeError(f"{errors} queries were not answered 200 ({kind}, {n} clients)")
                    rates.setdefault((kind, n), []).append(rate)
                    lats.setdefault((kind, n), []).extend(latencies)
            for kind, n in settings:
                ls = lats[(kind, n)]
                print(f"bench: queries, {kind}, {n} client{'s' if n > 1 else ''}: "
                      f"{statistics.median(rates[(kind, n)]):,.0f} queries/s (median of {args.rounds}), "
                      f"latency p50 {pct(ls, 50):.1f} ms, p99 {pct(ls, 99):.1f} ms over {len(ls):,} queries")
            cards = []
            with ThreadPoolExecutor(8) as pool:
                for repo in sample[:60]:
                    t = time.perf_counter()
                    repo_card(lambda m, a: ask(ports["a"], m, a)[1], repo, pool.map)
                    cards.append(time.perf_counter() - t)
            print(f"bench: a repository card (1 + 32 queries, 8 at a time, through worker a): "
                  f"p50 {pct(cards, 50):.0f} ms, p99 {pct(cards, 99):.0f} ms over {len(cards)} cards")
        finally:
            for proc in children.procs:
                children.stop(proc)
            delete_topics(args.kafka, [topic, *topics_with_prefix(args.kafka, f"{app_id}-")])


if __name__ == "__main__":
    main()
