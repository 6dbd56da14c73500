"""GH Archive hour names: `YYYY-MM-DD-H` with the hour NOT zero-padded (`2015-01-01-5`).

Hours are timezone-aware UTC datetimes on the hour.  Ordering is by time, never by name:
`2015-01-01-10` comes after `2015-01-01-9`.
"""
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

HOUR = timedelta(hours=1)
SUFFIX = ".json.gz"
# Accepts "05" as well as "5" from people; file names GH Archive publishes are never padded.
_NAME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})-(\d{1,2})$")


def parse_hour(text: str) -> datetime:
    """`"2015-01-01-5"` -> 2015-01-01 05:00 UTC.  Raises ValueError with a readable message."""
    m = _NAME.match(text.strip())
    if not m:
        raise ValueError(f"not an archive hour {text!r}: expected YYYY-MM-DD-H, e.g. 2015-01-01-5")
    year, month, day, hour = (int(g) for g in m.groups())
    if hour > 23:
        raise ValueError(f"not an archive hour {text!r}: hour must be 0..23")
    try:
        return datetime(year, month, day, hour, tzinfo=timezone.utc)
    except ValueError as e:
        raise ValueError(f"not an archive hour {text!r}: {e}") from None


def as_hour(value) -> datetime:
    """A datetime (made UTC, truncated to the hour) or a `YYYY-MM-DD-H` string, as an hour."""
    if isinstance(value, str):
        return parse_hour(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def hour_name(hour: datetime) -> str:
    """2015-01-01 05:00 UTC -> `"2015-01-01-5"`."""
    return f"{hour:%Y-%m-%d}-{hour.hour}"


def file_name(hour: datetime) -> str:
    """2015-01-01 05:00 UTC -> `"2015-01-01-5.json.gz"`."""
    return hour_name(hour) + SUFFIX


def hour_of_file(path) -> datetime | None:
    """The hour a file name like `2015-01-01-5.json.gz` stands for, or None for any other name."""
    name = Path(path).name
    if not name.endswith(SUFFIX):
        return None
    try:
        return parse_hour(name[: -len(SUFFIX)])
    except ValueError:
        return None


def hour_range(start, hours: int) -> list[datetime]:
    """`hours` consecutive hours from `start`."""
    first = as_hour(start)
    return [first + i * HOUR for i in range(hours)]


def hours_between(start, end) -> list[datetime]:
    """Every hour from `start` to `end`, both included."""
    first, last = as_hour(start), as_hour(end)
    return hour_range(first, int((last - first) / HOUR) + 1) if last >= first else []


def ms(hour: datetime) -> int:
    """Milliseconds since the epoch, as Kafka timestamps are."""
    return int(hour.timestamp() * 1000)


def folder_hours(folder) -> list[tuple[datetime, Path]]:
    """The hour files in `folder` as (hour, path), in time order; other files are ignored."""
    found = []
    for path in Path(folder).iterdir():
        hour = hour_of_file(path)
        if hour is not None and path.is_file():
            found.append((hour, path))
    found.sort()
    return found
