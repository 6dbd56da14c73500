"""GET /api/repos/<owner>/<name>: one repository's card, asked live of star_leaders' workers.

The workers answer queries of their state on --query-port (README "Queries"); any one of them answers
for any repository (it forwards to the owner), so the dashboard asks the first of `--query` that
answers. 503 while partitions move (the workers' Retry-After is passed on)."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from stack_contract import STATE_NAME, valid_repo_name
from stack_contract.repo_card import repo_card

TIMEOUT_S = 10.0


class Unavailable(Exception):
    """No worker could answer now: retry."""


class Repos:
    def __init__(self, query_addresses: list[str]):
        self.addresses = query_addresses
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="repo-queries")

    def card(self, repo: str):
        """(status, body): 400 for a malformed name, 503 while no worker can answer, else 200 and the card."""
        if not valid_repo_name(repo):
            return 400, {"error": "a repository is owner/name"}
        if not self.addresses:
            return 503, {"error": "no query address configured (--query)"}
        for address in self.addresses:
            try:
                return 200, repo_card(lambda m, a, address=address: self._ask(address, m, a), repo, self.pool.map)
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
