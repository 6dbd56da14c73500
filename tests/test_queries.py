"""Interactive queries (README "Queries"): star_leaders' repository cards, in memory and on the real broker."""
import random
from datetime import datetime, timedelta, timezone

import pytest

import star_leaders
from stack_contract import QUERY_REPO, STATE_NAME
from stack_contract.repo_card import repo_card
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
    with pytest.raises(ValueError):
        result.query(STATE_NAME, QUERY_REPO, "no-slash")
    with pytest.raises(LookupError):
        result.query(STATE_NAME, "update", "a/b")          # not a query: state methods are not callable
