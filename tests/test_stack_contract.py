"""stack_contract: the services agree through it (topic names, the leaderboard's shape) and it stays cheap."""
import ast
import subprocess
import sys

import orjson

import stack_contract
from conftest import ROOT
from dashboard import leaders
from star_leaders import RepoEvent, RepoMetadata, encoder

T0 = 1420113600  # 2015-01-01T12:00:00Z


def board_with_a_fork_and_a_pull_request():
    state = RepoMetadata()
    state.update(RepoEvent("WatchEvent", "1", "a/b", T0))
    state.update(RepoEvent("ForkEvent", "2", "a/b", T0 + 1, "fan", "https://github.com/fan/b", name="fan/b"))
    board, _ = state.update(RepoEvent("PullRequestEvent", "3", "a/b", T0 + 2, "dev",
                                      "https://github.com/a/b/pull/4", "Fix", 4, "opened"))
    return board


def test_star_leaders_writes_the_contracts_fields():
    board = board_with_a_fork_and_a_pull_request()
    assert list(board) == list(stack_contract.Leaderboard.__annotations__)
    (leader,) = board["leaders"]
    assert list(leader) == list(stack_contract.Leader.__annotations__)
    assert len(leader["hourly"]) == stack_contract.WINDOW_HOURS
    pull_request, fork = leader["recent_events"]
    assert list(fork) == list(stack_contract.Fork.__annotations__)
    assert list(pull_request) == list(stack_contract.PullRequest.__annotations__)


def test_the_dashboard_keeps_everything_star_leaders_writes():
    value, key = encoder(board_with_a_fork_and_a_pull_request())
    parsed, dropped = leaders.parse_record(key.encode(), value)
    assert dropped == 0
    assert [dict(ld) for ld in parsed.leaders] == orjson.loads(value)["leaders"]


def test_the_source_topic_is_written_in_one_python_module():
    """Everything else imports stack_contract (tests are left out: they name data folders "gharchive")."""
    writers = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in ("tests", ".venv", "kafka") or any(p.startswith(".") for p in parts):
            continue
        tree = ast.parse(path.read_text(), str(path))
        if any(isinstance(n, ast.Constant) and n.value == stack_contract.SOURCE_TOPIC for n in ast.walk(tree)):
            writers.append(str(path.relative_to(ROOT)))
    assert writers == ["stack_contract/__init__.py"]


def test_importing_the_contract_loads_no_engine():
    code = "import sys, stack_contract; print(sorted({'wallaroo', 'orjson', 'confluent_kafka'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
