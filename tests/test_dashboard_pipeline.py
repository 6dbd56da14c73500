"""The pipeline page against the real broker: contract-shaped snapshots of two workers (and hostile
records) on a metrics topic; /api/pipeline checked against figures computed here from the snapshots
the test made; the page in Chromium (every step with figures, live updates, charts drawn, escaping,
phone width); a restarted worker counted from its new start."""
import math
import threading
import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from conftest import ARTIFACTS, ROOT, Workers, create_topic, event_line, new_page, wait_for
from dashboard.config import Config
from dashboard.pipeline import Pipelines
from stack_contract.metrics import LATENCY_BOUNDS_S, VERSION, metrics_topic
from test_dashboard_helpers import get_json, serve

NB = len(LATENCY_BOUNDS_S) + 1
STEPS = [("decoder", "decoder"), ("filter interesting events", "computation"),
         ("annotate repos", "state"), ("leaderboard", "sink")]
# Per 5-second interval, messages into the decoder and their latency bins {bin index: count}; the
# other steps get a quarter of the messages (the filter passes 1 in 4) in bin 4.
W1_SLOW = (2000, {2: 1980, 6: 19, 12: 1})        # 400 msgs/s
W1_FAST = (4000, {2: 3960, 6: 38, 12: 2})        # 800 msgs/s, the last 3 intervals
W2 = (1000, {2: 990, 6: 9, 19: 1})               # 200 msgs/s; one over 1 s
E2E = {11: 3, 12: 1}                             # per interval, end to end: 3 at <= 5 ms, 1 at <= 10 ms
XSS = "<img src=x onerror=window.__xss=1>"


class Worker:
    """A worker's cumulative counters, built interval by interval as the engine would."""

    def __init__(self, name, started_ms):
        self.name, self.started_ms, self.at_ms = name, started_ms, started_ms
        self.steps = [{"in": 0, "hist": [0] * NB} for _ in STEPS]
        self.e2e = [0] * NB
        self.checkpoints = 0

    def interval(self, shape, seconds=5.0):
        n, bins = shape
        self.at_ms += int(seconds * 1000)
        for b, c in bins.items():
            self.steps[0]["hist"][b] += c
        self.steps[0]["in"] += n
        for s in self.steps[1:]:
            s["in"] += n if s is self.steps[1] else n // 4
            s["hist"][4] += n if s is self.steps[1] else n // 4
        for b, c in E2E.items():
            self.e2e[b] += c
        self.checkpoints += 1
        return self.record()

    def record(self, **over) -> bytes:
        steps = []
        for (name, kind), s in zip(STEPS, self.steps):
            out = s["in"] // 4 if name == "filter interesting events" else s["in"]
            steps.append({"name": name, "kind": kind, "messages_in": s["in"], "messages_out": out,
                          "latency": {"counts": list(s["hist"]), "sum_s": sum(s["hist"]) * 1e-5}})
        doc = {"version": VERSION, "application": "star-leaders", "worker": self.name,
               "started_ms": self.started_ms, "at_ms": self.at_ms,
               "pipelines": [{"name": "star leaders", "source": "gharchive", "steps": steps,
                              "end_to_end": {"counts": list(self.e2e), "sum_s": 0.004 * sum(self.e2e)}}],
               "figures": {"checkpoints": self.checkpoints,
                           "checkpoint_latency": {"counts": [0] * 8 + [self.checkpoints] + [0] * (NB - 9),
                                                  "sum_s": 0.002 * self.checkpoints},
                           "restores": 0, "restore_seconds": 0.0, "dead_letters": 2, "reconnects": 0,
                           "consumer_lag": 17, "event_time_lag_ms": 4200, "partitions": 3}}
        doc.update(over)
        return orjson.dumps(doc)


def exact_percentile(counts, q):
    """The q-th percentile of the observations, each taken as its bin's upper bound, by sorting them."""
    values = sorted(b for b, n in zip(LATENCY_BOUNDS_S + (math.inf,), counts) for _ in range(n))
    v = values[math.ceil(len(values) * q / 100) - 1]
    return ">1s" if v == math.inf else v


def hostile(w1: Worker) -> list[tuple[bytes, bytes]]:
    good = orjson.loads(w1.record())
    bad_len = orjson.loads(w1.record())
    bad_len["pipelines"][0]["steps"][0]["latency"]["counts"] = [1, 2]
    negative = orjson.loads(w1.record())
    negative["pipelines"][0]["steps"][1]["messages_in"] = -5
    many = orjson.loads(w1.record())
    many["pipelines"][0]["steps"] = many["pipelines"][0]["steps"] * 25     # 100 steps
    backwards = orjson.loads(w1.record())
    backwards["at_ms"] += 1
    backwards["pipelines"][0]["steps"][0]["messages_in"] = 1
    return [
        (b"w-1", b"not json {"),
        (b"w-1", orjson.dumps({**good, "version": VERSION + 1})),
        (b"w-1", orjson.dumps({**good, "worker": "w-impostor"})),        # key is not the worker
        (b"w-1", orjson.dumps(bad_len)),
        (b"w-1", orjson.dumps(negative)),
        (b"w-1", orjson.dumps(many)),
        (b"w-1", orjson.dumps(backwards)),                               # counters went backwards
        (b"w-1", orjson.dumps({**good, "at_ms": int(time.time() * 1000) + 3_600_000})),   # the future
        (b"w-1", b'{"version": 1, "worker": "w-1", "started_ms": 1e999}'),
        (b"w-1", b"[]"),
    ]


@pytest.fixture(scope="module")
def pipeline_app(kafka):
    def topic_name(prefix):
        return f"{prefix}-{uuid.uuid4().hex[:8]}"
    topic = topic_name("dash-metrics")
    create_topic(kafka, topic, partitions=1)
    now = int(time.time() * 1000)
    w1, w2 = Worker("w-1", now - 60_000), Worker("w-2", now - 59_700)
    records = []
    for k in range(12):
        records.append((b"w-1", w1.interval(W1_FAST if k >= 9 else W1_SLOW)))
        records.append((b"w-2", w2.interval(W2)))
    bad = hostile(w1)
    # a third worker with a pipeline of hostile names: shown, as text
    evil = Worker(XSS, now - 20_000)
    evil_doc = orjson.loads(evil.interval(W2))
    evil_doc["pipelines"][0]["name"] = "evil " + XSS
    records += bad + [(XSS.encode(), orjson.dumps(evil_doc))]
    p = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
    for key, value in records:
        p.produce(topic, key=key, value=value)
    assert p.flush(30) == 0
    config = Config(kafka=kafka, metrics_topic=topic, topic=topic_name("dash-nolb"),
                    source_topic=topic_name("dash-nosrc"), group=topic_name("dash-nogrp"))
    with serve(config) as (url, app):
        wait_for(lambda: get_json(url + "/api/pipeline")["records"]["applied"] == 25 and
                 sum(get_json(url + "/api/pipeline")["records"]["skipped"].values()) == len(bad),
                 timeout_s=60, what="every snapshot read")
        yield {"url": url, "kafka": kafka, "topic": topic, "w1": w1, "w2": w2, "producer": p, "bad": len(bad)}


@pytest.mark.kafka
def test_api_pipeline_matches_the_snapshots(pipeline_app):
    doc = get_json(pipeline_app["url"] + "/api/pipeline")
    assert doc["records"]["skipped"]["malformed"] + doc["records"]["skipped"]["out_of_order"] == pipeline_app["bad"]
    names = [p["name"] for p in doc["pipelines"]]
    assert sorted(names) == ["evil " + XSS, "star leaders"]
    pipe = doc["pipelines"][names.index("star leaders")]
    assert pipe["source"] == "gharchive" and sorted(pipe["workers"]) == ["w-1", "w-2"]
    steps = {s["name"]: s for s in pipe["steps"]}
    assert [s["name"] for s in pipe["steps"]] == [n for n, _ in STEPS]
    w1, w2 = pipeline_app["w1"], pipeline_app["w2"]
    dec = steps["decoder"]
    assert dec["messages_in"] == 9 * 2000 + 3 * 4000 + 12 * 1000
    # throughput: 400 + 200 msgs/s for 45 s, then 800 + 200 for 15 s
    assert dec["throughput"]["now"] == pytest.approx(1000)
    assert dec["throughput"]["min"] == pytest.approx(600)
    assert dec["throughput"]["median"] == pytest.approx(600)
    assert dec["throughput"]["max"] == pytest.approx(1000)
    assert steps["annotate repos"]["throughput"]["now"] == pytest.approx(250)
    assert steps["filter interesting events"]["messages_out"] == dec["messages_in"] // 4
    # latency percentiles over the window: both workers started inside it, so everything counts
    combined = [a + b for a, b in zip(w1.steps[0]["hist"], w2.steps[0]["hist"])]
    for q in (50, 75, 90, 99, 99.9, 99.99):
        assert dec["latency"]["p%g" % q] == exact_percentile(combined, q), q
    assert dec["latency"]["p99.99"] == ">1s" and dec["latency"]["p50"] == 5e-6
    assert steps["leaderboard"]["latency"]["p99"] == LATENCY_BOUNDS_S[4]
    e2e = [a + b for a, b in zip(w1.e2e, w2.e2e)]
    assert pipe["end_to_end"]["p50"] == exact_percentile(e2e, 50) == 5e-3
    assert pipe["end_to_end"]["p99"] == exact_percentile(e2e, 99) == 1e-2
    assert steps["decoder"]["workers"]["w-2"]["throughput"] == pytest.approx(200)
    # the series behind the chart: one point per 5 s, each the sum of the workers' rates then
    assert len(dec["series"]) == len(doc["times_ms"]) >= 10
    assert dec["series"][-3:] == pytest.approx([1000] * 3)
    assert dec["series"][:-3] == pytest.approx([600] * (len(dec["series"]) - 3))
    workers = {w["name"]: w for w in doc["workers"]}
    assert set(workers) == {"w-1", "w-2", XSS}
    assert workers["w-1"]["throughput"]["now"] == pytest.approx(800)
    assert workers["w-1"]["checkpoints"] == 12 and workers["w-1"]["consumer_lag"] == 17
    assert workers["w-1"]["checkpoint_latency"]["p99"] == LATENCY_BOUNDS_S[8]
    assert workers["w-2"]["event_time_lag_ms"] == 4200 and workers["w-2"]["partitions"] == 3


def test_restarted_worker_counts_from_its_new_start():
    now = int(time.time() * 1000)
    board = Pipelines()
    old = Worker("w-1", now - 100_000)
    for _ in range(4):
        assert board.apply(b"w-1", old.interval(W1_FAST), now)
    new = Worker("w-1", now - 10_000)
    assert board.apply(b"w-1", new.interval(W2), now)
    dec = board.view(now)["pipelines"][0]["steps"][0]
    assert dec["messages_in"] == 1000 and dec["throughput"]["now"] == pytest.approx(200)
    assert dec["latency"]["count"] == 1000
    # a snapshot of the old start arriving late is not taken
    assert not board.apply(b"w-1", old.interval(W1_FAST), now)
    assert board.skipped["out_of_order"] == 1


@pytest.mark.kafka
@pytest.mark.browser
def test_pipeline_page_live(pipeline_app, chromium):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    url, w1, w2, p = pipeline_app["url"], pipeline_app["w1"], pipeline_app["w2"], pipeline_app["producer"]
    page, errors = new_page(chromium)
    try:
        page.goto(url + "/")
        page.click("#pipeline-link")                      # linked from the main page
        page.wait_for_url(url + "/pipeline")
        card = page.locator("section.pipeline[data-pipeline='star leaders']")
        boxes = card.locator("ol.flow > li.step")
        expect(boxes).to_have_count(len(STEPS), timeout=30_000)
        assert boxes.locator(".step-name").all_inner_texts() == [n for n, _ in STEPS]
        dec = card.locator("li.step[data-step='decoder']")
        expect(dec.locator(".step-rate-now")).to_have_text("1,000")
        expect(dec.locator(".lat-p50 .fig-value")).to_have_text("≤ 5 µs")
        expect(dec.locator(".lat-p99_99 .fig-value")).to_have_text("> 1 s")
        expect(card.locator("li.step[data-step='annotate repos'] .step-rate-now")).to_have_text("250")
        expect(page.locator("#workers tbody tr")).to_have_count(3)
        expect(page.locator("#workers tr[data-worker='w-1'] td.c0")).to_have_text("800")
        # hostile names are text
        evil = page.locator("section.pipeline h2", has_text="evil <img")
        expect(evil).to_have_text("evil " + XSS)
        assert page.locator("section.pipeline img").count() == 0
        assert page.evaluate("typeof window.__xss") == "undefined"

        # the charts are drawn: uPlot's canvases hold painted pixels
        def painted():
            return page.evaluate("""() => Array.from(document.querySelectorAll(
                "section.pipeline[data-pipeline='star leaders'] .uplot canvas")).map(c => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })""")
        counts = wait_for(lambda: (lambda c: c if len(c) == 2 and min(c) > 500 else None)(painted()),
                          timeout_s=20, what="both charts painted")
        assert len(counts) == 2
        page.screenshot(path=str(ARTIFACTS / "pipeline-1280.png"), full_page=True)

        # live: both workers report 2400 + 200 msgs/s more, and the page follows without a reload
        page.evaluate("window.__sameDocument = 7")
        updates = int(page.locator("body").get_attribute("data-updates"))
        p.produce(pipeline_app["topic"], key=b"w-1", value=w1.interval((12000, {3: 12000})))
        p.produce(pipeline_app["topic"], key=b"w-2", value=w2.interval((1000, {3: 1000})))
        assert p.flush(30) == 0
        expect(dec.locator(".step-rate-now")).to_have_text("2,600", timeout=30_000)
        expect(page.locator("#workers tr[data-worker='w-1'] td.c0")).to_have_text("2,400")
        assert int(page.locator("body").get_attribute("data-updates")) > updates
        assert page.evaluate("window.__sameDocument") == 7
        assert errors == []

        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390   # nothing wider than a phone
        page.screenshot(path=str(ARTIFACTS / "pipeline-390.png"), full_page=True)
        page.goto(url + "/")
        page.screenshot(path=str(ARTIFACTS / "dashboard-nav-390.png"))
    finally:
        page.close()


class Replay(threading.Thread):
    """Archive-shaped events into the source topic, a few hundred a second, until stopped."""

    def __init__(self, kafka, topic):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": kafka, "linger.ms": 20})
        self.topic, self.stop_event, self.sent = topic, threading.Event(), 0

    def run(self):
        t0 = 1_420_113_600_000           # 2015-01-01T12:00:00Z
        while not self.stop_event.is_set():
            for _ in range(100):
                i = self.sent
                kind = ("WatchEvent", "WatchEvent", "ForkEvent", "PullRequestEvent", "PushEvent")[i % 5]
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 / 1000 + i))
                self.p.produce(self.topic, event_line(kind, 50_000 + i, f"org/repo{i % 17}", created, number=i),
                               timestamp=t0 + i * 1000)
                self.sent += 1
            self.p.poll(0)
            self.stop_event.wait(0.3)
        self.p.flush(10)


@pytest.mark.kafka
@pytest.mark.browser
def test_star_leaders_steps_live_during_a_replay(kafka, chromium, tmp_path):
    """Two real star_leaders workers publish their snapshots; the page and /api/pipeline show every
    step of star_leaders with figures that grow while events keep arriving."""
    from playwright.sync_api import expect

    suffix = uuid.uuid4().hex[:8]
    source, sink, app_id = f"pipe-in-{suffix}", f"pipe-out-{suffix}", f"pipe-{suffix}"
    create_topic(kafka, source, 2)
    replay = Replay(kafka, source)
    replay.start()
    workers = Workers(kafka, tmp_path)
    config = Config(kafka=kafka, metrics_topic=metrics_topic(app_id), topic=sink, source_topic=source, group=app_id)
    try:
        for name in ("w1", "w2"):
            workers.start("star_leaders", source, sink, name, app_id, "--checkpoint-interval-ms", "500", cwd=ROOT)
        with serve(config) as (url, app):
            def both_reporting():
                doc = get_json(url + "/api/pipeline")
                if not doc["pipelines"] or len(doc["pipelines"][0]["workers"]) < 2:
                    return None
                steps = {s["name"]: s for s in doc["pipelines"][0]["steps"]}
                ok = all(steps.get(n, {}).get("throughput", {}).get("now", 0) > 0
                         for n in ("filter interesting events", "annotate repos"))
                return doc if ok else None
            doc = wait_for(both_reporting, 90, "both workers' snapshots with traffic through every step")
            (pipe,) = doc["pipelines"]
            steps = [s["name"] for s in pipe["steps"]]
            assert steps[1:3] == ["filter interesting events", "annotate repos"] and steps[-1] == sink
            assert doc["records"]["skipped"] == {"malformed": 0, "out_of_order": 0, "too_many_workers": 0}
            annotate = next(s for s in pipe["steps"] if s["name"] == "annotate repos")
            assert annotate["kind"] == "state" and annotate["latency"]["p50"] is not None

            page, errors = new_page(chromium)
            try:
                page.goto(url + "/pipeline")
                boxes = page.locator("section.pipeline li.step")
                expect(boxes).to_have_count(len(steps), timeout=30_000)
                assert boxes.locator(".step-name").all_inner_texts() == steps
                counts = page.locator("li.step[data-step='annotate repos'] .step-count")
                before = counts.inner_text()
                expect(counts).not_to_have_text(before, timeout=30_000)      # live, during the replay
                expect(page.locator("#workers tbody tr")).to_have_count(2)
                page.wait_for_timeout(1000)
                page.screenshot(path=str(ARTIFACTS / "pipeline-replay-1280.png"), full_page=True)
                page.set_viewport_size({"width": 390, "height": 844})
                page.wait_for_timeout(500)
                page.screenshot(path=str(ARTIFACTS / "pipeline-replay-390.png"), full_page=True)
                assert errors == []
            finally:
                page.close()
    finally:
        replay.stop_event.set()
        replay.join(15)
        workers.stop_all()


def test_memory_stays_bounded_whatever_the_topic_holds():
    from dashboard import pipeline
    now = int(time.time() * 1000)
    board = Pipelines()
    for i in range(pipeline.MAX_WORKERS + 5):                 # more workers than kept
        w = Worker(f"w{i}", now - 60_000)
        board.apply(w.name.encode(), w.interval(W2), now)
    assert board.skipped["too_many_workers"] == 5 and len(board.view(now)["workers"]) == pipeline.MAX_WORKERS
    flood = Worker("w0", now - 50_000)                        # one worker, snapshots 10 ms apart
    for _ in range(1000):
        assert board.apply(b"w0", flood.interval(W2, seconds=0.01), now)
    assert len(board._workers["w0"]) == pipeline.MAX_HISTORY
    assert not board.apply(b"w0", b"x" * (pipeline.MAX_RECORD_BYTES + 1), now)
