"""What comes in: GH Archive records decoded (`decoder`) and trimmed to `RepoEvent`s
(`filter_interesting_events`), the first two steps of the pipeline in app.py.

Input is the public archive, i.e. untrusted, and the decoder holds it to the same definition of a
valid event as the archive streamer (stack_contract.valid_event), with `absolute_bounds` for
created_at (it has no hour file): a record that is not a JSON object raises in the decoder (the
runtime dead-letters it, with the reason); an object without a usable created_at or repository, and
an event with odd fields, is dropped, never raised.  Lone surrogate escapes are read as U+FFFD."""
from typing import NamedTuple

import wallaroo
from stack_contract.valid_event import NOT_AN_OBJECT_KINDS, Valid, absolute_bounds, created_at_ms, validate

from . import config

_WATCH, _FORK, _PULL = config.WATCH_EVENT, config.FORK_EVENT, config.PULL_REQUEST_EVENT


# --------------------------------------------------------------------------------------- decoding

@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(data):
    """One record value (one GH Archive line) -> the event as a dict, or None if it can't be interesting.

    An interesting event contains its type name in its raw bytes, so a record with none of the three
    names (see `may_be_interesting`) is dropped without parsing it: it is only checked to start with
    "{" and end with "}" (so garbage and truncated lines are still dead-lettered).  Everything else is
    validated (`stack_contract.valid_event.validate`): a record that is not a JSON object raises
    InvalidRecord, and the runtime dead-letters it; an object that is not a valid event is None."""
    if type(data) is not bytes:
        if data is None:
            raise InvalidRecord("empty record value (tombstone)")
        data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if may_be_interesting(data):
        verdict = validate(data, *absolute_bounds())
        if type(verdict) is Valid:
            return verdict.event
        if verdict.kind in NOT_AN_OBJECT_KINDS:
            raise InvalidRecord(f"{verdict.kind}{': ' if verdict.detail else ''}{verdict.detail}")
        return None
    if data and data[0] == 123 and data[-1] == 125:     # b"{" ... b"}": indexing is cheaper than startswith
        return None
    if not (data.startswith(b"{") and data.endswith((b"}", b"}\n", b"}\r\n"))):
        stripped = data.strip()
        if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
            raise InvalidRecord("record is not a JSON object")
    return None


class InvalidRecord(ValueError):
    """A source record that is not a JSON object (the runtime dead-letters it with this message)."""


def may_be_interesting(data):
    """False only if `data` cannot hold a star, fork or pull request: none of b'WatchEvent"',
    b'ForkEvent"', b'PullRequestEvent"' occurs (a JSON string value is followed by its quote).

    Each name ends in b'Event"'; its "E" is looked for with memchr (one byte: several times faster
    than a search for b'Event"', whose last byte, a quote, JSON repeats everywhere), which on archive
    lines finds a few candidates.  A record with many other "E"s (text, or one made to be slow) goes
    on with the C search for b'Event"' after _E_CANDIDATES of them: the answer is the same either way.
    (A type name written with JSON \\u escapes is not seen; the archive never writes one.)"""
    find = data.find
    i = find(69)                                    # b"E"
    left = _E_CANDIDATES
    while i >= 0:
        # (slices compared, not startswith/endswith: their argument parsing cost more than the test)
        if data[i:i + 6] == b'Event"':
            c = data[i - 1]                         # the byte before: which name can end here
            if ((c == 104 and data[i - 5:i] == b"Watch") or (c == 107 and data[i - 4:i] == b"Fork")
                    or (c == 116 and data[i - 11:i] == b"PullRequest")):
                return True
            i = find(69, i + 6)
        else:
            i = find(69, i + 1)
        left -= 1
        if not left:
            return _named_anywhere(data, i)
    return False


_E_CANDIDATES = 16


def _named_anywhere(data, start):
    """may_be_interesting from `start` on (or False if start < 0), by the C search for b'Event"'."""
    i = data.find(b'Event"', start) if start >= 0 else -1
    while i >= 0:
        if data.endswith(b"Watch", 0, i) or data.endswith(b"Fork", 0, i) or data.endswith(b"PullRequest", 0, i):
            return True
        i = data.find(b'Event"', i + 6)
    return False


# -------------------------------------------------------------------------------------- filtering

class RepoEvent(NamedTuple):
    """What crosses to the state step: only what the state needs.

    Stars carry type, id, repo and created_at; forks and pull requests add what the dashboard shows."""
    type: str                 # WatchEvent | ForkEvent | PullRequestEvent
    id: str                   # the archive's event id (the archive repeats some events)
    repo: str                 # "owner/name"
    created_at: int           # seconds since the epoch, UTC
    actor: str | None = None  # login (forks and pull requests)
    url: str | None = None    # pull request html_url / forkee html_url
    title: str | None = None  # pull request title, truncated to TITLE_MAX_LENGTH
    number: int | None = None  # pull request number
    action: str | None = None  # pull request action: opened, closed, ...
    name: str | None = None   # forkee full_name


@wallaroo.computation(name="filter interesting events")
def filter_interesting_events(event):
    """Keep stars, forks and pull requests with the fields the state needs; drop everything else.

    Odd input (missing repo, bad created_at, non-string id, ...) is dropped here, never raised."""
    if type(event) is not dict:
        return None
    kind = event.get("type")
    if kind == _WATCH:              # (the constants themselves, so the state can compare with `is`)
        kind = _WATCH
    elif kind == _FORK:
        kind = _FORK
    elif kind == _PULL:
        kind = _PULL
    else:
        return None
    eid = event.get("id")
    if type(eid) is not str or not 0 < len(eid) <= config.ID_MAX_LENGTH:
        return None
    repo = event.get("repo")
    name = repo.get("name") if type(repo) is dict else None
    if type(name) is not str or not 0 < len(name) <= config.REPO_NAME_MAX_LENGTH:
        return None
    created_at = epoch_seconds(event.get("created_at"))
    if created_at is None:
        return None
    if kind is _WATCH:
        return RepoEvent(kind, eid, name, created_at)

    actor = event.get("actor")
    login = _text(actor.get("login"), config.ACTOR_MAX_LENGTH) if type(actor) is dict else None
    payload = event.get("payload")
    if type(payload) is not dict:
        payload = {}
    if kind is _FORK:
        forkee = payload.get("forkee")
        if type(forkee) is not dict:
            forkee = {}
        return RepoEvent(kind, eid, name, created_at, login,
                         url=_text(forkee.get("html_url"), config.URL_MAX_LENGTH),
                         name=_text(forkee.get("full_name"), config.FORK_NAME_MAX_LENGTH))
    pr = payload.get("pull_request")
    if type(pr) is not dict:
        pr = {}
    number = payload.get("number")
    if type(number) is not int or not 0 <= number < 1 << 53:
        number = None
    return RepoEvent(kind, eid, name, created_at, login,
                     url=_text(pr.get("html_url"), config.URL_MAX_LENGTH),
                     title=_text(pr.get("title"), config.TITLE_MAX_LENGTH), number=number,
                     action=_text(payload.get("action"), config.ACTION_MAX_LENGTH))


def epoch_seconds(created_at):
    """ISO-8601 text -> whole seconds since the epoch (UTC; naive times are UTC), or None if unusable."""
    ms = created_at_ms(created_at)
    return None if ms is None else ms // 1000


def _text(value, limit):
    """A display string, truncated to `limit` characters (ending in an ellipsis); None if not a string."""
    if type(value) is not str:
        return None
    return value if len(value) <= limit else value[:limit - 1] + config.ELLIPSIS
