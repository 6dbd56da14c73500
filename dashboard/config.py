"""The one place for the dashboard's defaults.

Precedence: command-line flag > environment variable > default below.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, fields

import stack_contract
from stack_contract.metrics import metrics_topic

from .leaders import MAX_PARTITIONS

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_TOPIC = stack_contract.LEADERBOARD_TOPIC      # what star_leaders writes (transactionally)
DEFAULT_SOURCE_TOPIC = stack_contract.SOURCE_TOPIC    # what star_leaders reads
DEFAULT_GROUP = stack_contract.APP_NAME               # star_leaders' consumer group on the source topic
DEFAULT_METRICS_TOPIC = metrics_topic(stack_contract.APP_NAME)   # where star_leaders' workers publish
DEFAULT_PARTITIONS = stack_contract.PARTITION_COUNT   # star_leaders' state partitions: the valid record ids
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_HEALTH_INTERVAL = 1.5          # seconds between health samples / SSE health pushes
DEFAULT_KAFKA_TIMEOUT = 5.0            # seconds any one Kafka call may take before it counts as failed
DEFAULT_MAX_STREAMS = 64               # concurrent /stream clients (one server thread each)
DEFAULT_MAX_STREAMS_PER_CLIENT = 8     # ... from one client address (a browser tab holds one)
DEFAULT_MAX_CONNECTIONS = 256          # open TCP connections (one server thread each)
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 32  # ... from one address: browsers open at most 6 per host
DEFAULT_CONNECTION_TIMEOUT = 10.0      # seconds a connection may send nothing / not read, and the
                                       # longest a request's line and headers may take to arrive
# Host headers a loopback-bound dashboard answers (DNS rebinding: a page on evil.example whose name
# resolves to 127.0.0.1 must not read the dashboard).  The bound address itself is added.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

# flag name -> (environment variable, type)
ENV = {
    "kafka": ("DASHBOARD_KAFKA", str),
    "topic": ("DASHBOARD_TOPIC", str),
    "source_topic": ("DASHBOARD_SOURCE_TOPIC", str),
    "group": ("DASHBOARD_GROUP", str),
    "metrics_topic": ("DASHBOARD_METRICS_TOPIC", str),
    "partitions": ("DASHBOARD_PARTITIONS", int),
    "expected_workers": ("DASHBOARD_EXPECTED_WORKERS", int),
    "host": ("DASHBOARD_HOST", str),
    "port": ("DASHBOARD_PORT", int),
    "allowed_hosts": ("DASHBOARD_ALLOWED_HOSTS", str),
    "health_interval": ("DASHBOARD_HEALTH_INTERVAL", float),
    "kafka_timeout": ("DASHBOARD_KAFKA_TIMEOUT", float),
    "max_streams": ("DASHBOARD_MAX_STREAMS", int),
    "max_streams_per_client": ("DASHBOARD_MAX_STREAMS_PER_CLIENT", int),
    "max_connections": ("DASHBOARD_MAX_CONNECTIONS", int),
    "max_connections_per_client": ("DASHBOARD_MAX_CONNECTIONS_PER_CLIENT", int),
    "connection_timeout": ("DASHBOARD_CONNECTION_TIMEOUT", float),
    "query": ("DASHBOARD_QUERY", str),
}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    kafka: str = DEFAULT_KAFKA
    topic: str = DEFAULT_TOPIC
    source_topic: str = DEFAULT_SOURCE_TOPIC
    group: str = DEFAULT_GROUP
    metrics_topic: str = DEFAULT_METRICS_TOPIC
    partitions: int = DEFAULT_PARTITIONS
    expected_workers: int | None = None     # workers the group should have (None: not known)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Comma-separated Host names served ("*": any).  Empty: LOOPBACK_HOSTS when bound to loopback,
    # any otherwise (behind a proxy or in a container, name the public host here).
    allowed_hosts: str = ""
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    kafka_timeout: float = DEFAULT_KAFKA_TIMEOUT
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_client: int = DEFAULT_MAX_STREAMS_PER_CLIENT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT
    query: str = ""                 # comma-separated HOST:PORT of workers' --query-port (empty: no /api/repos)

    @classmethod
    def from_env(cls, environ: dict | None = None, **overrides) -> "Config":
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var, typ = ENV[f.name]
            if environ.get(var):
                values[f.name] = typ(environ[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def host_names(self) -> frozenset[str] | None:
        """The Host names (lower case, no port) this dashboard serves; None: any."""
        names = [n.strip().lower() for n in self.allowed_hosts.split(",") if n.strip()]
        if "*" in names:
            return None
        if not names:
            if not is_loopback(self.host):
                return None
            names = list(LOOPBACK_HOSTS)
            bound = self.host.lower()
            names.append(f"[{bound}]" if ":" in bound and not bound.startswith("[") else bound)
        return frozenset(names)


def parse_args(argv=None, environ: dict | None = None) -> Config:
    base = Config.from_env(environ)
    p = argparse.ArgumentParser(
        prog="star-leaders-dashboard",
        description="Live web dashboard of the GitHub star leaders computed by star_leaders.")
    p.add_argument("--kafka", default=base.kafka, metavar="HOST:PORT",
                   help=f"Kafka bootstrap servers (env DASHBOARD_KAFKA; default {DEFAULT_KAFKA})")
    p.add_argument("--topic", default=base.topic,
                   help=f"leaderboard topic to display (env DASHBOARD_TOPIC; default {DEFAULT_TOPIC})")
    p.add_argument("--source-topic", default=base.source_topic,
                   help=f"topic star_leaders consumes, for events/s in and lag "
                        f"(env DASHBOARD_SOURCE_TOPIC; default {DEFAULT_SOURCE_TOPIC})")
    p.add_argument("--group", default=base.group,
                   help=f"star_leaders' consumer group, for lag and workers "
                        f"(env DASHBOARD_GROUP; default {DEFAULT_GROUP})")
    p.add_argument("--metrics-topic", default=base.metrics_topic,
                   help=f"topic the workers publish metrics snapshots to, for the pipeline page "
                        f"(env DASHBOARD_METRICS_TOPIC; default {DEFAULT_METRICS_TOPIC})")
    p.add_argument("--partitions", type=int, default=base.partitions,
                   help=f"star_leaders' state partitions: records for any other partition id are refused "
                        f"(env DASHBOARD_PARTITIONS; default {DEFAULT_PARTITIONS})")
    p.add_argument("--expected-workers", type=int, default=base.expected_workers, metavar="N",
                   help="workers the group should have; fewer are shown as a warning "
                        "(env DASHBOARD_EXPECTED_WORKERS; default: not known, only the count is shown)")
    p.add_argument("--host", default=base.host,
                   help=f"address to bind (env DASHBOARD_HOST; default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=base.port,
                   help=f"HTTP port, 0 = any free port (env DASHBOARD_PORT; default {DEFAULT_PORT})")
    p.add_argument("--allowed-hosts", default=base.allowed_hosts, metavar="NAMES",
                   help="comma-separated Host header names to serve, '*' for any; others get 421 "
                        "(env DASHBOARD_ALLOWED_HOSTS; default: localhost, 127.0.0.1, [::1] and the bound "
                        "address when bound to loopback, any otherwise)")
    p.add_argument("--query", default=base.query, metavar="HOST:PORT,...",
                   help="star_leaders workers' query ports, for /api/repos/<owner>/<name> (default: none)")
    p.add_argument("--health-interval", type=float, default=base.health_interval, metavar="SECONDS",
                   help=f"seconds between health samples (env DASHBOARD_HEALTH_INTERVAL; "
                        f"default {DEFAULT_HEALTH_INTERVAL})")
    p.add_argument("--kafka-timeout", type=float, default=base.kafka_timeout, metavar="SECONDS",
                   help=f"longest any one Kafka request may take (env DASHBOARD_KAFKA_TIMEOUT; "
                        f"default {DEFAULT_KAFKA_TIMEOUT})")
    p.add_argument("--max-streams", type=int, default=base.max_streams,
                   help=f"max concurrent live-update clients (env DASHBOARD_MAX_STREAMS; "
                        f"default {DEFAULT_MAX_STREAMS})")
    p.add_argument("--max-streams-per-client", type=int, default=base.max_streams_per_client, metavar="N",
                   help=f"... from one client address (env DASHBOARD_MAX_STREAMS_PER_CLIENT; "
                        f"default {DEFAULT_MAX_STREAMS_PER_CLIENT})")
    p.add_argument("--max-connections", type=int, default=base.max_connections, metavar="N",
                   help=f"max open connections; more are answered 503 and closed "
                        f"(env DASHBOARD_MAX_CONNECTIONS; default {DEFAULT_MAX_CONNECTIONS})")
    p.add_argument("--max-connections-per-client", type=int, default=base.max_connections_per_client,
                   metavar="N", help=f"... from one client address (env DASHBOARD_MAX_CONNECTIONS_PER_CLIENT; "
                                     f"default {DEFAULT_MAX_CONNECTIONS_PER_CLIENT})")
    p.add_argument("--connection-timeout", type=float, default=base.connection_timeout, metavar="SECONDS",
                   help=f"a connection that sends nothing (or does not read) this long is closed, and a "
                        f"request's head must arrive within it (env DASHBOARD_CONNECTION_TIMEOUT; "
                        f"default {DEFAULT_CONNECTION_TIMEOUT})")
    a = p.parse_args(argv)
    for name in ("health_interval", "kafka_timeout", "connection_timeout"):
        if getattr(a, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("max_streams", "max_streams_per_client", "max_connections", "max_connections_per_client"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 1 <= a.partitions <= MAX_PARTITIONS:
        p.error(f"--partitions must be 1..{MAX_PARTITIONS}")
    if a.expected_workers is not None and a.expected_workers < 1:
        p.error("--expected-workers must be at least 1")
    return Config(**{f.name: getattr(a, f.name) for f in fields(Config)})
