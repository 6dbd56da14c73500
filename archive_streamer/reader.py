"""Hour files -> events, skipping and counting whatever is not one well-formed event per line.

An event is `Event(ts_ms, repo, line)`: its `created_at` in epoch milliseconds, its `repo.name`, and
the original line bytes (without the newline), which is what goes to Kafka unchanged.
"""
import gzip
import json
import logging
import zlib
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import orjson

from . import config, hours as hours_mod

log = logging.getLogger("archive_streamer")

# Kinds of skipped input, in the order the summary prints them.
SKIP_KINDS = (
    "invalid_json",        # not JSON at all (or not UTF-8)
    "nul_bytes",           # a raw NUL byte in the line
    "multiple_objects",    # two JSON values glued on one line: {...}{...}
    "not_an_object",       # valid JSON, but an array, string, number ...
    "empty_line",
    "line_too_long",       # longer than config.MAX_LINE_BYTES; never held in memory whole
    "missing_created_at",  # absent, null or not a string
    "bad_created_at",      # a string that is not a timestamp
    "missing_repo",        # no `repo` object
    "missing_repo_name",   # `repo` without a non-empty string `name`
    "truncated_gzip",      # file ended mid-stream; the lines before were still read (per file)
    "corrupt_gzip",        # not gzip, bad CRC or bad deflate data (per file)
)


class Event(NamedTuple):
    ts_ms: int      # created_at, epoch milliseconds
    repo: str       # repo.name, "owner/name"
    line: bytes     # the event's JSON, one line, no trailing newline


class ReadStats:
    """Counts of lines, events and skips; logs the first skip of each kind with its location."""

    def __init__(self):
        self.files = 0
        self.lines = 0
        self.events = 0
        self.skipped: Counter = Counter()
        self.examples: dict[str, str] = {}

    def skip(self, kind: str, where: str, detail: str = "") -> None:
        self.skipped[kind] += 1
        if kind not in self.examples:
            self.examples[kind] = where
            log.warning("skipping %s at %s%s (further ones are only counted)",
                        kind.replace("_", " "), where, f": {detail}" if detail else "")

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


_ts_cache: dict[str, int] = {}


def created_at_ms(text: str) -> int:
    """`"2015-01-01T12:00:01Z"` (or any ISO 8601 form the archive used) -> epoch milliseconds."""
    cached = _ts_cache.get(text)
    if cached is not None:
        return cached
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    value = int(dt.timestamp() * 1000)
    if len(_ts_cache) > 100_000:   # an hour has 3,600 distinct seconds; stay bounded anyway
        _ts_cache.clear()
    _ts_cache[text] = value
    return value


def _parse_fallback(line: bytes):
    """(obj, "", "") when the stdlib parser accepts `line`, else (None, kind, detail).

    The stdlib accepts lone UTF-16 surrogate escapes ("\\ud83d") that orjson rejects; real archive
    lines contain them, so such a line is a good event, not a skip."""
    text = line.decode("utf-8", errors="replace")
    try:
        return json.loads(text), "", ""
    except ValueError as e:
        detail = str(e)
    try:
        stripped = text.lstrip()
        _, end = json.JSONDecoder().raw_decode(stripped)
        if stripped[end:].lstrip()[:1] in ("{", "["):
            return None, "multiple_objects", "another JSON value follows the first"
    except ValueError:
        pass
    return None, "invalid_json", detail


def _lines(f, max_line: int) -> Iterator[bytes | None]:
    """Lines of a binary file without newline; None stands for a line over `max_line` bytes,
    which is read past in `max_line` pieces and never held whole."""
    readline = f.readline
    while True:
        line = readline(max_line + 1)
        if not line:
            return
        if line[-1:] == b"\n":
            yield line[:-1]
        elif len(line) <= max_line:
            yield line                 # the last line of a file without a final newline
        else:
            while line and line[-1:] != b"\n":
                line = readline(max_line + 1)
            yield None


def read_file(path, stats: ReadStats | None = None, *,
              max_line_bytes: int = config.MAX_LINE_BYTES) -> Iterator[Event]:
    """The events of one `.json.gz` hour file, streaming; bad lines are skipped into `stats`.

    A truncated or corrupt gzip ends the file early (counted once); every complete line before that
    point is still yielded."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    stats.files += 1
    lineno = 0
    loads, skip = orjson.loads, stats.skip
    try:
        with gzip.open(path, "rb") as f:
            for line in _lines(f, max_line_bytes):
                lineno += 1
                stats.lines += 1
                if line is None:
                    skip("line_too_long", f"{path}:{lineno}", f"over {max_line_bytes} bytes")
                    continue
                try:
                    obj = loads(line)
                except orjson.JSONDecodeError:
                    if not line.strip():
                        skip("empty_line", f"{path}:{lineno}")
                        continue
                    if b"\x00" in line:
                        skip("nul_bytes", f"{path}:{lineno}")
                        continue
                    obj, kind, detail = _parse_fallback(line)
                    if kind:
                        skip(kind, f"{path}:{lineno}", detail)
                        continue
                if type(obj) is not dict:
                    skip("not_an_object", f"{path}:{lineno}", type(obj).__name__)
                    continue
                created = obj.get("created_at")
                if type(created) is not str:
                    skip("missing_created_at", f"{path}:{lineno}")
                    continue
                try:
                    ts = created_at_ms(created)
                except ValueError:
                    skip("bad_created_at", f"{path}:{lineno}", repr(created[:40]))
                    continue
                repo = obj.get("repo")
                if type(repo) is not dict:
                    skip("missing_repo", f"{path}:{lineno}")
                    continue
                name = repo.get("name")
                if type(name) is not str or not name:
                    skip("missing_repo_name", f"{path}:{lineno}")
                    continue
                stats.events += 1
                yield Event(ts, name, line)
    except EOFError as e:
        skip("truncated_gzip", f"{path}:{lineno + 1}",
             f"{e}; the {lineno} lines before were read")
    except (zlib.error, gzip.BadGzipFile, OSError) as e:
        skip("corrupt_gzip", f"{path}:{lineno + 1}", f"{e}; the {lineno} lines before were read")


def read_files(paths: Iterable, stats: ReadStats | None = None) -> Iterator[Event]:
    """The events of several hour files, one after the other, in the order given."""
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        yield from read_file(path, stats)


def read_hours(folder, start=None, hours: int | None = None,
               stats: ReadStats | None = None) -> Iterator[Event]:
    """The events of the hour files in `folder`, in time order (not name order).

    `start` (datetime or "YYYY-MM-DD-H") and `hours` narrow the range; by default every file."""
    files = hours_mod.folder_hours(folder)
    if start is not None:
        first = hours_mod.as_hour(start)
        files = [(h, p) for h, p in files if h >= first]
    else:
        first = files[0][0] if files else None
    if hours is not None and first is not None:
        files = [(h, p) for h, p in files if h < first + hours * hours_mod.HOUR]
    return read_files((p for _, p in files), stats)
