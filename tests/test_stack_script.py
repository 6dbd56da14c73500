"""scripts/stack.sh: syntax, and start/stop/status behaviour of the local mode against a fake honcho.

The fake stands in for honcho and the four services (which the live test runs for real): it serves
/api/leaders on the stack's port and keeps a child in a session of its own, as honcho does with its
processes.  Kafka is never touched here: the stack is pointed at a broker address that is not local."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, alive, free_port

STACK = ROOT / "scripts" / "stack.sh"

FAKE_HONCHO = textwrap.dedent("""\
    #!{python}
    # fake honcho: serves /api/leaders, keeps a child in its own session like honcho's processes
    import http.server, json, os, signal, subprocess, sys, threading, time
    mode = os.environ.get("FAKE_HONCHO", "ok")
    if mode == "crash":
        print("fake honcho: streamer failed: boom", flush=True)
        sys.exit(1)
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.environ["FAKE_CHILD_FILE"], "w") as f:
        f.write(str(child.pid))
    print(f"fake honcho: child {{child.pid}}", flush=True)
    if mode == "silent":          # never serves the dashboard
        while True:
            time.sleep(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({{"event_time": None, "leaders": []}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["STAR_LEADERS_PORT"])), Handler)

    def term(*_):
        if mode == "stubborn":
            print("fake honcho: ignoring SIGTERM", flush=True)
            return
        os.killpg(child.pid, signal.SIGTERM)
        threading.Thread(target=srv.shutdown).start()

    signal.signal(signal.SIGTERM, term)
    srv.serve_forever()
    """)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


class Stack:
    def __init__(self, tmp: Path):
        self.state = tmp / "state"
        venv = tmp / "venv"
        (venv / "bin").mkdir(parents=True)
        honcho = venv / "bin" / "honcho"
        honcho.write_text(FAKE_HONCHO.format(python=sys.executable))
        honcho.chmod(0o755)
        self.child_file = tmp / "child.pid"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STAR_LEADERS_")}
        self.env.update({
            "STAR_LEADERS_MODE": "local", "STAR_LEADERS_STATE_DIR": str(self.state),
            "STAR_LEADERS_VENV": str(venv), "STAR_LEADERS_PORT": str(self.port),
            "STAR_LEADERS_KAFKA": "broker.invalid:9092",   # not local: the stack leaves Kafka alone
            "STAR_LEADERS_START_TIMEOUT": "15", "STAR_LEADERS_RESET": "0",
            "FAKE_CHILD_FILE": str(self.child_file),
        })

    def run(self, *args, timeout=60, **env):
        return subprocess.run(["bash", str(STACK), *args], capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **env}, cwd=ROOT)

    @property
    def honcho_pid(self) -> int:
        return int((self.state / "honcho.pid").read_text())

    @property
    def child_pid(self) -> int:
        return int(self.child_file.read_text())

    def kill_leftovers(self):
        for f in (self.state / "honcho.pid", self.child_file):
            try:
                pid = int(f.read_text())
            except (OSError, ValueError):
                continue
            for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    target()
                except OSError:
                    pass


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path)
    yield s
    s.kill_leftovers()


def test_bash_syntax():
    r = subprocess.run(["bash", "-n", str(STACK)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (make test-tools)")
def test_shellcheck():
    r = subprocess.run(["shellcheck", str(STACK), str(ROOT / "kafka" / "kafka.sh"), str(ROOT / ".ci" / "run")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_usage(stack):
    r = stack.run("bogus")
    assert r.returncode == 2 and "usage" in r.stderr


def test_env_prints_the_local_defaults(stack):
    env = {k: v for k, v in stack.env.items() if not k.startswith("STAR_LEADERS_") and k != "KAFKA_PORT"}
    r = subprocess.run(["bash", str(STACK), "env"], capture_output=True, text=True, env=env, check=True)
    assert "export STAR_LEADERS_SOURCE=synthetic" in r.stdout
    assert "export STAR_LEADERS_KAFKA=127.0.0.1:9092" in r.stdout
    assert "export STAR_LEADERS_PORT=5000" in r.stdout
    r = subprocess.run(["bash", str(STACK), "env"], capture_output=True, text=True, check=True,
                       env={**env, "STAR_LEADERS_SOURCE": "https://data.gharchive.org", "KAFKA_PORT": "9192"})
    assert "export STAR_LEADERS_SOURCE=https://data.gharchive.org" in r.stdout
    assert "export STAR_LEADERS_KAFKA=127.0.0.1:9192" in r.stdout


def test_stop_without_a_stack_is_harmless(stack):
    r = stack.run("stop")
    assert r.returncode == 0, r.stderr
    assert "no local stack running" in r.stdout
    assert "kafka" not in r.stdout.lower(), "stop must not touch a broker the stack did not start"
    r = stack.run("status")
    assert r.returncode == 3


def test_stale_pid_file_of_another_process_is_ignored(stack):
    stack.state.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])
    try:
        (stack.state / "honcho.pid").write_text(f"{other.pid}\n")
        r = stack.run("stop")
        assert r.returncode == 0, r.stderr
        assert "no local stack running" in r.stdout
        assert other.poll() is None, "stop killed a process that is not the stack's honcho"
        assert not (stack.state / "honcho.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_start_is_idempotent_and_stop_ends_everything(stack):
    (stack.state).mkdir(parents=True)
    (stack.state / "honcho.pid").write_text("999999999\n")       # stale: no such process
    r = stack.run("start")
    assert r.returncode == 0, r.stdout + r.stderr
    url = f"http://127.0.0.1:{stack.port}/"
    assert url in r.stdout
    assert "make stop" in r.stdout and "make tail" in r.stdout
    honcho, child = stack.honcho_pid, stack.child_pid
    assert alive(honcho) and alive(child)
    assert os.getpgid(honcho) == honcho, "honcho must lead its own process group"
    assert os.getpgid(honcho) != os.getpgid(0)
    assert (stack.state / "stack.log").read_text().count("STAR_LEADERS_SOURCE=synthetic") == 1

    r = stack.run("start")
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stdout and url in r.stdout
    assert stack.honcho_pid == honcho, "a second start must not start a second stack"

    r = stack.run("status")
    assert r.returncode == 0 and "dashboard answering" in r.stdout

    r = stack.run("stop")
    assert r.returncode == 0, r.stderr
    assert wait_gone(honcho, 5) and wait_gone(child, 5)
    assert not (stack.state / "honcho.pid").exists()
    assert stack.run("status").returncode == 3


def test_stop_kills_a_honcho_that_ignores_sigterm_and_its_children(stack):
    r = stack.run("start", FAKE_HONCHO="stubborn")
    assert r.returncode == 0, r.stdout + r.stderr
    honcho, child = stack.honcho_pid, stack.child_pid
    r = stack.run("stop")
    assert r.returncode == 0, r.stderr
    assert "killing" in r.stdout
    assert wait_gone(honcho, 5), "honcho survived stop"
    assert wait_gone(child, 5), "honcho's child (own session) survived stop"


def test_start_reports_a_stack_that_dies(stack):
    r = stack.run("start", FAKE_HONCHO="crash")
    assert r.returncode == 1
    assert "exited during start-up" in r.stderr
    assert "streamer failed: boom" in r.stderr, "the last log lines explain the failure"
    assert not (stack.state / "honcho.pid").exists()


def test_start_gives_up_after_the_timeout(stack):
    t0 = time.monotonic()
    r = stack.run("start", FAKE_HONCHO="silent", STAR_LEADERS_START_TIMEOUT="3")
    assert r.returncode == 1
    assert time.monotonic() - t0 < 30
    assert "did not answer" in r.stderr and "fake honcho: child" in r.stderr
    # it says how to stop what is still running, and stop does
    assert "stop" in r.stderr
    honcho, child = stack.honcho_pid, stack.child_pid
    assert stack.run("stop").returncode == 0
    assert wait_gone(honcho, 15)
    assert wait_gone(child, 5), "a child honcho left behind (it died on SIGTERM) survived stop"


def test_start_refuses_a_busy_port(stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", stack.port))
        s.listen()
        r = stack.run("start")
    assert r.returncode == 1
    assert f"127.0.0.1:{stack.port}" in r.stderr and "STAR_LEADERS_PORT" in r.stderr
    assert not (stack.state / "honcho.pid").exists()


def test_tail_without_a_log(stack):
    r = stack.run("tail")
    assert r.returncode == 1 and "no log yet" in r.stderr


# ---------- supervise: what the Procfile runs every service under ----------

class Supervised:
    """`stack.sh supervise` in a session of its own (as honcho starts each Procfile process)."""

    def __init__(self, tmp: Path, *args, **env):
        self.log = tmp / "supervise.log"
        self.proc = subprocess.Popen(
            ["bash", str(STACK), "supervise", *args], cwd=tmp, stdout=open(self.log, "wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "STAR_LEADERS_RESTART_DELAY": "1", "STAR_LEADERS_RESTART_DELAY_MAX": "2",
                 **env})

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"{needle!r} not in the log:\n{self.text()}"
            assert self.proc.poll() is None, f"the supervisor exited ({self.proc.returncode}):\n{self.text()}"
            time.sleep(0.1)
        return self.text()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait(10)


@pytest.fixture
def supervised(tmp_path):
    made = []

    def make(*args, **env):
        s = Supervised(tmp_path, *args, **env)
        made.append(s)
        return s
    yield make
    for s in made:
        s.kill()


def test_supervise_restarts_with_backoff_for_as_long_as_it_runs(supervised, tmp_path):
    # the third run lasts 3 s: healthy (RESET_AFTER=2), so the delay after it starts again at 1 s
    runs = tmp_path / "runs"
    s = supervised("worker", "sh", "-c", f'echo x >> {runs}; [ "$(wc -l < {runs})" -eq 3 ] && sleep 3; exit 3',
                   STAR_LEADERS_RESTART_RESET_AFTER="2")
    log = s.wait_log("restart 5 in", timeout=40)
    lines = [l for l in log.splitlines() if l.startswith("worker: exited")]
    delays = [int(l.rsplit(" in ", 1)[1].removesuffix(" s")) for l in lines[:5]]
    assert delays == [1, 2, 1, 2, 2], log           # doubling, capped at 2, reset by the healthy run
    assert all("(status 3)" in l for l in lines), log
    assert s.proc.poll() is None, "the supervisor must outlive its command"
    s.proc.send_signal(signal.SIGTERM)               # to the supervisor alone, between two runs
    assert s.proc.wait(10) == 0
    n = len(runs.read_text().splitlines())
    time.sleep(3)
    assert len(runs.read_text().splitlines()) == n, "a run started after the supervisor was stopped"


def test_supervise_restarts_a_killed_command_and_stops_with_its_group(supervised, tmp_path):
    pidfile = tmp_path / "pid"
    s = supervised("worker", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 600")
    pids = []
    for n in range(1, 4):
        deadline = time.monotonic() + 20
        while not pidfile.exists() or not pidfile.read_text().strip() or int(pidfile.read_text()) in pids:
            assert time.monotonic() < deadline, s.text()
            time.sleep(0.05)
        pids.append(int(pidfile.read_text()))
        os.kill(pids[-1], signal.SIGKILL)
        s.wait_log(f"; restart {n} in")
        assert re.search(rf"^worker: exited \(SIGKILL\) after \d+ s; restart {n} in \d+ s$", s.text(), re.M), s.text()
    deadline = time.monotonic() + 20
    while int(pidfile.read_text() or 0) in pids:
        assert time.monotonic() < deadline, s.text()
        time.sleep(0.05)
    command = int(pidfile.read_text())
    assert alive(command)
    os.killpg(s.proc.pid, signal.SIGTERM)            # what honcho does to stop the stack
    assert s.proc.wait(10) == 0
    assert wait_gone(command, 5)
    assert "restart 4" not in s.text()
    assert "Killed" not in s.text().replace("SIGKILL", ""), "only the supervisor's own lines"


def test_supervise_forwards_a_signal_its_command_did_not_get(supervised, tmp_path):
    pidfile = tmp_path / "pid"
    s = supervised("worker", "sh", "-c", f"echo $$ > {pidfile}; exec sleep 600")
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    command = int(pidfile.read_text())
    s.proc.send_signal(signal.SIGTERM)               # the supervisor alone
    time.sleep(2)
    assert alive(command), "given time to end on the group's signal first"
    assert s.proc.wait(30) == 0
    assert wait_gone(command, 5)


@pytest.mark.parametrize("status,says", [(0, "streamer: finished after"), (4, "streamer: FAILED (status 4)")])
def test_supervise_once_runs_its_command_once_and_idles(supervised, tmp_path, status, says):
    runs = tmp_path / "runs"
    s = supervised("--once", "streamer", "sh", "-c", f"echo x >> {runs}; exit {status}")
    log = s.wait_log(says)
    assert "not restarted" in log
    time.sleep(3)
    assert s.proc.poll() is None, "the supervisor idles, so honcho keeps the stack up"
    assert runs.read_text() == "x\n"
    os.killpg(s.proc.pid, signal.SIGTERM)
    assert s.proc.wait(10) == 0


def test_supervise_usage():
    r = subprocess.run(["bash", str(STACK), "supervise", "only-a-name"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
