"""The synthetic generator: deterministic, and shaped, sized and mixed like the real archive."""
import re
from collections import Counter
from datetime import datetime, timezone

import orjson
import pytest

from archive_streamer import synthetic
from archive_streamer.hours import HOUR, ms, parse_hour
from archive_streamer.reader import created_at_ms

START = "2016-03-01-0"


def sample(seed=7, hours=3, n=4000):
    return list(synthetic.generate_events(seed, START, hours, n))


def test_deterministic_for_a_seed_and_different_across_seeds():
    a, b, c = sample(), sample(), sample(seed=8)
    assert a == b
    assert len(a) == 12000
    assert [e.line for e in a] != [e.line for e in c]
    # An hour depends only on (seed, hour): a replay that starts later sees the same hour.
    later = list(synthetic.generate_events(7, "2016-03-01-2", 1, 4000))
    assert later == a[8000:]


def test_event_mix_like_the_archive():
    types = Counter(orjson.loads(e.line)["type"] for e in sample())
    n = sum(types.values())
    share = {t: c / n for t, c in types.items()}
    assert 0.13 <= share["WatchEvent"] + share["ForkEvent"] + share["PullRequestEvent"] <= 0.17
    assert 0.46 <= share["PushEvent"] <= 0.54
    assert 0.10 <= share["CreateEvent"] <= 0.14
    assert 0.07 <= share["WatchEvent"] <= 0.10
    assert 0.035 <= share["PullRequestEvent"] <= 0.06
    assert 0.01 <= share["ForkEvent"] <= 0.03
    assert {"IssueCommentEvent", "IssuesEvent", "DeleteEvent", "GollumEvent", "ReleaseEvent"} <= set(types)


def test_sizes_about_two_kilobytes():
    events = sample()
    mean = sum(len(e.line) for e in events) / len(events)
    assert 1600 <= mean <= 2600, mean
    sizes = Counter()
    for e in events:
        sizes[orjson.loads(e.line)["type"]] = max(sizes[orjson.loads(e.line)["type"]], len(e.line))
    assert sizes["PullRequestEvent"] > 5000 and sizes["WatchEvent"] < 1000


def test_events_are_shaped_like_real_ones():
    events = sample(hours=1)
    hour0 = parse_hour(START)
    for e in events:
        d = orjson.loads(e.line)
        assert re.fullmatch(r"\d+", d["id"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["created_at"])
        assert e.ts_ms == created_at_ms(d["created_at"])
        assert ms(hour0) <= e.ts_ms < ms(hour0 + HOUR)
        assert e.repo == d["repo"]["name"] and re.fullmatch(r"[^/\s]+/[^/\s]+", e.repo)
        assert set(d["actor"]) >= {"id", "login", "display_login", "url", "avatar_url"}
        assert set(d["repo"]) == {"id", "name", "url"}
        assert d["public"] is True and isinstance(d["payload"], dict)
        if d["type"] == "PullRequestEvent":
            p = d["payload"]
            assert p["action"] and p["number"] == p["pull_request"]["number"]
            pr = p["pull_request"]
            assert {"title", "html_url", "body", "user"} <= set(pr)
            assert pr["html_url"].endswith(f"/{e.repo}/pull/{p['number']}")
        if d["type"] == "ForkEvent":
            f = d["payload"]["forkee"]
            assert f["full_name"].split("/")[0] == d["actor"]["login"]
            assert f["html_url"] == f"https://github.com/{f['full_name']}"
    assert sum("org" in orjson.loads(e.line) for e in events) > len(events) * 0.1


def test_html_in_some_pr_titles():
    titles = [orjson.loads(e.line)["payload"]["pull_request"]["title"] for e in sample()
              if b'"PullRequestEvent"' in e.line[:60]]
    with_html = [t for t in titles if "<" in t]
    assert 0 < len(with_html) < len(titles) * 0.2
    assert any("<script>" in t or "<b>" in t or "<img" in t for t in with_html)


def test_repeated_ids_and_slight_disorder_like_the_archive():
    events = sample()
    ids = Counter(orjson.loads(e.line)["id"] for e in events)
    repeated = [i for i, c in ids.items() if c > 1]
    assert 1 <= len(repeated) <= len(events) * 0.01
    backwards = sum(1 for a, b in zip(events, events[1:]) if b.ts_ms < a.ts_ms)
    assert 0 < backwards < len(events) * 0.02


def test_zipf_popularity_and_bursts():
    events = sample(hours=1, n=5000)
    repos = Counter(e.repo for e in events)
    top10 = sum(c for _, c in repos.most_common(10))
    assert top10 >= 0.05 * len(events)                    # a few very popular repositories
    assert sum(1 for c in repos.values() if c == 1) > len(repos) / 2   # and a long tail
    per_minute = Counter(e.ts_ms // 60_000 for e in events)
    assert max(per_minute.values()) > 2.5 * len(events) / 60   # bursts, not a flat rate


def test_any_number_of_hours_and_datetime_start():
    start = datetime(2020, 2, 29, 22, tzinfo=timezone.utc)
    events = list(synthetic.generate_events(1, start, 4, 10))
    assert len(events) == 40
    assert sorted({e.ts_ms // 3_600_000 for e in events}) == [
        ms(start + i * HOUR) // 3_600_000 for i in range(4)]


def test_long_tail_spreads_events_over_many_rare_repositories():
    plain = list(synthetic.generate_events(7, START, 1, 6000))
    assert list(synthetic.generate_events(7, START, 1, 6000, long_tail=0)) == plain
    tailed = list(synthetic.generate_events(7, START, 1, 6000, long_tail=1_000_000))
    assert tailed == list(synthetic.generate_events(7, START, 1, 6000, long_tail=1_000_000))
    popular = {full for full, *_ in synthetic._universe(7).repos}
    in_tail = [e for e in tailed if e.repo not in popular]
    assert 0.35 * len(tailed) <= len(in_tail) <= 0.45 * len(tailed)
    tail_counts = Counter(e.repo for e in in_tail)
    assert sum(1 for c in tail_counts.values() if c == 1) > 0.9 * len(tail_counts)   # rare: mostly once
    assert len({e.repo for e in tailed}) > 1.3 * len({e.repo for e in plain})
    for e in in_tail[:300]:
        d = orjson.loads(e.line)
        assert e.repo == d["repo"]["name"] and re.fullmatch(r"[^/\s]+/[^/\s]+", e.repo)
        assert d["repo"]["url"] == f"https://api.github.com/repos/{e.repo}"
    ids = {}
    for e in in_tail:
        d = orjson.loads(e.line)
        assert ids.setdefault(e.repo, d["repo"]["id"]) == d["repo"]["id"]     # one id per repository
    assert len(set(ids.values())) == len(ids)


def test_long_tail_must_not_be_negative():
    with pytest.raises(ValueError):
        list(synthetic.generate_hour(7, START, 10, long_tail=-1))
