"""Hour files -> events, skipping and counting whatever is not a valid event (stack_contract.valid_event).

An event is `Event(ts_ms, repo, line)`: its `created_at` in epoch milliseconds, its `repo.name` (a lone
surrogate escape read as U+FFFD), and the original line bytes (without the newline, and without the
carriage return of a CRLF file), which is what goes to Kafka.
"""
import logging
import zlib

from zlib_ng import zlib_ng
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from stack_contract import valid_event
from stack_contract.valid_event import Invalid, created_at_ms  # noqa: F401  (created_at_ms: API)

from . import config, hours as hours_mod

log = logging.getLogger("archive_streamer")

# Kinds of skipped input, in the order the summary prints them: why a line is not a valid event
# (valid_event.KINDS), then what only a file reader sees.
SKIP_KINDS = valid_event.KINDS + (
    "line_too_long",       # longer than config.MAX_LINE_BYTES; never held in memory whole
    "truncated_gzip",      # file ended mid-stream; the complete lines before were still read (per file)
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

    def skip(self, kind: str, path, lineno: int, detail: str = "", count: int = 1) -> None:
        """Counts `count` skipped lines of `kind`, the first at `path`:`lineno`."""
        self.skipped[kind] += count
        if kind not in self.examples:
            where = self.examples[kind] = f"{path}:{lineno}"
            log.warning("skipping %s at %s%s (further ones are only counted)",
                        kind.replace("_", " "), where, f": {detail}" if detail else "")

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class _Truncated(Exception):
    """The gzip stream ended before its end-of-stream marker."""


def _inflate(f) -> Iterator[bytes]:
    """The decompressed bytes of a (multi-member) gzip file, in pieces of at most
    config.READ_CHUNK_BYTES: a bomb is never inflated whole.  Raises zlib_ng.error for corrupt data
    and _Truncated at a cut; every piece before either was yielded.

    zlib-ng, not zlib: the same API and the same bytes out, in half the CPU (measured on the
    300,000-event day of benchmarks/end_to_end_day.py: 0.62 s instead of 1.18-1.30 s for its
    600 MB; inflating was a sixth of the streamer's time)."""
    out_max = config.READ_CHUNK_BYTES
    inflater, fed = zlib_ng.decompressobj(wbits=31), False
    while data := f.read(config.READ_INPUT_BYTES):
        while data:
            if not fed:
                data = data.lstrip(b"\x00")   # zero padding between members, as gzip.GzipFile allows
                if not data:
                    break
                fed = True
            piece = inflater.decompress(data, out_max)
            if piece:
                yield piece
            if inflater.eof:
                data = inflater.unused_data
                inflater, fed = zlib_ng.decompressobj(wbits=31), False
            else:
                data = inflater.unconsumed_tail
    if fed:
        while piece := inflater.decompress(b"", out_max):   # what the last input still holds
            yield piece
        if not inflater.eof:
            raise _Truncated("compressed file ended before the end-of-stream marker was reached")


def _line_batches(pieces: Iterator[bytes], max_line: int) -> Iterator[list]:
    """Lists of lines (bytes, no newline) from decompressed pieces; None stands for a line over
    `max_line` bytes, which is read past and never held whole.  The last line of a file without a
    final newline comes last; a cut file's incomplete last line is never yielded."""
    carry = b""
    skipping = False               # inside a line over max_line: drop everything to its newline
    for piece in pieces:
        if skipping:
            end = piece.find(b"\n")
            if end < 0:
                continue
            piece, skipping = piece[end + 1:], False
            yield [None]
        lines = piece.split(b"\n")
        if carry:                  # the line cut at the end of the last piece: joined to its rest only
            lines[0] = carry + lines[0]     # (not carry + piece: that copied each 1 MB piece once more)
        carry = lines.pop()
        if len(carry) > max_line:
            carry, skipping = b"", True
        if lines:
            yield lines
    if skipping:
        yield [None]
    elif carry:
        yield [carry]


def read_file(path, stats: ReadStats | None = None, *, max_line_bytes: int = config.MAX_LINE_BYTES,
              hour=None) -> Iterator[Event]:
    """The valid events of one `.json.gz` hour file, streaming; every other line is skipped into `stats`.

    created_at must lie within `valid_event.hour_bounds` of the file's hour: `hour` (a datetime or
    "YYYY-MM-DD-H"), else the one its name gives; a file not named by its hour is held to
    `valid_event.absolute_bounds` only.  A truncated or corrupt gzip ends the file early (counted
    once); every complete line before that point is still read.  Identical bad lines in a row (a
    newline bomb) cost one look each."""
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    stats.files += 1
    hour = hours_mod.as_hour(hour) if hour is not None else hours_mod.hour_of_file(path)
    lo_ms, hi_ms = (valid_event.hour_bounds(hours_mod.ms(hour)) if hour is not None
                    else valid_event.absolute_bounds())
    validate, skip, skipped = valid_event.validate, stats.skip, stats.skipped
    lineno = 0
    # Runs of blank lines and of one bad line repeated (a newline bomb inflates to millions) are
    # counted when the run ends: a few tens of nanoseconds a line.
    blanks, first_blank = 0, 0
    last_bad, last_verdict, repeats = None, None, 0
    # Short bad lines seen before -> why; a bomb repeats a block of garbage (that is what makes it
    # compress), so its lines are looked up, not parsed again.
    known_bad: dict[bytes, Invalid] = {}
    try:
        with open(path, "rb") as f:
            for lines in _line_batches(_inflate(f), max_line_bytes):
                for line in lines:
                    lineno += 1
                    if not line:
                        if line is None:
                            skip("line_too_long", path, lineno, f"over {max_line_bytes} bytes")
                            continue
                        if not blanks:
                            first_blank = lineno
                        blanks += 1
                        continue
                    if line == last_bad:
                        repeats += 1
                        continue
                    if blanks:
                        skip("empty_line", path, first_blank, count=blanks)
                        blanks = 0
                    if repeats:
                        skip(last_verdict.kind, path, lineno, count=repeats)
                        repeats = 0
                    raw = line
                    if line[-1] == 13:                 # b"\r": a CRLF file
                        line = line[:-1]
                    if len(line) > max_line_bytes:
                        skip("line_too_long", path, lineno, f"over {max_line_bytes} bytes")
                        continue
                    short = len(raw) <= config.KNOWN_BAD_LINE_BYTES
                    if short and raw in known_bad:   # seen (so counted and logged) in this file
                        last_bad, last_verdict = raw, known_bad[raw]
                        skipped[last_verdict.kind] += 1
                        continue
                    verdict = validate(line, lo_ms, hi_ms)
                    if type(verdict) is Invalid:
                        last_bad, last_verdict = raw, verdict
                        if short:
                            if len(known_bad) >= config.KNOWN_BAD_LINES:
                                known_bad.clear()
                            known_bad[raw] = verdict
                        skip(verdict.kind, path, lineno, verdict.detail)
                        continue
                    stats.events += 1
                    yield Event(verdict.created_at_ms, verdict.repo, line)
    except _Truncated as e:
        skip("truncated_gzip", path, lineno + 1, f"{e}; the {lineno} lines before were read")
    except (zlib_ng.error, zlib.error, OSError) as e:
        skip("corrupt_gzip", path, lineno + 1, f"{e}; the {lineno} lines before were read")
    finally:
        if blanks:
            skip("empty_line", path, first_blank, count=blanks)
        if repeats:
            skip(last_verdict.kind, path, lineno, count=repeats)
        stats.lines += lineno


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
