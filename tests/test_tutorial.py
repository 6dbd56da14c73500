"""The README's tutorial (examples/fork_leaders.py) works: fork leaders next to star leaders."""
import gzip
from collections import Counter

import orjson
import pytest

from conftest import REAL_HOUR
from examples import fork_leaders
from wallaroo.testing import run_local


@pytest.mark.skipif(not REAL_HOUR.exists(), reason="shared/data not present")
def test_fork_leaders_tutorial_on_the_real_hour():
    lines = gzip.open(REAL_HOUR).read().splitlines()
    result = run_local(fork_leaders, lines, args=["--kafka_source_topic", "gharchive",
                                                  "--kafka_sink_topic", "leaderboard"])
    assert not result.dead_letters
    latest = {}
    for r in result.outputs:
        if r.topic == fork_leaders.FORK_TOPIC:
            latest[r.key] = orjson.loads(r.value)
    merged = sorted((leader for board in latest.values() for leader in board["leaders"]),
                    key=lambda x: (-x["forks"], x["repo"]))[:10]
    forks = Counter(e["repo"]["name"] for e in map(orjson.loads, lines) if e["type"] == "ForkEvent")
    expected = sorted(forks.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(x["repo"], x["forks"]) for x in merged] == expected
    assert any(r.topic == "leaderboard" for r in result.outputs), "star leaders still run"
