"""Metrics on the real broker: star_leaders' counters in Prometheus text (--metrics-port) and in the
snapshots on <application-id>-metrics equal the input and what run_local reports; --no-metrics is off."""
import json
import time
import typing
import urllib.error
import uuid
import urllib.request

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

import star_leaders
from conftest import ROOT, Workers, create_topic, event_line, free_port, read_topic, wait_for
from stack_contract import metrics as contract
from wallaroo.runtime.metrics import TIME_EVERY
from wallaroo.runtime.routing import WATERMARK_HEADER, header
from wallaroo.runtime.topics import repartition_topic
from wallaroo.testing import run_local

pytestmark = pytest.mark.kafka

FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000",
        "--purge-interval-ms", "600000"]     # the repartition topics are read at the end
T0_MS = 1_420_113_600_000            # 2015-01-01T12:00:00Z


def inputs():
    """(line, event time ms): stars, forks, pull requests over 12 repositories, pushes the filter
    drops, and records that are not JSON objects (dead letters at the decoder)."""
    out = []
    for i in range(300):
        kind = ("WatchEvent", "WatchEvent", "ForkEvent", "PullRequestEvent", "PushEvent")[i % 5]
        ts = T0_MS + i * 1000
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts / 1000))
        out.append((event_line(kind, 10_000 + i, f"org/repo{i % 12}", created, number=i), ts))
    out += [(b"not json %d" % i, T0_MS + 300_000 + i) for i in range(7)]
    return out


@pytest.fixture(scope="module")
def run(kafka, tmp_path_factory):
    """One star_leaders worker with metrics on a port, one with --no-metrics, over the same input."""
    suffix = uuid.uuid4().hex[:8]
    source, sink, sink_off = f"metrics-in-{suffix}", f"metrics-out-{suffix}", f"metrics-off-{suffix}"
    app_id, app_off = f"metrics-{suffix}", f"metrics-off-{suffix}"
    create_topic(kafka, source, 1)     # one partition: the state sees one order, as run_local does
    records = inputs()
    p = Producer({"bootstrap.servers": kafka, "enable.idempotence": True})
    for line, ts in records:
        p.produce(source, line, timestamp=ts)
    p.flush(30)
    # the worker with metrics applies state messages where it makes them (one worker owns every
    # partition), as run_local does with local_state; the other sends them through Kafka
    local = run_local(star_leaders, records, args=["--kafka_source_topic", source, "--kafka_sink_topic", sink],
                      partitions=1, local_state=True)
    port, port_off = free_port(), free_port()
    workers = Workers(kafka, tmp_path_factory.mktemp("metrics"))
    try:
        on = workers.start("star_leaders", source, sink, "w1", app_id, *FAST, "--metrics-port", str(port), cwd=ROOT)
        off = workers.start("star_leaders", source, sink_off, "w1", app_off, *FAST, "--no-metrics", "--no-local-state",
                            "--metrics-port", str(port_off), cwd=ROOT)
        yield {"kafka": kafka, "records": records, "source": source, "sink": sink, "local": local.metrics, "outputs": len(local.outputs),
               "final": {r.key: r.value for r in local.outputs},
               "port": port, "port_off": port_off, "app_id": app_id, "app_off": app_off, "sink_off": sink_off,
               "workers": (on, off)}
    finally:
        workers.stop_all()


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    except (urllib.error.URLError, ConnectionError):
        return None


def sample(families, family, suffix, **labels):
    for s in families[family].samples:
        if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def local_steps(local):
    (pipeline,) = local["pipelines"]
    return pipeline, {s["name"]: s for s in pipeline["steps"]}


def settled(run):
    """The scrape once the worker has done everything run_local did (the state step included) and
    committed it (end-to-end is observed at the commit)."""
    pipeline, steps = local_steps(run["local"])
    want_e2e = sum(pipeline["end_to_end"]["counts"])

    def done():
        fams = scrape(run["port"])
        if fams is None:
            return None
        state = sample(fams, "wallaroo_step_messages_in", "_total", step="annotate repos")
        e2e = sample(fams, "wallaroo_pipeline_end_to_end_seconds", "_count")
        return fams if (state, e2e) == (steps["annotate repos"]["messages_in"], want_e2e) else None
    return wait_for(done, 120, "the worker's scrape to reach run_local's counts")


def test_scrape_counts_every_message_per_step_as_run_local_does(run):
    fams = settled(run)
    n = len(run["records"])
    _pipeline, steps = local_steps(run["local"])
    # the first step (the decoder) was called once per record; 7 were not JSON objects
    assert sample(fams, "wallaroo_step_messages_in", "_total", step="decoder") == n
    assert sample(fams, "wallaroo_step_messages_out", "_total", step="decoder") == n - 7
    assert sample(fams, "wallaroo_step_messages_in", "_total", step="filter interesting events") == n - 7
    assert sample(fams, "wallaroo_step_messages_out", "_total", step="filter interesting events") == 240
    for name, s in steps.items():
        labels = {"step": name, "kind": s["kind"], "pipeline": "star leaders", "worker": "w1",
                  "application": run["app_id"]}
        assert sample(fams, "wallaroo_step_messages_in", "_total", **labels) == s["messages_in"], name
        assert sample(fams, "wallaroo_step_messages_out", "_total", **labels) == s["messages_out"], name
        # the histogram: one cumulative bucket per fixed bound, +Inf holding every call
        buckets = [x for x in fams["wallaroo_step_latency_seconds"].samples
                   if x.name.endswith("_bucket") and x.labels["step"] == name]
        assert [float(b.labels["le"]) for b in buckets] == list(contract.LATENCY_BOUNDS_S) + [float("inf")]
        values = [b.value for b in buckets]
        # timed one call in TIME_EVERY, each standing for the calls before it: the count is run_local's
        # (the same calls timed) and trails the calls by those since the last timed one
        assert values == sorted(values) and values[-1] == sum(s["latency"]["counts"]), name
        assert s["messages_in"] - TIME_EVERY < values[-1] <= s["messages_in"], name
        assert sample(fams, "wallaroo_step_latency_seconds", "_sum", step=name) > 0
    assert steps[run["sink"]]["messages_out"] == run["outputs"] > 0     # a sink is named by its topic
    assert sample(fams, "wallaroo_dead_letters", "_total") == run["local"]["figures"]["dead_letters"] == 7
    assert sample(fams, "wallaroo_checkpoints", "_total") >= 1
    assert sample(fams, "wallaroo_restores", "_total") >= 1     # the state partition, on assignment
    # read every snapshot interval: the source and the repartition partition
    wait_for(lambda: (scrape(run["port"]) or {}).get("wallaroo_partitions_assigned") and
             sample(scrape(run["port"]), "wallaroo_partitions_assigned", "") == 2, 30, "2 partitions assigned")
    # event-time lag: the wall clock minus the newest record's time (2015)
    newest_s = max(ts for _, ts in run["records"]) / 1000
    assert abs(sample(fams, "wallaroo_event_time_lag_seconds", "") - (time.time() - newest_s)) < 600


def check_shape(value, hint, where="snapshot"):
    """`value` has exactly the keys and types of the TypedDict (or type) `hint`."""
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        assert isinstance(value, dict) and set(value) == set(hints), (where, sorted(value), sorted(hints))
        for k, h in hints.items():
            check_shape(value[k], h, f"{where}.{k}")
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        assert isinstance(value, list), where
        for i, v in enumerate(value):
            check_shape(v, args[0], f"{where}[{i}]")
    elif args:                        # int | None
        assert any(v is None if a is type(None) else isinstance(v, a) for a in args for v in [value]), where
    elif hint is float:
        assert isinstance(value, (int, float)), where
    else:
        assert isinstance(value, hint) and not (hint is int and isinstance(value, bool)), (where, value)


def test_snapshots_on_the_metrics_topic_have_the_contract_shape(run):
    settled(run)
    _pipeline, steps = local_steps(run["local"])
    topic = contract.metrics_topic(run["app_id"])

    def latest():
        got = [json.loads(m.value()) for m in read_topic(run["kafka"], topic, committed_only=False, idle_s=1.0)]
        last = got[-1] if got else None
        if last and {s["name"]: s["messages_in"] for s in last["pipelines"][0]["steps"]} == \
                {name: s["messages_in"] for name, s in steps.items()}:
            return got
        return None
    snapshots = wait_for(latest, 60, f"a snapshot on {topic} with the final counts")
    for m in read_topic(run["kafka"], topic, committed_only=False, idle_s=1.0)[:1]:
        assert m.key() == b"w1"
    for snap in snapshots:
        check_shape(snap, contract.Snapshot)
        assert snap["version"] == contract.VERSION and snap["worker"] == "w1"
        assert snap["application"] == run["app_id"]
        for s in snap["pipelines"][0]["steps"]:
            assert len(s["latency"]["counts"]) == len(contract.LATENCY_BOUNDS_S) + 1
    last = snapshots[-1]
    (pipeline,) = last["pipelines"]
    assert (pipeline["name"], pipeline["source"]) == ("star leaders", run["source"])
    assert [s["name"] for s in pipeline["steps"]] == ["decoder", "filter interesting events", "annotate repos",
                                                     run["sink"]]
    assert [s["kind"] for s in pipeline["steps"]] == ["decoder", "computation", "state", "sink"]
    for s in pipeline["steps"]:
        assert (s["messages_in"], s["messages_out"]) == (steps[s["name"]]["messages_in"],
                                                         steps[s["name"]]["messages_out"])
    # cumulative: counters never go down from one snapshot to the next of the same start
    firsts = [sum(x["messages_in"] for x in snap["pipelines"][0]["steps"]) for snap in snapshots]
    assert firsts == sorted(firsts)
    assert len({snap["started_ms"] for snap in snapshots}) == 1
    assert last["figures"]["dead_letters"] == 7 and last["figures"]["checkpoints"] >= 1
    assert contract.percentile(pipeline["end_to_end"]["counts"], 50) is not None


def test_no_metrics_serves_and_publishes_nothing(run):
    # the worker ran: its last leaderboard per key is run_local's (the sink coalesces per checkpoint)
    def final():
        return {m.key(): m.value() for m in read_topic(run["kafka"], run["sink_off"], idle_s=1.0, timeout_s=30)}
    wait_for(lambda: final() == run["final"], 120, "the --no-metrics worker's leaderboards")
    assert scrape(run["port_off"]) is None
    from confluent_kafka.admin import AdminClient
    names = AdminClient({"bootstrap.servers": run["kafka"]}).list_topics(timeout=10).topics
    assert contract.metrics_topic(run["app_id"]) in names
    assert contract.metrics_topic(run["app_off"]) not in names


def test_local_state_keeps_state_messages_off_kafka_with_the_same_leaderboards(run):
    """One worker owns every state partition: its messages for the state never cross the
    repartition topic (only watermarks do), and its leaderboards are those of the worker that sends
    all of them through Kafka (--no-local-state) and of run_local."""
    settled(run)

    def final(sink):
        return {m.key(): m.value() for m in read_topic(run["kafka"], sink, idle_s=1.0, timeout_s=30)}
    wait_for(lambda: final(run["sink_off"]) == run["final"], 120, "the --no-local-state worker's leaderboards")
    assert final(run["sink"]) == run["final"]
    crossed = {}
    for app_id in (run["app_id"], run["app_off"]):
        records = read_topic(run["kafka"], repartition_topic(app_id, star_leaders.config.STATE_NAME), idle_s=1.0)
        crossed[app_id] = [m for m in records if header(m.headers(), WATERMARK_HEADER) is None]
        assert len(records) > len(crossed[app_id])          # watermarks cross either way
    assert crossed[run["app_id"]] == []
    assert len(crossed[run["app_off"]]) == 240              # every star, fork and pull request


def test_one_call_in_time_every_is_timed_and_stands_for_the_calls_before_it():
    """Every call is counted; the first and then every TIME_EVERY-th is timed, weighted by the calls it
    stands for, in the step's latency and in end-to-end; a failing call counts as failed either way.
    Driven through the task, which counts and samples its decoder inline."""
    import wordcount
    from wallaroo.runtime.metrics import Histogram
    from wallaroo.runtime.serde import Serde
    from wallaroo.runtime.task import Task
    from wallaroo.testing import LocalCollector, LocalMessage, LocalResult, load_application

    app, module = load_application(wordcount, ["--kafka_source_topic", "in", "--kafka_sink_topic", "out"])
    task = Task(app, "timing", Serde(module, app), 2, LocalCollector(LocalResult()), metrics=True)
    metrics = task.metrics
    fig, pipeline = metrics.decoders[0], metrics.pipelines[0]
    for n in range(1, 3 * TIME_EVERY + 6):
        value = b"\xff" if n == 5 else b"# a comment"      # not UTF-8: the decoder raises
        task.process_source(LocalMessage("in", 0, n, None, value, None, T0_MS))
        timed_calls = 1 + (n - 1) // TIME_EVERY
        assert fig.messages_in == fig.as_dict()["messages_in"] == n
        assert len(pipeline.starts) == timed_calls
        weighted = 1 + (timed_calls - 1) * TIME_EVERY
        assert sum(fig.latency.counts) == sum(pipeline.weights) == weighted
        assert 0 <= n - weighted < TIME_EVERY
    assert fig.failed == 1 and fig.as_dict()["messages_out"] == fig.messages_in - 1
    metrics.committed(time.perf_counter())
    assert sum(pipeline.end_to_end.counts) == weighted and pipeline.starts == pipeline.weights == []

    at_commit, each = Histogram(), Histogram()
    starts, weights, now = [1.0, 1.5, 1.999999], [1, 16, 16], 2.0
    at_commit.observe_since(starts, weights, now)
    for t, w in zip(starts, weights):
        for _ in range(w):
            each.observe(now - t)
    assert at_commit.counts == each.counts and abs(at_commit.sum_s - each.sum_s) < 1e-9


def test_a_metrics_port_in_use_stops_the_worker_with_a_clear_message(run, tmp_path):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        workers = Workers(run["kafka"], tmp_path)
        try:
            w = workers.start("star_leaders", run["source"], run["sink_off"], "w9", f"metrics-busy-{uuid.uuid4().hex[:6]}",
                              *FAST, "--metrics-port", str(taken.getsockname()[1]), cwd=ROOT)
            assert w.wait(60) != 0
        finally:
            workers.stop_all()
    assert "cannot serve metrics on 127.0.0.1:" in w.log_path.read_text()
