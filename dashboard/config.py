"""The one place for the dashboard's defaults.

Precedence: command-line flag > environment variable > default below.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

import stack_contract

DEFAULT_KAFKA = "127.0.0.1:9092"
DEFAULT_TOPIC = stack_contract.LEADERBOARD_TOPIC      # what star_leaders writes (transactionally)
DEFAULT_SOURCE_TOPIC = stack_contract.SOURCE_TOPIC    # what star_leaders reads
DEFAULT_GROUP = stack_contract.APP_NAME               # star_leaders' consumer group on the source topic
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_HEALTH_INTERVAL = 1.5          # seconds between health samples / SSE health pushes
DEFAULT_MAX_STREAMS = 64               # concurrent /stream clients (one server thread each)

# flag name -> (environment variable, type)
ENV = {
    "kafka": ("DASHBOARD_KAFKA", str),
    "topic": ("DASHBOARD_TOPIC", str),
    "source_topic": ("DASHBOARD_SOURCE_TOPIC", str),
    "group": ("DASHBOARD_GROUP", str),
    "host": ("DASHBOARD_HOST", str),
    "port": ("DASHBOARD_PORT", int),
    "health_interval": ("DASHBOARD_HEALTH_INTERVAL", float),
    "max_streams": ("DASHBOARD_MAX_STREAMS", int),
}


@dataclass(frozen=True)
class Config:
    kafka: str = DEFAULT_KAFKA
    topic: str = DEFAULT_TOPIC
    source_topic: str = DEFAULT_SOURCE_TOPIC
    group: str = DEFAULT_GROUP
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    max_streams: int = DEFAULT_MAX_STREAMS

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
                   help=f"star_leaders' consumer group, for lag (env DASHBOARD_GROUP; default {DEFAULT_GROUP})")
    p.add_argument("--host", default=base.host,
                   help=f"address to bind (env DASHBOARD_HOST; default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=base.port,
                   help=f"HTTP port, 0 = any free port (env DASHBOARD_PORT; default {DEFAULT_PORT})")
    p.add_argument("--health-interval", type=float, default=base.health_interval, metavar="SECONDS",
                   help=f"seconds between health samples (env DASHBOARD_HEALTH_INTERVAL; "
                        f"default {DEFAULT_HEALTH_INTERVAL})")
    p.add_argument("--max-streams", type=int, default=base.max_streams,
                   help=f"max concurrent live-update clients (env DASHBOARD_MAX_STREAMS; "
                        f"default {DEFAULT_MAX_STREAMS})")
    a = p.parse_args(argv)
    if a.health_interval <= 0:
        p.error("--health-interval must be positive")
    if a.max_streams < 1:
        p.error("--max-streams must be at least 1")
    return Config(kafka=a.kafka, topic=a.topic, source_topic=a.source_topic, group=a.group,
                  host=a.host, port=a.port, health_interval=a.health_interval, max_streams=a.max_streams)
