"""GET /api/repos/<owner>/<name>: one repository's card, and GET /api/repos?prefix=...: completions,
both asked live of star_leaders' workers.

The workers answer queries of their state on --query-port (README "Queries"); any one of them answers
for any repository (it forwards to the owner), so the dashboard asks the first of `--query` that
answers. 503 while partitions move (the workers' Retry-After is passed on). Each browser address may
make RATE_PER_S requests a second here (a card or a completion is 32-33 queries of the workers, whose
own limit sees the dashboard as one client)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from stack_contract import COMPLETE_PREFIX_MAX, STATE_NAME, valid_repo_name
from stack_contract.repo_card import completions, repo_card

TIMEOUT_S = 10.0
RATE_PER_S = 10.0            # per browser address: a card polled every 2 s and typing leave room
BURST_S = 2                  # a browser may spend two seconds' worth of its rate at once


class Unavailable(Exception):
    """No worker could answer now: retry."""


class RateLimit:
    """Requests per browser address: `rate` a second, in bursts of up to BURST_S seconds' worth (the `limits` library)."""

    def __init__(self, rate: float):
        self.item = RateLimitItemPerSecond(max(1, round(BURST_S * rate)), BURST_S)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())     # its keys expire: bounded

    def allow(self, client: str) -> bool:
        return self.limiter.hit(self.item, client)


def valid_prefix(prefix) -> bool:
    return (type(prefix) is str and 0 < len(prefix) <= COMPLETE_PREFIX_MAX and prefix.isprintable()
            and " " not in prefix)


class Repos:
    def __init__(self, query_addresses: list[str], rate_per_s: float = RATE_PER_S):
        self.addresses = query_addresses
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="repo-queries")
        self.limit = RateLimit(rate_per_s)

    def card(self, repo: str, client: str = "?"):
        """(status, body): 400 for a malformed name, 429 over the client's rate, 503 while no worker can
        answer, else 200 and the card."""
        if not valid_repo_name(repo):
            return 400, {"error": "a repository is owner/name"}
        return self._first(client, lambda ask: repo_card(ask, repo, self.pool.map))

    def complete(self, prefix: str, client: str = "?"):
        """(status, body): 200 and {"prefix", "repos": [{"repo", "stars"}, ...]}, or 400 / 429 / 503."""
        if not valid_prefix(prefix):
            return 400, {"error": f"a prefix is 1 to {COMPLETE_PREFIX_MAX} printable characters, no spaces"}
        return self._first(client, lambda ask: {"prefix": prefix, "repos": completions(ask, prefix, self.pool.map)})

    def _first(self, client, build):
        if not self.limit.allow(client):
            return 429, {"error": "too many lookups, slow down"}
        if not self.addresses:
            return 503, {"error": "no query address configured (--query)"}
        for address in self.addresses:
            try:
                return 200, build(lambda m, a, address=address: self._ask(address, m, a))
            except Unavailable:
                continue
        return 503, {"error": "the workers are moving partitions, retry"}

    def _ask(self, address, method, arg):
        url = (f"http://{address}/query/{STATE_NAME}/{method}?arg=" + urllib.parse.quote(arg, safe=""))
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
                return json.loads(r.read())
        except (OSError, ValueError) as e:       # HTTPError (503, 429) included
            raise Unavailable(str(e)) from e
