"""kafka/kafka.sh and the Makefile never signal or delete what is not theirs: a stale pidfile's process
is left alone, `clean` deletes only the script's own run dirs, `make clean` refuses a VENV that would
take more with it.  No broker runs here: the pidfiles name stand-in processes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import alive

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "kafka" / "kafka.sh"
MARKER = ".created-by-kafka.sh"


def script(run_dir, *args, nodes=1, home=None, sh=KAFKA_SH):
    env = {**os.environ, "KAFKA_RUN_DIR": str(run_dir), "KAFKA_NODES": str(nodes),
           # ports nobody answers on, so nothing here can reach a real broker
           "KAFKA_PORT": "1", "KAFKA_CONTROLLER_PORT": "2", "KAFKA_CLUSTER_PORT": "3"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([str(sh), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def processes():
    """Starts stand-in processes with the given arguments; kills whatever is left of them afterwards."""
    started = []

    def start(*args):
        code = "import time; time.sleep(120)"
        proc = subprocess.Popen([sys.executable, "-c", code, *args]) if args else subprocess.Popen(["sleep", "120"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def write_pidfile(node_dir: Path, pid: int) -> Path:
    node_dir.mkdir(parents=True, exist_ok=True)
    pidfile = node_dir / "kafka.pid"
    pidfile.write_text(f"{pid}\n")
    return pidfile


# --- stop and kill: only this run dir's broker ------------------------------------------------------

def test_stop_leaves_the_process_of_a_stale_pidfile_alone(tmp_path, processes):
    sleeper = processes()
    pidfile = write_pidfile(tmp_path / "run", sleeper.pid)
    r = script(tmp_path / "run", "stop")
    assert r.returncode == 0, r.stderr
    assert sleeper.poll() is None and alive(sleeper.pid), "stop signalled a process that is not the broker"
    assert not pidfile.exists(), "the stale pidfile should be removed"
    assert f"names pid {sleeper.pid}, which is not this broker" in r.stderr
    assert "kafka: not running" in r.stdout


def test_stop_leaves_another_run_dirs_broker_alone(tmp_path, processes):
    """kafka.Kafka alone is not enough: it must be the broker of this run dir's server.properties."""
    other = processes("kafka.Kafka", str(tmp_path / "other" / "server.properties"))
    pidfile = write_pidfile(tmp_path / "run", other.pid)
    r = script(tmp_path / "run", "stop")
    assert r.returncode == 0 and other.poll() is None, r.stderr
    assert not pidfile.exists()


def test_stop_signals_the_broker_its_pidfile_names(tmp_path, processes):
    run = tmp_path / "run"
    broker = processes("kafka.Kafka", str(run / "server.properties"))
    pidfile = write_pidfile(run, broker.pid)
    r = script(run, "stop")
    assert r.returncode == 0, r.stderr
    assert broker.wait(10) == -15, "the broker should get SIGTERM"
    assert "kafka: stopped" in r.stdout and not pidfile.exists()


def test_cluster_stop_and_kill_of_one_node_check_its_pid_too(tmp_path, processes):
    run = tmp_path / "cluster"
    sleeper = processes()
    write_pidfile(run / "node1", sleeper.pid)
    node2 = processes("kafka.Kafka", str(run / "node2" / "server.properties"))
    write_pidfile(run / "node2", node2.pid)
    node3 = processes("kafka.Kafka", str(run / "node3" / "server.properties"))
    write_pidfile(run / "node3", node3.pid)

    r = script(run, "kill", "1", nodes=3)
    assert r.returncode == 0 and sleeper.poll() is None, r.stderr
    assert "kafka node 1: not running" in r.stdout

    r = script(run, "kill", "2", nodes=3)
    assert r.returncode == 0, r.stderr
    assert node2.wait(10) == -9 and node3.poll() is None, "kill 2 kills node 2 only, with SIGKILL"
    assert "kafka node 2: killed" in r.stdout

    r = script(run, "stop", "3", nodes=3)
    assert r.returncode == 0 and node3.wait(10) == -15, r.stderr


@pytest.mark.parametrize("node", ["4", "0", "02", "x"])
def test_a_node_number_outside_the_cluster_is_refused(tmp_path, processes, node):
    run = tmp_path / "cluster"
    broker = processes("kafka.Kafka", str(run / "node1" / "server.properties"))
    write_pidfile(run / "node1", broker.pid)
    r = script(run, "stop", node, nodes=3)
    assert r.returncode == 2 and ("NODE must be" in r.stderr or "no node" in r.stderr), r.stderr
    assert broker.poll() is None


# --- clean: only the script's own run dirs --------------------------------------------------------

def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def fake_checkout(tmp_path: Path) -> Path:
    """A copy of the script in a checkout of its own, so refusals about the checkout can be tried on a
    folder whose loss would not matter."""
    checkout = tmp_path / "checkout"
    (checkout / "kafka").mkdir(parents=True)
    shutil.copy(KAFKA_SH, checkout / "kafka" / "kafka.sh")
    (checkout / "README.md").write_text("keep me")
    return checkout


def test_clean_refuses_a_run_dir_outside_the_checkout(tmp_path):
    run = tmp_path / "elsewhere"
    (run / "data").mkdir(parents=True)
    (run / "server.properties").write_text("node.id=1\n")
    (run / "precious.txt").write_text("keep me")
    before = tree(run)
    r = script(run, "clean")
    assert r.returncode == 1
    assert "refusing to delete" in r.stderr and "outside the checkout" in r.stderr, r.stderr
    assert tree(run) == before, "clean deleted something it refused"


def test_clean_refuses_home_even_when_marked(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / MARKER).write_text("forged")
    (home / ".bashrc").write_text("keep me")
    r = script(home, "clean", home=home)
    assert r.returncode == 1 and "refusing" in r.stderr, r.stderr
    assert (home / ".bashrc").exists()


def test_clean_refuses_root(tmp_path):
    r = script("/", "clean")
    assert r.returncode == 1 and "refusing to delete KAFKA_RUN_DIR=/" in r.stderr, r.stderr


def test_clean_refuses_the_checkout_and_what_holds_it(tmp_path):
    checkout = fake_checkout(tmp_path)
    sh = checkout / "kafka" / "kafka.sh"
    for target in (checkout, tmp_path):
        (target / MARKER).write_text("forged")
        r = script(target, "clean", sh=sh)
        assert r.returncode == 1 and "holds the checkout" in r.stderr, r.stderr
    assert (checkout / "README.md").read_text() == "keep me"


def test_clean_inside_the_checkout_only_takes_broker_state(tmp_path):
    checkout = fake_checkout(tmp_path)
    sh = checkout / "kafka" / "kafka.sh"
    docs = checkout / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("keep me")
    r = script(docs, "clean", sh=sh)
    assert r.returncode == 1 and "holds no broker state" in r.stderr, r.stderr
    assert (docs / "guide.md").exists()

    old_run = checkout / "kafka" / "run"       # made by an older kafka.sh: no marker, but a broker's files
    (old_run / "data").mkdir(parents=True)
    (old_run / "server.properties").write_text("node.id=1\n")
    r = script(old_run, "clean", sh=sh)
    assert r.returncode == 0, r.stderr
    assert not old_run.exists() and (checkout / "README.md").exists()


def test_clean_deletes_a_marked_run_dir_anywhere_and_follows_no_link(tmp_path, processes):
    run = tmp_path / "marked"
    (run / "node1" / "data").mkdir(parents=True)
    (run / MARKER).write_text("created by kafka/kafka.sh")
    r = script(run, "clean", nodes=3)
    assert r.returncode == 0, r.stderr
    assert not run.exists()

    run.mkdir()   # a cluster started with more nodes than clean is told of: every one is stopped
    (run / MARKER).write_text("created by kafka/kafka.sh")
    brokers = [processes("kafka.Kafka", str(run / f"node{n}" / "server.properties")) for n in range(1, 6)]
    for n, broker in enumerate(brokers, 1):
        write_pidfile(run / f"node{n}", broker.pid)
    r = script(run, "clean", nodes=3)
    assert r.returncode == 0, r.stderr
    assert [b.wait(10) for b in brokers] == [-15] * 5 and not run.exists()

    target = tmp_path / "unmarked"
    target.mkdir()
    (target / "keep.txt").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(target)
    r = script(link, "clean")
    assert r.returncode == 1 and "refusing" in r.stderr
    assert (target / "keep.txt").exists()


# --- the Makefile -----------------------------------------------------------------------------------

def make_dry_run(*args):
    return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("venv", ["", "/", "//", "..", ".", "a b", "HOME", "CHECKOUT"])
def test_make_refuses_a_venv_that_would_delete_more(venv):
    venv = {"HOME": os.path.expanduser("~"), "CHECKOUT": str(ROOT)}.get(venv, venv)
    r = make_dry_run("clean", f"VENV={venv}")
    assert r.returncode != 0 and "VENV=" in r.stderr, (venv, r.stdout, r.stderr)
    assert "rm -rf" not in r.stdout


def test_make_clean_quotes_the_venv():
    r = make_dry_run("clean", "VENV=.venv-test")
    assert r.returncode == 0, r.stderr
    assert ('rm -rf -- ".venv-test" "benchmarks/peers/.venv" .stack *.egg-info dashboard/node_modules '
            'dashboard/static/vendor') in r.stdout.splitlines()
