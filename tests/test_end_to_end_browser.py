"""The whole stack seen through a browser: headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) on the real dashboard subprocess, while archive_streamer replays hour files at a speedup
into a machida worker running star_leaders.

The page is opened before the replay starts and never reloaded: the leaders must appear, the ranking
must change (a repository overtakes another) while the replay still runs, and a pull request title
with a <script> in it must show as literal text.  A screenshot goes to test-artifacts/e2e-dashboard.png.
"""
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import ARTIFACTS, event_line, new_page, wait_for
from archive_streamer import synthetic
from reference import batch_leaders, event_time_ms
from test_archive_streamer_helpers import write_hour
from test_end_to_end import dashboard, finish_replay, iso, read_folder, start_replay, start_workers

pytestmark = [pytest.mark.browser, pytest.mark.kafka]


START = datetime(2015, 3, 2, tzinfo=timezone.utc)
HOURS = 8
SPEEDUP = 1200                 # 8 archive hours in ~24 s
BACKGROUND_PER_HOUR = 300      # synthetic events around the designed ones

XSS_REPO = "safe-xss/target"
XSS_TITLE = "<script>window.__pwned=1</script><b>bold</b> title"
XSS_URL = "https://github.com/safe-xss/target/pull/7"
EARLY = "rocket-labs/rocket"   # leads the first hours, then gets no more stars
LATE = "comet-dev/comet"       # few stars at first, many from hour 3: overtakes EARLY in hour 5


def stars_per_hour(repo, hour):
    if repo == XSS_REPO:
        return 10
    if repo == EARLY:
        return 12 if hour < 3 else 0
    if repo == LATE:
        return 1 if hour < 3 else 16
    raise KeyError(repo)


def write_hours(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for h in range(HOURS):
        hour = START + timedelta(hours=h)
        lines = [e.line for e in synthetic.generate_hour(5, hour, BACKGROUND_PER_HOUR)]
        for repo in (XSS_REPO, EARLY, LATE):
            n = stars_per_hour(repo, h)
            for i in range(n):   # spread over the hour, so the replay paces them out
                at = hour + timedelta(seconds=(i * 3600 // n + 17 * len(repo)) % 3600)
                lines.append(event_line("WatchEvent", f"b{h}-{repo}-{i}", repo, iso(at), actor=f"fan{i}"))
        if h == 0:
            lines.append(event_line("PullRequestEvent", "b0-xss-pr", XSS_REPO, iso(hour + timedelta(minutes=2)),
                                    actor="mallory", title=XSS_TITLE, number=7, url=XSS_URL))
        if h == 6:
            lines.append(event_line("PullRequestEvent", "b6-docs-pr", XSS_REPO, iso(hour + timedelta(minutes=30)),
                                    actor="alice", title="Add docs", number=8))
        lines.sort(key=event_time_ms)   # stable: the synthetic lines keep their (mostly sorted) order
        write_hour(folder, hour, lines)


def test_live_replay_in_the_browser(kafka, topic_name, workers, tmp_path, chromium):
    from playwright.sync_api import expect

    folder = tmp_path / "hours"
    write_hours(folder)
    lines = read_folder(folder)
    expected = batch_leaders(lines)
    final_order = [ld["repo"] for ld in expected["leaders"]]
    assert final_order[:3] == [LATE, XSS_REPO, EARLY], final_order      # the designed story holds

    ARTIFACTS.mkdir(exist_ok=True)
    source, sink, app_id = topic_name("e2eb-gharchive"), topic_name("e2eb-leaderboard"), topic_name("e2eb-app")
    (w1,) = start_workers(workers, source, sink, app_id, names=("w1",))
    with dashboard(kafka, sink, source, app_id, tmp_path, "--health-interval", "0.5") as dash:
        page, errors = new_page(chromium)
        replay = None
        try:
            page.goto(dash.url + "/")
            expect(page.locator("#empty")).to_be_visible()
            expect(page.locator("#h-kafka")).to_have_text("connected", timeout=30_000)
            page.evaluate("window.__sameDocument = 42")

            replay = start_replay(kafka, folder, source, tmp_path, "--speedup", str(SPEEDUP))
            rows = page.locator("ol#leaders > li.leader")
            names = rows.locator(".repo-link")

            # ---- the leaders appear, without a reload; EARLY leads LATE in the first hours
            expect(rows.first).to_be_visible(timeout=60_000)
            expect(page.locator("#empty")).to_be_hidden()

            def early_ahead():
                now = names.all_inner_texts()
                return now if EARLY in now and (LATE not in now or now.index(EARLY) < now.index(LATE)) else None
            first = wait_for(early_ahead, 30, f"{EARLY} to show, ahead of {LATE}")
            assert replay.poll() is None, "the replay ended before the first leaders showed"

            # ---- the ranking changes while the replay runs: LATE overtakes EARLY
            def overtaken():
                now = names.all_inner_texts()
                return now if LATE in now and EARLY in now and now.index(LATE) < now.index(EARLY) else None
            changed = wait_for(overtaken, 60, f"{LATE} to overtake {EARLY} on the page")
            assert changed != first
            assert replay.poll() is None, "the ranking changed only after the replay ended"
            assert page.evaluate("window.__sameDocument") == 42, "the page reloaded"

            # ---- the hostile PR title is text, not markup, and did not run
            title = page.locator(f"li.leader[data-repo='{XSS_REPO}'] .pr-title", has_text="window.__pwned")
            expect(title).to_be_visible()
            assert title.inner_text() == XSS_TITLE
            assert title.locator("b").count() == 0
            assert page.locator(".pr-title b, .event b").count() == 0
            assert page.evaluate("typeof window.__pwned") == "undefined"
            pr_link = page.locator(f"li.leader[data-repo='{XSS_REPO}'] a.event-link", has_text="#7")
            assert pr_link.get_attribute("href") == XSS_URL

            # ---- when the replay is over, the page shows the batch result
            finish_replay(replay, timeout_s=90)
            expect(rows).to_have_count(len(final_order), timeout=60_000)
            want = [(ld["repo"], ld["stars"]) for ld in expected["leaders"]]

            def shown():
                counts = [int(t.replace(",", "")) for t in rows.locator(".stars-count").all_inner_texts()]
                return list(zip(names.all_inner_texts(), counts))
            try:
                wait_for(lambda: shown() == want, 60, "the page to show the batch ranking")
            except AssertionError:
                raise AssertionError(f"page {shown()}\nbatch {want}") from None
            expect(page.locator("#clock-hour")).to_have_text(
                f"{expected['event_time'][:10]} {expected['event_time'][11:13]}:00 UTC")
            assert page.evaluate("window.__sameDocument") == 42, "the page reloaded"
            assert page.evaluate("typeof window.__pwned") == "undefined"
            expect(page.locator("#h-lag")).to_have_text("0", timeout=20_000)

            page.wait_for_timeout(800)      # let the rank flash settle for the picture
            page.screenshot(path=str(ARTIFACTS / "e2e-dashboard.png"), full_page=True)
            assert w1.poll() is None
            assert not errors, errors
        finally:
            page.close()
            if replay is not None and replay.poll() is None:
                replay.kill()
                replay.wait(10)
