"""A RepoCard from star_leaders' state queries (README "Queries"); the dashboard and the tests use it.

`ask(method, arg)` is one query of STATE_NAME answered as a worker's query port answers it:
{"value": ..., "as_of": {"checkpoint", "event_time_ms", "partition", "worker"}}.

The rank is exact but costs a fan-out: 1 + the number of repositories ahead of this one (more stars,
or as many and a smaller name: the leaderboard's order) counted in each of the PARTITION_COUNT
partitions by QUERY_AHEAD. Each partition counts over its own window (its own event time): partitions
a few seconds apart near an hour boundary may disagree by that hour's stars.
"""
from . import COMPLETE_MAX, PARTITION_COUNT, QUERY_AHEAD, QUERY_COMPLETE, QUERY_REPO, AsOf, RepoCard, valid_repo_name


def repo_card(ask, repo, map=map) -> RepoCard:
    """`map`: e.g. a thread pool's, to send the fan-out's queries at once (a worker answers the queries
    waiting for it together, between two consume batches)."""
    answer = ask(QUERY_REPO, repo)
    value, as_of = answer["value"], answer["as_of"]
    rank = None
    if value["stars"]:
        args = [f"{p}:{value['stars']}:{repo}" for p in range(PARTITION_COUNT)]
        rank = 1 + sum(a["value"] for a in map(lambda arg: ask(QUERY_AHEAD, arg), args))
    shown: AsOf = {"checkpoint": as_of["checkpoint"], "event_time_ms": as_of["event_time_ms"],
                   "window_end": value["window_end"]}
    return {"repo": repo, "stars": value["stars"], "hourly": value["hourly"], "rank": rank,
            "recent_events": value["recent_events"], "as_of": shown}


def completions(ask, prefix, map=map) -> list[dict]:
    """Up to COMPLETE_MAX {"repo", "stars"} whose name or owner/name starts with `prefix` (any case), over
    every partition's repositories with stars, forks or pull requests in the window: most stars first."""
    answers = map(lambda p: ask(QUERY_COMPLETE, f"{p}:{prefix}")["value"], range(PARTITION_COUNT))
    found = sorted((-stars, repo) for value in answers for repo, stars in value
                   if valid_repo_name(repo) and type(stars) is int)
    return [{"repo": repo, "stars": -n} for n, repo in found[:COMPLETE_MAX]]
