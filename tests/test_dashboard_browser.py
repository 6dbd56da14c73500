"""The live page in Debian's headless Chromium (Playwright sync API) against the real broker:
empty state, leaders arriving without reload, reordering, escaping of archive strings, layout at
phone and desktop widths.  Screenshots go to test-artifacts/ (gitignored)."""
import random
import re
import threading
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ARTIFACTS, create_topic, free_port, new_page
from dashboard.config import Config
from test_dashboard_helpers import (REPOS, expected_top, hourly_shape, leader, produce_txn, record,
                                    recent_events, serve)

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

XSS_TITLE = "<script>window.__xss=1</script><b>bold</b>"


def leaderboard(seed: int, window_end: str, boost: dict | None = None) -> dict[int, list[dict]]:
    """Realistic boards for 3 state partitions: 16 repos, hourly shapes, recent forks/PRs."""
    rng = random.Random(seed)
    boards = {0: [], 1: [], 2: []}
    for i, repo in enumerate(REPOS):
        stars = (boost or {}).get(repo, int(2600 / (i + 1.3)) + rng.randrange(0, 40))
        boards[i % 3].append(leader(repo, stars, hourly_shape(rng, stars), recent_events(rng, repo, window_end)))
    return boards


def produce_boards(kafka, topic, boards, window_end):
    produce_txn(kafka, topic, [(p, record(p, window_end, ls)) for p, ls in boards.items()])


class Traffic(threading.Thread):
    """Keeps a source topic growing, so the health bar shows real events/s and lag."""

    def __init__(self, kafka, topic):
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": kafka, "linger.ms": 20})
        self.topic = topic
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            for _ in range(150):
                self.p.produce(self.topic, value=b'{"type":"WatchEvent"}')
            self.p.poll(0)
            self.stop_event.wait(0.25)
        self.p.flush(10)


def test_live_page(kafka, topic_name, chromium, admin):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    topic, source = topic_name("dash-ui"), topic_name("dash-ui-src")
    group = f"dash-ui-grp-{uuid.uuid4().hex[:8]}"
    create_topic(kafka, source, partitions=2)
    traffic = Traffic(kafka, source)
    traffic.start()
    config = Config(kafka=kafka, topic=topic, source_topic=source, group=group, health_interval=0.5)
    with serve(config) as (url, app):
        page, errors = new_page(chromium)
        try:
            page.goto(url + "/")
            # ---- empty state, while the topic does not exist yet
            empty = page.locator("#empty")
            expect(empty).to_be_visible()
            expect(empty).to_contain_text("Waiting for the first leaders…")
            expect(page.locator("#empty-hint")).to_contain_text("does not exist yet", timeout=30_000)
            expect(page.locator("#h-kafka")).to_have_text("connected", timeout=30_000)
            expect(page.locator(".leader")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "dashboard-empty-1280.png"), full_page=True)
            page.evaluate("window.__sameDocument = 42")

            # ---- first leaderboard, with hostile strings in one leader's events
            create_topic(kafka, topic, partitions=1)
            boards = leaderboard(seed=1, window_end="2015-01-01T12:59:59Z")
            docker = next(l for ls in boards.values() for l in ls if l["repo"] == "docker/docker")
            docker["recent_events"] = [
                {"type": "PullRequestEvent", "actor": "mallory", "created_at": "2015-01-01T12:58:01Z",
                 "url": "javascript:alert(document.cookie)", "title": XSS_TITLE, "number": 4242,
                 "action": "opened"},
                {"type": "ForkEvent", "actor": "mallory", "created_at": "2015-01-01T12:41:10Z",
                 "url": "javascript:alert(1)", "name": "evil/fork"},
                docker["recent_events"][0],
            ]
            produce_boards(kafka, topic, boards, "2015-01-01T12:59:59Z")
            expected = [l["repo"] for l in expected_top(boards)]
            assert "docker/docker" in expected

            rows = page.locator("ol#leaders > li.leader")
            expect(rows).to_have_count(10, timeout=30_000)
            expect(empty).to_be_hidden()
            assert rows.locator(".repo-link").all_inner_texts() == expected
            assert page.evaluate("window.__sameDocument") == 42, "the page reloaded"
            expect(page.locator("#clock-hour")).to_have_text("2015-01-01 12:00 UTC")
            first = rows.first
            assert first.locator("a.repo-link").get_attribute("href") == f"https://github.com/{expected[0]}"
            assert first.locator(".stars-count").inner_text().replace(",", "") == str(expected_top(boards)[0]["stars"])
            assert first.locator("svg.spark rect.spark-hit").count() == 24
            assert "Stars per hour" in first.locator("svg.spark > title").text_content()
            assert first.locator(".event").count() == 3

            # ---- untrusted strings are text, never markup or script
            title = page.locator(".pr-title", has_text="window.__xss")
            expect(title).to_be_visible()
            assert title.inner_text() == XSS_TITLE
            assert title.locator("b").count() == 0
            assert page.evaluate("typeof window.__xss") == "undefined"
            assert page.locator('a[href^="javascript:"]').count() == 0
            expect(page.locator("span.event-link", has_text="evil/fork")).to_be_visible()
            assert page.locator("a", has_text="evil/fork").count() == 0
            assert page.locator("a", has_text="#4242").count() == 0
            # a normal PR/fork link in the same list is a real link
            assert page.locator("li.leader[data-repo='docker/docker'] a.event-link").count() == 1

            # ---- group commits make the lag visible; traffic makes events/s visible
            c = Consumer({"bootstrap.servers": kafka, "group.id": group, "enable.auto.commit": False})
            c.commit(offsets=[TopicPartition(source, 0, 100), TopicPartition(source, 1, 100)], asynchronous=False)
            c.close()
            expect(page.locator("#h-lag")).not_to_have_text("\u2014", timeout=30_000)
            expect(page.locator("#h-in")).not_to_have_text("\u2014", timeout=30_000)

            # ---- a changed leaderboard reorders the list live
            fifth = expected[4]
            boards2 = leaderboard(seed=1, window_end="2015-01-01T13:21:07Z", boost={fifth: 5000})
            # keep the hostile events in the later board too
            for ls in boards2.values():
                for l in ls:
                    if l["repo"] == "docker/docker":
                        l["recent_events"] = docker["recent_events"]
            produce_boards(kafka, topic, boards2, "2015-01-01T13:21:07Z")
            expected2 = [l["repo"] for l in expected_top(boards2)]
            assert expected2[0] == fifth and expected2 != expected
            expect(rows.first.locator(".repo-link")).to_have_text(fifth, timeout=30_000)
            assert rows.locator(".repo-link").all_inner_texts() == expected2
            expect(rows.first.locator(".move-up")).to_have_text("\u25B24")
            expect(page.locator("#clock-hour")).to_have_text("2015-01-01 13:00 UTC")
            assert page.evaluate("window.__sameDocument") == 42
            assert page.evaluate("typeof window.__xss") == "undefined"

            page.wait_for_timeout(600)     # let the rank flash settle a little for the picture
            page.screenshot(path=str(ARTIFACTS / "dashboard-1280.png"), full_page=True)

            # ---- phone width: same content, no horizontal scrolling
            page.set_viewport_size({"width": 390, "height": 844})
            expect(rows).to_have_count(10)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            assert rows.first.locator(".stars-count").is_visible()
            assert rows.first.locator("svg.spark").bounding_box()["width"] > 200   # full-width sparkline
            page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-390-top.png"))
            page.set_viewport_size({"width": 375, "height": 812})
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            # the dark colour scheme, for a look (prefers-color-scheme)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=str(ARTIFACTS / "dashboard-dark-1280.png"))
            assert not errors, errors
        finally:
            page.close()
            traffic.stop_event.set()
            traffic.join(10)


class GroupMember(threading.Thread):
    """A member of a consumer group for as long as it runs (what a star_leaders worker is to the group)."""

    def __init__(self, kafka, group, topic, name):
        super().__init__(daemon=True)
        self.c = Consumer({"bootstrap.servers": kafka, "group.id": group, "client.id": f"{group}-{name}",
                           "enable.auto.commit": False, "session.timeout.ms": 6000})
        self.c.subscribe([topic])
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.c.poll(0.2)
        self.c.close()


def test_health_card_shows_missing_workers_and_an_unreachable_kafka(kafka, topic_name, chromium):
    """Workers: the group's members against --expected-workers (a crash-looping worker is missing);
    Kafka: unreachable, for how long.  Screenshots of both."""
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    topic, source = topic_name("dash-wk"), topic_name("dash-wk-src")
    group = f"dash-wk-{uuid.uuid4().hex[:8]}"
    create_topic(kafka, topic)
    create_topic(kafka, source, partitions=2)
    boards = leaderboard(seed=3, window_end="2015-01-02T08:40:00Z")
    produce_boards(kafka, topic, boards, "2015-01-02T08:40:00Z")
    member = GroupMember(kafka, group, source, "primary")
    member.start()
    config = Config(kafka=kafka, topic=topic, source_topic=source, group=group, expected_workers=2,
                    health_interval=0.5)
    try:
        with serve(config) as (url, app):
            page, errors = new_page(chromium)
            try:
                page.goto(url + "/")
                expect(page.locator("#h-workers")).to_have_text("1 / 2", timeout=60_000)
                expect(page.locator("#h-workers-dot")).to_have_attribute("data-state", "warn")
                expect(page.locator("#h-workers-note")).to_have_text("1 missing \u00B7 restarting?")
                expect(page.locator("ol#leaders > li.leader")).to_have_count(10, timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / "dashboard-workers-missing-1280.png"))
                second = GroupMember(kafka, group, source, "secondary")
                second.start()
                try:
                    expect(page.locator("#h-workers")).to_have_text("2 / 2", timeout=60_000)
                    expect(page.locator("#h-workers-dot")).to_have_attribute("data-state", "ok")
                    expect(page.locator("#h-workers-note")).to_have_text("primary \u00B7 secondary")
                finally:
                    second.stop_event.set()
                    second.join(15)
                assert not errors, errors
            finally:
                page.close()
    finally:
        member.stop_event.set()
        member.join(15)

    dead = f"127.0.0.1:{free_port()}"      # nothing listens here
    config = Config(kafka=dead, topic=topic, source_topic=source, group=group, expected_workers=2,
                    health_interval=0.5, kafka_timeout=1.0)
    with serve(config) as (url, app):
        page, errors = new_page(chromium)
        try:
            page.goto(url + "/")
            expect(page.locator("#h-kafka")).to_have_text("unreachable", timeout=30_000)
            expect(page.locator("#h-dot")).to_have_attribute("data-state", "down")
            expect(page.locator("#h-kafka-note")).to_contain_text("no answer for", timeout=10_000)
            expect(page.locator("#h-workers")).to_have_text("\u2014")
            expect(page.locator("#empty-hint")).to_contain_text("Waiting for Kafka")
            page.wait_for_timeout(2500)
            note = page.locator("#h-kafka-note").inner_text()
            assert re.fullmatch(r"no answer for \d+ s", note), note
            page.screenshot(path=str(ARTIFACTS / "dashboard-kafka-down-1280.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "dashboard-kafka-down-390.png"))
            assert not errors, errors
        finally:
            page.close()
