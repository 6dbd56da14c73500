"""A throwaway multi-node KRaft cluster for tests, run by kafka/kafka.sh (KAFKA_NODES=N) in a run dir of
its own on free ports: node-by-node stop (SIGTERM), kill (-9) and start, always torn down.

    from kafka_cluster import kafka_cluster   # the module-scoped fixture: a 3-node cluster
"""
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "kafka" / "kafka.sh"
# librdkafka's complaints about a node that is down go to pytest's log capture, not to stderr.
CLIENT_LOG = {"logger": logging.getLogger("librdkafka")}
# Test nodes hold little data on a shared 2-core machine: a smaller heap, a serial GC and one quick
# (C1) compiler thread, so three JVMs take less memory and CPU from the workers under test
# (kafka.sh's KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS; set in the environment, they win).
TEST_JVM = {"KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
            "KAFKA_JVM_OPTS": "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1"}


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """First of `count` consecutive loopback ports nobody listens on, below Linux's ephemeral range (so
    client connections do not take them meanwhile).  KAFKA_TEST_CLUSTER_PORT pins it."""
    pinned = os.environ.get("KAFKA_TEST_CLUSTER_PORT")
    if pinned:
        return int(pinned)
    for _ in range(200):
        base = random.randrange(low, high - count)
        held = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports in {low}..{high}")


class KafkaCluster:
    """`nodes` combined broker+controller nodes; node i (from 1) is node.id i on 127.0.0.1:base+2(i-1)."""

    def __init__(self, run_dir, nodes: int = 3, base_port: int | None = None, start_timeout: int = 180):
        self.run_dir = Path(run_dir)
        self.nodes = nodes
        self.base_port = base_port or free_port_block(2 * nodes)
        self.env = {**TEST_JVM, **os.environ, "KAFKA_NODES": str(nodes), "KAFKA_RUN_DIR": str(self.run_dir),
                    "KAFKA_CLUSTER_PORT": str(self.base_port), "KAFKA_START_TIMEOUT": str(start_timeout),
                    # one node is kafka.sh's single-node mode, which listens on KAFKA_PORT
                    "KAFKA_PORT": str(self.base_port), "KAFKA_CONTROLLER_PORT": str(self.base_port + 1)}
        self.start_timeout = start_timeout

    # --- addresses ---------------------------------------------------------------------------------
    def port(self, node: int) -> int:
        return self.base_port + 2 * (node - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port(n)}" for n in self.all_nodes)

    @property
    def all_nodes(self) -> range:
        return range(1, self.nodes + 1)

    def node_dir(self, node: int) -> Path:
        return self.run_dir / f"node{node}"

    # --- control, through the script ---------------------------------------------------------------
    def script(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([str(KAFKA_SH), *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout or self.start_timeout + 60)
        if check and r.returncode != 0:
            raise RuntimeError(f"kafka.sh {' '.join(args)} exited {r.returncode}\n{r.stdout}{r.stderr}"
                               f"{self.log_tails()}")
        return r

    def start(self, node: int | None = None) -> None:
        """Start one node, or every node that does not run; returns when they answer."""
        self.script("start", *([str(node)] if node else []))

    def stop(self, node: int | None = None) -> str:
        """SIGTERM (a clean shutdown) to one node or all; returns the script's report."""
        return self.script("stop", *([str(node)] if node else [])).stdout

    def kill(self, node: int) -> None:
        """kill -9: a crash."""
        self.script("kill", str(node))

    def answers(self, node: int) -> bool:
        return self.script("status", str(node), check=False).returncode == 0

    def pid(self, node: int) -> int | None:
        try:
            return int((self.node_dir(node) / "kafka.pid").read_text())
        except (OSError, ValueError):
            return None

    # --- metadata ----------------------------------------------------------------------------------
    def partition(self, topic: str, partition: int = 0):
        """PartitionMetadata (leader, replicas, isrs) as the cluster reports it now."""
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_LOG})
        md = admin.list_topics(topic, timeout=20).topics[topic]
        if md.error is not None:
            raise RuntimeError(f"{topic}: {md.error}")
        return md.partitions[partition]

    def leader(self, topic: str, partition: int = 0) -> int:
        return self.partition(topic, partition).leader

    def wait_in_isr(self, node: int, topics: list[str], timeout: float = 60.0) -> float:
        """Waits until `node` is an in-sync replica of every partition of `topics`; returns the seconds."""
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_LOG})
        start = time.monotonic()
        missing = topics
        while time.monotonic() - start < timeout:
            md = admin.list_topics(timeout=20).topics
            missing = [f"{t}-{p}" for t in topics for p, part in md[t].partitions.items()
                       if node not in part.isrs]
            if not missing:
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"node {node} not back in the ISR of {missing} after {timeout} s")

    # --- teardown ----------------------------------------------------------------------------------
    def log_tails(self, lines: int = 15) -> str:
        out = []
        for n in self.all_nodes:
            for name in ("stdout.log", "server.log"):
                path = self.node_dir(n) / name
                if path.exists():
                    tail = path.read_text(errors="replace").splitlines()[-lines:]
                    out.append(f"\n--- node {n} {name} ---\n" + "\n".join(tail))
        return "".join(out)

    def close(self) -> None:
        """kill -9 every node (a test cluster needs no clean shutdown) and delete the run dir; works
        whatever state a failed test left it in."""
        try:
            self.script("kill", check=False, timeout=60)
            self.script("clean", check=False, timeout=60)
        finally:
            for n in self.all_nodes:   # the script failed or timed out: signal only our own brokers
                pid = self.pid(n)
                if pid and self._is_our_broker(pid, n):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _is_our_broker(self, pid: int, node: int) -> bool:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in args and str(self.node_dir(node) / "server.properties").encode() in args

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory):
    """A running 3-node cluster (RF 3, min ISR 2) for one test module; tests that stop or kill nodes
    start them again before they end (`kafka_cluster.start()` starts whatever is down)."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster") / "run", nodes=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
