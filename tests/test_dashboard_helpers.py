"""Shared helpers for the dashboard tests (no tests here): record builders, a transactional
producer, the app served on a free port, and a small server-sent-events reader."""
from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager

import orjson

HOURS = 24


def leader(repo: str, stars: int, hourly=None, events=None) -> dict:
    if hourly is None:
        hourly = [0] * (HOURS - 1) + [stars]
    return {"repo": repo, "stars": stars, "hourly": hourly, "recent_events": events or []}


def record(partition: int, window_end: str | None, leaders: list) -> bytes:
    return orjson.dumps({"partition": partition, "window_end": window_end, "leaders": leaders})


def expected_top(boards: dict[int, list[dict]], n: int = 10) -> list[dict]:
    """Independent statement of the ordering rule: stars desc, then repo in plain string order."""
    everyone = [ld for leaders in boards.values() for ld in leaders]
    return sorted(everyone, key=lambda ld: (-ld["stars"], ld["repo"]))[:n]


def produce_txn(bootstrap: str, topic: str, records: list[tuple[int, bytes]], *, abort: bool = False,
                kafka_partitions: int | None = None) -> None:
    """One Kafka transaction holding `records` = [(state partition, value)], key = partition id.

    With kafka_partitions, state partition p goes to Kafka partition p % kafka_partitions."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"dash-test-{uuid.uuid4().hex}",
                  "enable.idempotence": True, "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    for part, value in records:
        kw = {} if kafka_partitions is None else {"partition": part % kafka_partitions}
        p.produce(topic, key=str(part).encode(), value=value, **kw)
    p.flush(30)
    if abort:
        p.abort_transaction(30)
    else:
        p.commit_transaction(30)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers.get_content_type() == "application/json"
        return json.loads(r.read())


@contextmanager
def serve(config, app=None):
    """create_app(config) (or `app`, already started) on the dashboard's own server (dashboard.server),
    on a free port of 127.0.0.1, in this process; yields the base URL and the app (its server: app.server)."""
    from dataclasses import replace

    from dashboard.app import create_app
    from dashboard.server import make_server

    app = app or create_app(config)
    server = make_server(replace(config, host="127.0.0.1", port=0), app)
    app.server = server
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        app.extensions["dashboard"].stop()
        server.shutdown()
        server.server_close()


class SSE:
    """Minimal text/event-stream client: iterate events as (event, data, id) with a read timeout."""

    def __init__(self, base_url: str, path: str = "/stream", timeout: float = 30.0):
        host, port = base_url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.comments: list[str] = []
        self.retry: int | None = None

    def events(self):
        event, data, eid = "message", [], None
        while True:
            line = self.resp.readline()      # de-chunked (werkzeug streams with chunked encoding)
            if not line:
                return
            line = line.decode("utf-8").rstrip("\r\n")
            if line == "":
                if data:
                    yield event, "\n".join(data), eid
                event, data, eid = "message", [], None
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    eid = value
                elif field == "retry":
                    self.retry = int(value)

    def next_leaders(self, predicate=lambda doc: True, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        for event, data, _ in self.events():
            if event == "leaders":
                doc = json.loads(data)
                if predicate(doc):
                    return doc
            if time.monotonic() > deadline:
                break
        raise AssertionError("no matching leaders event on the stream")

    def close(self):
        self.resp.close()      # the response holds its own reference to the socket
        self.conn.close()


# ---------- realistic data for the browser test and screenshots ----------

REPOS = [
    "FreeCodeCamp/FreeCodeCamp", "facebook/react", "sindresorhus/awesome", "twbs/bootstrap",
    "vinta/awesome-python", "getify/You-Dont-Know-JS", "angular/angular.js", "docker/docker",
    "airbnb/javascript", "nodejs/node", "jlevy/the-art-of-command-line", "golang/go",
    "torvalds/linux", "d3/d3", "Microsoft/vscode", "apple/swift",
]
ACTORS = ["octocat", "mojombo", "defunkt", "sebmarkbage", "sindresorhus", "mdo", "fat", "tj",
          "substack", "isaacs", "jlord", "holman", "paulirish", "addyosmani", "jashkenas"]
TITLES = ["Fix typo in README", "Add Chinese translation", "Update dependencies to latest",
          "Support keyboard navigation in dropdowns", "Document the build process",
          "Improve error message when config is missing", "Remove deprecated API usage",
          "Add tests for edge cases in parser"]


def hourly_shape(rng: random.Random, total: int) -> list[int]:
    """24 hourly counts summing to `total`, with a daily rhythm and a bump: looks like real data."""
    import math
    peak = rng.randrange(HOURS)
    w = [max(0.05, 0.6 + 0.4 * math.sin((h + rng.random() * 3) / 24 * 2 * math.pi)
             + 2.2 * math.exp(-((h - peak) ** 2) / (2 * rng.uniform(1.5, 4) ** 2))
             + rng.random() * 0.3) for h in range(HOURS)]
    s = sum(w)
    vals = [int(total * x / s) for x in w]
    vals[peak] += total - sum(vals)
    return vals


def recent_events(rng: random.Random, repo: str, window_end: str, n: int = 3) -> list[dict]:
    """Up to n forks/PRs, newest first, all at or before window_end."""
    from datetime import datetime, timedelta
    at = datetime.fromisoformat(window_end)
    out = []
    for _ in range(n):
        at -= timedelta(seconds=rng.randrange(20, 25 * 60))
        created = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        actor = rng.choice(ACTORS)
        if rng.random() < 0.5:
            name = f"{actor}/{repo.split('/')[1]}"
            out.append({"type": "ForkEvent", "actor": actor, "created_at": created,
                        "url": f"https://github.com/{name}", "name": name})
        else:
            num = rng.randrange(100, 4000)
            out.append({"type": "PullRequestEvent", "actor": actor, "created_at": created,
                        "url": f"https://github.com/{repo}/pull/{num}", "title": rng.choice(TITLES),
                        "number": num, "action": rng.choice(["opened", "opened", "closed"])})
    return out
