"""Interactive queries (README "Queries"): star_leaders' repository cards, in memory and on the real broker."""
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

import star_leaders
from stack_contract import QUERY_REPO, STATE_NAME
from stack_contract.repo_card import completions, repo_card
from wallaroo.testing import run_local

import reference as ref
from conftest import event_line

T0 = datetime(2015, 1, 1, tzinfo=timezone.utc)


def at(seconds):
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def corpus(seed=10, n_repos=120, hours=30):
    """GH Archive lines over `hours` hours: a few leaders, a middle, a one-star tail, forks and PRs, and
    stars that fall out of the window; created_at in order, as the streamer sends them."""
    rnd = random.Random(seed)
    repos = [f"owner{i % 7}/repo-{i}" for i in range(n_repos)]
    weights = [1.0 / (i + 1) ** 1.2 for i in range(n_repos)]
    lines, eid = [], 0
    for second in sorted(rnd.randrange(hours * 3600) for _ in range(1500)):
        eid += 1
        repo = rnd.choices(repos, weights)[0]
        kind = rnd.choices(["WatchEvent", "ForkEvent", "PullRequestEvent"], [8, 1, 1])[0]
        lines.append(event_line(kind, eid, repo, at(second), number=eid))
    for i, repo in enumerate(["tail/one-star-a", "tail/one-star-b"]):   # exactly one star, late on
        lines.append(event_line("WatchEvent", eid + 1 + i, repo, at(hours * 3600 - 100 + i)))
    lines.append(event_line("WatchEvent", eid + 1, "tail/one-star-a", at(hours * 3600 - 50)))  # a repeat: not counted
    return lines, repos


def expected_cards(lines):
    """{repo: (stars, hourly, rank)} from the batch reference, for every repo with stars."""
    everyone = ref.batch_leaders(lines, top_n=10**9)["leaders"]
    return {d["repo"]: (d["stars"], d["hourly"], i + 1) for i, d in enumerate(everyone)}


def probes(expected):
    ranked = sorted(expected, key=lambda r: expected[r][2])
    return ranked[:3] + ranked[len(ranked) // 2:len(ranked) // 2 + 3] + ["tail/one-star-a", "tail/one-star-b",
                                                                          "nobody/never-starred"]


def check_card(card, expected, repo):
    if repo not in expected:
        assert (card["stars"], card["rank"], card["hourly"]) == (0, None, [0] * 24), repo
        return
    stars, hourly, rank = expected[repo]
    assert (card["repo"], card["stars"], card["hourly"], card["rank"]) == (repo, stars, hourly, rank), repo


def expected_completions(expected, prefix):
    """The reference's completions: repositories with stars whose owner/name or name starts with prefix."""
    p = prefix.lower()
    hits = [r for r in expected if r.lower().startswith(p) or r.split("/", 1)[1].lower().startswith(p)]
    return [{"repo": r, "stars": expected[r][0]} for r in sorted(hits, key=lambda r: (-expected[r][0], r))[:10]]


def test_run_local_answers_repo_cards_as_the_batch_reference():
    lines, _ = corpus()
    result = run_local(star_leaders, [(raw, ref.event_time_ms(raw)) for raw in lines], checkpoint_every=50)
    expected = expected_cards(lines)

    def ask(method, arg):
        return result.query(STATE_NAME, method, arg)
    for repo in probes(expected):
        card = repo_card(ask, repo)
        check_card(card, expected, repo)
        assert card["as_of"]["checkpoint"] == result.checkpoints
    assert expected["tail/one-star-a"][0] == 1
    card = repo_card(ask, "tail/one-star-a")
    assert card["as_of"]["window_end"][:13] == ref.batch_leaders(lines)["event_time"][:13]   # the same hour
    for prefix in ["owner3/", "OWNER0/Repo-1", "repo-2", "tail/"]:    # any case; owner/name or name
        assert completions(ask, prefix) == expected_completions(expected, prefix), prefix
    assert len(completions(ask, "owner3/")) == 10 and completions(ask, "zzz") == []
    with pytest.raises(ValueError):
        result.query(STATE_NAME, QUERY_REPO, "no-slash")
    with pytest.raises(LookupError):
        result.query(STATE_NAME, "update", "a/b")          # not a query: state methods are not callable


# ------------------------------------------------------------------ the real broker, two workers

FAST = ["--checkpoint-interval-ms", "200", "--session-timeout-ms", "3000", "--transaction-timeout-ms", "5000"]


def get(port, repo_or_path, arg=None):
    """(status, JSON body, headers) of one query to a worker's query port."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request
    url = f"http://127.0.0.1:{port}/query/{STATE_NAME}/{repo_or_path}?arg={urllib.parse.quote(arg, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def asker(port):
    def ask(method, arg):
        status, body, _ = get(port, method, arg)
        assert status == 200, (status, body)
        return body
    return ask


@pytest.fixture(scope="module")
def cluster(kafka, tmp_path_factory):
    """Two star_leaders workers with query ports, after they consumed the whole corpus."""
    from confluent_kafka import Producer

    from conftest import Workers, create_topic, free_port
    tag = uuid.uuid4().hex[:8]
    source, sink, app_id = f"q-src-{tag}", f"q-sink-{tag}", f"q-app-{tag}"
    create_topic(kafka, source, 4)
    lines, _ = corpus()
    p = Producer({"bootstrap.servers": kafka, "enable.idempotence": True, "linger.ms": 5})
    for i, raw in enumerate(lines):
        p.produce(source, raw, key=str(i).encode(), timestamp=ref.event_time_ms(raw))
    p.flush(30)
    w = Workers(kafka, tmp_path_factory.mktemp("query-workers"))
    ports = {"w1": free_port(), "w2": free_port()}
    procs = {n: w.start("star_leaders", source, sink, n, app_id, *FAST, "--query-port", str(port),
                        cwd=ref.__file__.rsplit("/tests/", 1)[0])
             for n, port in ports.items()}
    try:
        consumed(kafka, app_id, source, 120, procs.values())
        yield {"lines": lines, "ports": ports, "procs": procs, "app_id": app_id, "source": source, "sink": sink}
    finally:
        w.stop_all()


def consumed(kafka, app_id, source, timeout_s, procs):
    """Until the group committed all of `source` and then all of the state's repartition topic (the
    state work: the source alone is done when its records are handed on)."""
    from benchmarks.common import Probe
    from conftest import wait_for
    from test_end_to_end import wait_until_consumed
    from wallaroo.runtime.topics import repartition_topic
    wait_until_consumed(kafka, app_id, source, timeout_s, procs)
    with Probe(kafka, app_id) as probe:
        wait_for(lambda: probe.caught_up(repartition_topic(app_id, STATE_NAME)), timeout_s,
                 f"{app_id} to process its repartition topic")


def settled(port, repo):
    """The card once the worker answers for every partition (the group may still be settling)."""
    from conftest import wait_for

    def attempt():
        try:
            with ThreadPoolExecutor(8) as pool:
                return repo_card(asker(port), repo, pool.map)
        except AssertionError:
            return None
    return wait_for(attempt, 60, f"a full answer for {repo}")


@pytest.mark.kafka
def test_cards_equal_the_batch_reference_through_either_worker(cluster):
    expected = expected_cards(cluster["lines"])
    for name, port in cluster["ports"].items():
        for repo in probes(expected):
            check_card(settled(port, repo), expected, repo)
    from dashboard.app import create_app
    from dashboard.config import Config
    query = ",".join(f"127.0.0.1:{p}" for p in cluster["ports"].values())
    client = create_app(Config(query=query), start=False).test_client()
    for repo in probes(expected):
        r = client.get(f"/api/repos/{repo}")
        assert r.status_code == 200, r.data
        check_card(r.get_json(), expected, repo)
        assert set(r.get_json()) == {"repo", "stars", "hourly", "rank", "recent_events", "as_of"}
    assert client.get("/api/repos/no-slash").status_code == 400
    assert client.get("/api/repos/a/b/c").status_code == 400
    status, body, _ = get(cluster["ports"]["w1"], QUERY_REPO, "not a repo")
    assert status == 400 and "owner/name" in body["error"]
    assert get(cluster["ports"]["w1"], "nonexistent", "a/b")[0] == 404


def produce(kafka, topic, lines, partition=None):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kafka, "enable.idempotence": True, "linger.ms": 5})
    for raw in lines:
        kw = {} if partition is None else {"partition": partition}
        p.produce(topic, raw, timestamp=ref.event_time_ms(raw), **kw)
    p.flush(30)


XSS_TITLE = "<img src=x onerror=window.__xss=1><b>bold</b>"


@pytest.mark.kafka
@pytest.mark.browser
def test_search_box_in_chromium_shows_a_live_card(cluster, kafka, chromium):
    """Type a prefix, pick a completion: the card equals the reference and follows new stars; a bad name,
    a repository without stars and 503s (partitions moving) have their own states."""
    from playwright.sync_api import expect

    from conftest import ARTIFACTS, new_page
    from dashboard.config import Config
    from test_dashboard_helpers import serve

    ARTIFACTS.mkdir(exist_ok=True)
    lines = cluster["lines"]
    expected = expected_cards(lines)
    query = ",".join(f"127.0.0.1:{p}" for p in cluster["ports"].values())
    config = Config(kafka=kafka, topic=cluster["sink"], source_topic=cluster["source"], group=cluster["app_id"],
                    query=query)
    with serve(config) as (url, _):
        page, errors = new_page(chromium)
        page.goto(url + "/")
        box = page.locator("#search-input")
        box.press_sequentially("owner0/repo-", delay=20)
        options = page.locator("#search-list li[role=option]")
        want = [c["repo"] for c in expected_completions(expected, "owner0/repo-")]
        expect(options).to_have_count(len(want), timeout=20_000)
        assert options.locator(".completion-repo").all_inner_texts() == want
        page.screenshot(path=str(ARTIFACTS / "search-completions-1280.png"), full_page=False)
        repo = want[0]
        stars, hourly, rank = expected[repo]
        box.press("ArrowDown")
        box.press("Enter")
        card = page.locator("#card")
        expect(card).to_have_attribute("data-state", "live", timeout=20_000)
        assert card.get_attribute("data-repo") == repo
        assert card.locator(".repo-link").inner_text().replace("\n", "") == repo
        assert card.locator(".card-stars .card-value").inner_text().replace(",", "") == str(stars)
        assert card.locator(".card-rank .card-value").inner_text() == f"#{rank}"
        assert [int(b.get_attribute("data-stars")) for b in card.locator("rect.bar").all()] == hourly
        assert card.locator(".card-asof .card-value").inner_text().startswith(ref.batch_leaders(lines)["event_time"][:10])
        page.screenshot(path=str(ARTIFACTS / "search-1280.png"), full_page=False)

        # more stars (and a hostile PR title) while the card is shown: it follows them
        last = max(ref.event_time_ms(raw) for raw in lines) // 1000 - T0.timestamp()
        more = [event_line("WatchEvent", 900_000 + i, repo, at(last + 1 + i)) for i in range(3)]
        more.append(event_line("PullRequestEvent", 900_010, repo, at(last + 5), number=77, title=XSS_TITLE))
        lines.extend(more)
        produce(kafka, cluster["source"], more)
        stars2 = expected_cards(lines)[repo][0]
        assert stars2 == stars + 3
        expect(card).to_have_attribute("data-stars", str(stars2), timeout=30_000)
        expect(card.locator(".pr-title", has_text="onerror")).to_have_text(XSS_TITLE, timeout=10_000)
        assert card.locator(".card-stars .card-value").inner_text().replace(",", "") == str(stars2)
        assert page.evaluate("typeof window.__xss") == "undefined" and card.locator("img, b").count() == 0

        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("#lookup").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "search-390.png"), full_page=False)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        # 503 while partitions move: the card stays, marked stale, and comes back by itself
        page.route("**/api/repos/**", lambda route: route.fulfill(
            status=503, headers={"Retry-After": "1"}, content_type="application/json", body='{"error": "moving"}'))
        expect(card).to_have_attribute("data-state", "stale", timeout=10_000)
        expect(card.locator(".card-status")).to_contain_text("moving partitions")
        page.unroute("**/api/repos/**")
        expect(card).to_have_attribute("data-state", "live", timeout=10_000)

        # no stars in the window; a malformed name
        box.fill("nobody/never-starred")
        box.press("Enter")
        expect(card.locator(".card-empty")).to_contain_text("No stars in the last 24 h", timeout=20_000)
        assert card.locator(".card-rank .card-value").inner_text() == "\u2014"
        box.fill("no-slash")
        box.press("Enter")
        expect(page.locator("#search-msg")).to_have_attribute("data-kind", "error")
        expect(page.locator("#search-msg")).to_contain_text("not a repository name")
        unexpected = [e for e in errors if "Failed to load resource" not in e]
        assert not unexpected, unexpected


class CommittedStars(threading.Thread):
    """Follows the read_committed leaderboard topic: when each repository's committed star count was seen.
    A count seen committed before a query was sent is a floor for its answer (the state's changelog
    and the leaderboard are committed in one transaction)."""

    def __init__(self, kafka, topic, repos):
        super().__init__(daemon=True)
        from confluent_kafka import Consumer
        self.c = Consumer({"bootstrap.servers": kafka, "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                           "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False})
        self.topic, self.repos, self.seen, self.stop = topic, set(repos), {r: [] for r in repos}, threading.Event()

    def run(self):
        import json
        self.c.subscribe([self.topic])
        while not self.stop.is_set():
            for m in self.c.consume(100, 0.1):
                if m.error() or m.value() is None:
                    continue
                now = time.monotonic()
                for ld in json.loads(m.value())["leaders"]:
                    if ld["repo"] in self.repos:
                        self.seen[ld["repo"]].append((now, ld["stars"]))
        self.c.close()

    def floor(self, repo, before):
        return max((n for t, n in self.seen[repo] if t < before), default=0)


@pytest.mark.kafka
def test_queries_during_a_kill_9_never_answer_from_a_revoked_partition(cluster, kafka):
    """w2 is kill -9'd while new stars still flow in, so the state changes across the move. Every answer
    is checked against the state it claims: its stars lie between the count last seen committed before
    the query was sent (a stale copy of a revoked partition would fall below it) and the stars produced
    so far, its 24 hourly counts are those of that prefix, and no answer sent after the kill comes from
    w2. 503s carry Retry-After. At the end every card equals the batch reference over all the input."""
    import signal
    from star_leaders.state import partition_of

    from conftest import wait_for
    w1, procs, lines = cluster["ports"]["w1"], cluster["procs"], cluster["lines"]
    live, parts = [], set()
    for i in range(100):                       # new repositories, in different state partitions
        name = f"live/probe-{i}"
        if partition_of(name) not in parts:
            parts.add(partition_of(name))
            live.append(name)
        if len(live) == 6:
            break
    start = 30 * 3600 + 10                     # hour 30: after everything so far, all in one hour
    per_repo = 30
    more = [event_line("WatchEvent", 2_000_000 + j, live[j % len(live)], at(start + j)) for j in range(per_repo * len(live))]
    produced = {r: 0 for r in live}
    floors = CommittedStars(kafka, cluster["sink"], live)
    floors.start()
    answers, stop, kill_at = [], threading.Event(), {}

    def feed():
        from confluent_kafka import Producer
        p = Producer({"bootstrap.servers": kafka, "enable.idempotence": True, "linger.ms": 0})
        for j, raw in enumerate(more):
            produced[live[j % len(live)]] += 1           # before it can be read: an upper bound
            p.produce(cluster["source"], raw, partition=0, timestamp=ref.event_time_ms(raw))
            p.poll(0)
            time.sleep(0.03)
        p.flush(30)

    def hammer():
        while not stop.is_set():
            for repo in live:
                sent = time.monotonic()
                status, body, headers = get(w1, QUERY_REPO, repo)
                ceiling = dict(produced)[repo]          # produced by the time the answer is back
                answers.append((sent, ceiling, repo, status, body, headers.get("Retry-After")))
    feeder = threading.Thread(target=feed)
    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in [feeder, *threads]:
        t.start()
    try:
        wait_for(lambda: sum(produced.values()) >= len(more) // 3, 30, "a third of the new stars produced")
        procs["w2"].send_signal(signal.SIGKILL)
        procs["w2"].wait(10)
        kill_at.update(t=time.monotonic(), produced=sum(produced.values()))
        feeder.join(60)
        lines.extend(more)
        consumed(kafka, cluster["app_id"], cluster["source"], 60, [procs["w1"]])
        expected = expected_cards(lines)
        for repo in live + probes(expected):     # w1 owns everything now and answers it all itself
            wait_for(lambda: _matches(settled(w1, repo), expected, repo), 30, f"{repo}'s final card")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        floors.stop.set()
    assert kill_at["produced"] < len(more), "the kill landed after the input"
    wrong, by_status, late_w2, before, after = [], {}, [], {r: 0 for r in live}, {r: 0 for r in live}
    for sent, ceiling, repo, status, body, retry in answers:
        by_status[status] = by_status.get(status, 0) + 1
        if status == 503:
            assert retry == "1", body
            continue
        assert status == 200, (status, body)
        value, stars = body["value"], body["value"]["stars"]
        floor = floors.floor(repo, sent)
        hourly = [0] * 23 + [stars] if stars else None
        if not floor <= stars <= ceiling or (hourly and (value["hourly"], value["window_end"][11:13]) != (hourly, "06")):
            wrong.append((repo, floor, ceiling, value))
        if body["as_of"]["worker"] == "w2" and sent > kill_at["t"]:
            late_w2.append(body)
        (before if sent < kill_at["t"] else after)[repo] = max(stars, (before if sent < kill_at["t"] else after)[repo])
    floored = sum(1 for sent, _, repo, status, *_ in answers
                  if status == 200 and sent > kill_at["t"] and floors.floor(repo, sent) > 0)
    print(f"answers {by_status}, {floored} after the kill with a committed floor > 0; before/after {before} {after}")
    assert not wrong, wrong[:3]
    assert not late_w2, late_w2[:3]
    assert floored > 0                     # the floor was in force after the move, not only 0
    assert by_status.get(503, 0) > 0 and by_status.get(200, 0) > 0, by_status
    assert all(after[r] > before[r] for r in live), (before, after)        # the state moved on after the move
    assert sum(len(v) for v in floors.seen.values()) > 0


def _matches(card, expected, repo):
    try:
        check_card(card, expected, repo)
        return True
    except AssertionError:
        return False


def test_query_port_rate_limits_forwarded_requests_and_caps_connections():
    """The forwarding header is no way around the per-client rate, and connections beyond the cap get
    503 at once (no Kafka: both are decided before a query reaches the worker's loop)."""
    import socket
    import urllib.error
    import urllib.request

    from conftest import wait_for
    from wallaroo.runtime.queries import FORWARDED, QueryServer

    server = QueryServer(task=None, admin=None, group="g", port=0, rate_per_s=1.0, max_connections=4)
    server.start()
    url = f"http://127.0.0.1:{server.port}/not-a-query"

    def status(headers=None):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.headers
    try:
        got = [status({FORWARDED: "1"})[0] for _ in range(4)]
        assert got == [404, 404, 429, 429], got            # a burst of 2 s at 1/s, then limited
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        code, headers = status()
        assert (code, headers["Retry-After"]) == (503, "1")
        for s in idle:
            s.close()
        wait_for(lambda: status()[0] != 503, 10, "a connection slot to free up")
    finally:
        server.shutdown()


def test_assigned_partitions_reads_the_consumer_protocol_and_refuses_garbage():
    """The owner lookup parses the group listing's raw member assignment (consumer protocol)."""
    import struct
    from wallaroo.runtime.queries import assigned_partitions

    def assignment(topics, version=0, user_data=b""):
        out = struct.pack(">hi", version, len(topics))
        for t, parts in topics:
            out += struct.pack(">h", len(t)) + t.encode() + struct.pack(f">i{len(parts)}i", len(parts), *parts)
        return out + struct.pack(">i", len(user_data)) + user_data

    raw = assignment([("app-repartition", [0, 3]), ("gharchive", [1])], version=1, user_data=b"x")
    assert assigned_partitions(raw) == [("app-repartition", 0), ("app-repartition", 3), ("gharchive", 1)]
    assert assigned_partitions(assignment([])) == []
    assert assigned_partitions(raw[:9]) == []                   # truncated inside a topic name
    assert assigned_partitions(b"") == [] and assigned_partitions(b"\xff" * 7) == []
    huge = struct.pack(">hih", 0, 1, 1) + b"t" + struct.pack(">i", 2**31 - 1)
    assert assigned_partitions(huge) == []                      # a count no member sends
